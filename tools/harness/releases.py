"""Releases and rollouts for the update scenarios: firmware built for the units' board, signed
with the session's release key (tools/harness/benches.py), published to the server, rolled out.

    releases.publish("0.2.0-waves")                   # this checkout's firmware
    releases.publish("0.2.0-broken", root=broken_tree(tmp_path / "broken"))
    rollout = releases.start("0.2.0-waves", steps=[50, 100])
    doc = releases.wait(rollout, "completed", timeout=120)
"""

import shutil
import time

from tools import release
from tools.firmware_check import firmware_sources
from tools.micropython import REPO_ROOT


def broken_tree(directory):
    """A copy of this checkout's firmware in `directory` whose app raises at import: the
    release a unit must roll back by itself."""
    for source in firmware_sources(REPO_ROOT):
        target = directory / source.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    (directory / "firmware" / "app.py").write_text('raise RuntimeError("broken release")\n')
    return directory


class Releases:
    def __init__(self, server, location, target, key, server_only_key):
        self.admin = server.admin()
        self.location = location
        self.target = target  # "virtual" or "esp32": what the units run
        self.key = key  # the units trust it
        self.server_only_key = server_only_key  # the server trusts it, the units do not
        self._started = []

    def build(self, version, root=REPO_ROOT, key=None):
        return release.build(version, key or self.key, target=self.target, root=root)

    def publish(self, version, root=REPO_ROOT, key=None):
        return self.admin.request("POST", "/api/releases", self.build(version, root, key))

    def start(self, version, steps=(100,), abort_after_failures=1):
        doc = self.admin.post(
            "/api/rollouts",
            {
                "version": version,
                "location_id": self.location,
                "steps": list(steps),
                "abort_after_failures": abort_after_failures,
            },
        )
        self._started.append(doc["rollout_id"])
        return doc["rollout_id"]

    def status(self, rollout_id):
        return self.admin.get(f"/api/rollouts/{rollout_id}")

    def wait(self, rollout_id, state, timeout, on_change=None):
        """The rollout once its state is `state`; on_change(doc) each time its wave or state
        moves on. Fails early when it ends in another state."""
        deadline = time.monotonic() + timeout
        seen = None
        while True:
            doc = self.status(rollout_id)
            if on_change and (doc["state"], doc["wave"]) != seen:
                seen = (doc["state"], doc["wave"])
                on_change(doc)
            if doc["state"] == state:
                return doc
            assert doc["state"] in ("running", "paused"), f"rollout ended {doc['state']}: {doc}"
            assert time.monotonic() < deadline, f"rollout not {state} in {timeout} s: {doc}"
            time.sleep(0.2)

    def close(self):
        """Rollouts the scenario left running or paused end: the next scenario starts its own."""
        for rollout_id in self._started:
            if self.status(rollout_id)["state"] in ("running", "paused"):
                self.admin.post(f"/api/rollouts/{rollout_id}/abort")
