"""The run report: per scenario pass/fail, duration, recorded figures and pictures, and for a
failure the end of every unit's serial log. Written as report.md and report.json; pictures go
to its pictures/ folder, shown in report.md under their scenario."""

import json
import re
import shutil
from pathlib import Path

_LOG_TAIL = 4000
_PICTURES = "pictures"


class Report:
    def __init__(self, directory):
        self.directory = Path(directory)
        self.entries = []
        self.pictures = {}  # scenario -> [{"name", "file"}], file relative to the directory

    def picture(self, scenario, name, png):
        """Keep a PNG (bytes) of `scenario` (a test's node id) for the report; returns its path."""
        folder = self.directory / _PICTURES
        if not self.pictures:  # this run's first picture: the last run's go
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        taken = self.pictures.setdefault(scenario, [])
        file = f"{_PICTURES}/{_slug(scenario)}-{len(taken) + 1:02d}-{_slug(name)}.png"
        (self.directory / file).write_bytes(png)
        taken.append({"name": name, "file": file})
        return self.directory / file

    def add(self, item, rep):
        entry = {
            "scenario": item.nodeid,
            "outcome": rep.outcome,
            "duration_s": round(rep.duration, 2),
            "figures": dict(item.user_properties),
            # the scenario's own list: a picture taken at teardown (of a failure) joins it
            "pictures": self.pictures.setdefault(item.nodeid, []),
        }
        if rep.failed:
            entry["error"] = str(rep.longrepr)[-2000:]
            units = item.funcargs.get("boards") or []
            cluster = item.funcargs.get("cluster")
            logs = {u.id: u.log_path for u in units}
            if cluster:
                logs.update({b.device_id: b.dir / "serial.log" for b in cluster.boards})
            tethered = item.funcargs.get("tethered")
            if tethered:
                logs.update(tethered.logs())
            entry["board_logs"] = {unit_id: _tail(path) for unit_id, path in logs.items()}
        self.entries.append(entry)

    def write(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "report.json").write_text(json.dumps(self.entries, indent=2))
        lines = [
            "# qrfleet harness run",
            "",
            "| scenario | outcome | s | figures |",
            "|---|---|---|---|",
        ]
        for e in self.entries:
            figures = ", ".join(f"{k}={v}" for k, v in e["figures"].items())
            lines.append(f"| {e['scenario']} | {e['outcome']} | {e['duration_s']} | {figures} |")
        for e in self.entries:
            failed = e["outcome"] == "failed"
            if not failed and not e["pictures"]:
                continue
            lines += ["", f"## {e['scenario']}"]
            if failed:
                lines += ["", "```", e["error"], "```"]
            for p in e["pictures"]:
                lines += ["", f"![{p['name']}]({p['file']})"]
            for unit_id, log in e.get("board_logs", {}).items():
                lines += ["", f"### {unit_id} serial log (end)", "", "```", log, "```"]
        (self.directory / "report.md").write_text("\n".join(lines) + "\n")


def _slug(text):
    """A file-name part: `tests/hil/test_x.py::test_y[a]` -> `test_x-test_y-a`."""
    text = text.rpartition("/")[2].replace(".py::", "-")
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:80]


def _tail(path):
    if path is None or not Path(path).exists():
        return ""
    return Path(path).read_text(errors="replace")[-_LOG_TAIL:]
