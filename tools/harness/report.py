"""The run report: per scenario pass/fail, duration and recorded figures, and for a failure
the end of every unit's serial log. Written as report.md and report.json."""

import json
from pathlib import Path

_LOG_TAIL = 4000


class Report:
    def __init__(self, directory):
        self.directory = Path(directory)
        self.entries = []

    def add(self, item, rep):
        entry = {
            "scenario": item.nodeid,
            "outcome": rep.outcome,
            "duration_s": round(rep.duration, 2),
            "figures": dict(item.user_properties),
        }
        if rep.failed:
            entry["error"] = str(rep.longrepr)[-2000:]
            units = item.funcargs.get("boards") or []
            cluster = item.funcargs.get("cluster")
            logs = {u.id: u.log_path for u in units}
            if cluster:
                logs.update({b.device_id: b.dir / "serial.log" for b in cluster.boards})
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
            if e["outcome"] == "failed":
                lines += ["", f"## {e['scenario']}", "", "```", e["error"], "```"]
                for unit_id, log in e.get("board_logs", {}).items():
                    lines += ["", f"### {unit_id} serial log (end)", "", "```", log, "```"]
        (self.directory / "report.md").write_text("\n".join(lines) + "\n")


def _tail(path):
    if path is None or not Path(path).exists():
        return ""
    return Path(path).read_text(errors="replace")[-_LOG_TAIL:]
