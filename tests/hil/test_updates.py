"""Updates over the air (docs/updates.md): a release rolls out in waves while the units go on
selling; a bad release rolls its canary back and stops there; a release a unit must not trust,
or has no room for, is refused; a power cut while downloading or switching leaves a working
unit, and the download resumes."""

import json
import time

import pytest

from host.client import ApiClientError
from tests.hil.conftest import link, on_screen, pairing_text
from tools import release
from tools.harness.releases import broken_tree

SIX_UNITS = pytest.mark.parametrize("qrfleet_board", ["virtual:6"], indirect=True)
ONE_UNIT = pytest.mark.parametrize("qrfleet_board", ["virtual:1"], indirect=True)


def only(admin, units, location):
    """The location holds just these units (the session may have more): a rollout's scope."""
    mine = {u.id for u in units}
    aside = f"{location}-aside"
    admin.post("/api/locations", {"location_id": aside, "name": aside, "policy": "hybrid"})
    for d in admin.get("/api/devices")["devices"]:
        if d["location_id"] == location and d["device_id"] not in mine:
            admin.post("/api/devices", {"device_id": d["device_id"], "location_id": aside})


def devices(admin, units):
    found = {d["device_id"]: d for d in admin.get("/api/devices")["devices"]}
    return [found[u.id] for u in units]


def sell(agent, unit, payload):
    """A sale on the agent's own unit: verified, read off its screen, completed."""
    sale = agent.show(payload)
    assert sale["device_id"] == unit.id and sale["verified"]
    assert on_screen(unit, payload)
    agent.api.post(f"/api/txns/{sale['txn_id']}/complete")


def server_log(server):
    with open(server.log_path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def offers(server, device_id, version):
    return [
        e
        for e in server_log(server)
        if e.get("event") == "update_offered"
        and e.get("device_id") == device_id
        and e.get("version") == version
    ]


@SIX_UNITS
def test_a_release_rolls_out_in_waves_while_the_units_go_on_selling(
    boards, agents, releases, server, location, record
):
    admin = server.admin()
    only(admin, boards, location)
    version = "0.2.0-waves"
    releases.publish(version)
    rollout = releases.start(version, steps=[50, 100])
    waves = [[u["device_id"] for u in w["units"]] for w in releases.status(rollout)["waves"]]
    assert [len(w) for w in waves] == [1, 3, 2]  # the canary, half the rest (rounded up), all
    last = next(u for u in boards if u.id == waves[-1][-1])
    (till,) = agents(1)
    link(till, last)

    started = time.monotonic()
    sales = 0
    while (doc := releases.status(rollout))["state"] == "running":
        assert time.monotonic() - started < 180, f"the rollout did not end: {doc}"
        if doc["wave"] < len(waves):  # the till's own unit is in the last wave
            sell(till, last, f"sale {sales} in wave {doc['wave']}")
            sales += 1
        else:
            time.sleep(0.2)
    record("rollout_s", round(time.monotonic() - started, 1))
    record("sales_during_rollout", sales)
    assert doc["state"] == "completed", doc
    assert sales >= 2

    for d in devices(admin, boards):
        assert d["firmware"] == version, d
        assert d["update"]["state"] == "committed", d
    sell(till, last, "after the rollout")
    for unit in boards:
        if unit is not last:
            admin.post(f"/api/devices/{unit.id}/pairing")
            assert pairing_text(unit).startswith(f"qrfleet://pair?device={unit.id}&code=")


@SIX_UNITS
def test_a_release_that_fails_at_import_rolls_its_canary_back_and_the_rollout_stops(
    boards, agents, releases, server, location, tmp_path, record
):
    admin = server.admin()
    only(admin, boards, location)
    before = {d["device_id"]: d["firmware"] for d in devices(admin, boards)}
    version = "0.2.0-broken"
    releases.publish(version, root=broken_tree(tmp_path / "broken"))
    started = time.monotonic()
    rollout = releases.start(version, steps=[50, 100])

    doc = releases.wait(rollout, "paused", timeout=120)
    record("stopped_after_s", round(time.monotonic() - started, 1))
    assert doc["wave"] == 1
    (canary,) = doc["waves"][0]["units"]
    assert canary["state"] == "rolled_back"
    assert "failed at import: RuntimeError: broken release" in canary["reason"]
    assert "rolled_back" in doc["reason"] or canary["device_id"] in doc["reason"]
    for d in devices(admin, boards):
        assert d["firmware"] == before[d["device_id"]]  # the canary runs its old version
        if d["device_id"] != canary["device_id"]:
            assert not d["update"] or d["update"]["version"] != version  # never sent

    unit = next(u for u in boards if u.id == canary["device_id"])
    (till,) = agents(1)
    link(till, unit)
    sell(till, unit, "on the version it came back to")


@ONE_UNIT
def test_a_release_signed_with_another_key_is_refused_by_the_server_and_by_the_unit(
    boards, releases, agents, server, location, tmp_path
):
    admin = server.admin()
    only(admin, boards, location)
    stranger = tmp_path / "stranger"
    release.keygen(stranger)
    with pytest.raises(ApiClientError) as refused:
        releases.publish("0.2.0-stranger", key=stranger)
    assert refused.value.status == 400 and refused.value.code == "bad_release"

    # A key the server trusts and the unit does not: what a taken server could sign with.
    version = "0.2.0-server-only"
    releases.publish(version, key=releases.server_only_key)
    doc = releases.wait(releases.start(version), "paused", timeout=60)
    (unit_doc,) = doc["waves"][0]["units"]
    assert unit_doc["state"] == "failed"
    assert f"release {version} is not signed by a key this unit trusts" in unit_doc["reason"]
    (unit,) = boards
    (till,) = agents(1)
    link(till, unit)
    sell(till, unit, "still on its own version")


# Files of 64 KB until the filesystem is full: LittleFS keeps what a file's close commits, and
# a write that finds no room leaves the file uncommitted, so one big file would leave nothing.
_FILL = """
import os
block = bytes(4096)
n = 0
try:
    while True:
        with open("fill%d.bin" % n, "wb") as f:
            for _ in range(16):
                f.write(block)
        n += 1
except OSError:
    pass
print(sorted(os.listdir("ota")) if "ota" in os.listdir() else [])
"""
_EMPTY = """
import os
for name in os.listdir():
    if name.startswith("fill"):
        os.remove(name)
"""


def repl(unit, code):
    """Run `code` on the unit in the raw REPL (the application stopped first), then start the
    application again with a soft reset; returns what the code printed."""
    for _ in range(10):  # the application may be starting: Ctrl-C until the prompt shows
        unit.serial.write(b"\r\x03\x03")
        try:
            unit.serial.expect(">>> ", timeout=2)
            break
        except TimeoutError:
            pass
    unit.serial.write(b"\x01")
    unit.serial.expect("raw REPL; CTRL-B to exit\r\n>")
    unit.serial.write(code.encode() + b"\x04")
    out = unit.serial.expect("\x04>", timeout=120)[len("OK") :]
    unit.serial.write(b"\x02")
    unit.serial.expect(">>> ")
    unit.serial.write(b"\x04")
    unit.serial.expect("qrfleet: online at", timeout=30)
    return out


@ONE_UNIT
def test_a_unit_with_too_little_free_space_refuses_before_writing_anything(
    boards, releases, server, location
):
    admin = server.admin()
    only(admin, boards, location)
    (unit,) = boards
    staged = repl(unit, _FILL).split("\r\n")[0]  # what ota/ holds, now the filesystem is full
    version = "0.2.0-no-room"
    releases.publish(version)
    try:
        doc = releases.wait(releases.start(version), "paused", timeout=60)
        (unit_doc,) = doc["waves"][0]["units"]
        assert unit_doc["state"] == "failed"
        assert f"release {version} needs" in unit_doc["reason"]
        assert "bytes free and this unit has" in unit_doc["reason"]
        after = repl(
            unit, 'import os\nprint(sorted(os.listdir("ota")) if "ota" in os.listdir() else [])\n'
        )
        assert after.split("\r\n")[0] == staged, "the unit wrote for a release it had no room for"
    finally:
        repl(unit, _EMPTY)


@ONE_UNIT
def test_a_power_cut_while_downloading_or_switching_leaves_a_working_unit(
    boards, agents, releases, server, location, record
):
    admin = server.admin()
    only(admin, boards, location)
    (unit,) = boards
    before = devices(admin, boards)[0]["firmware"]
    version = "0.2.0-power-cuts"
    releases.publish(version)
    rollout = releases.start(version)

    # In update mode, some way into the download: the power goes.
    deadline = time.monotonic() + 60
    while not any(
        e["state"] == "downloading" and e["file"] for e in offers(server, unit.id, version)
    ):
        assert time.monotonic() < deadline, "the download never began"
        time.sleep(0.02)
    time.sleep(0.3)
    unit.power_cut()
    seen = len(offers(server, unit.id, version))
    while True:
        resumed = [e for e in offers(server, unit.id, version)[seen:] if e["state"] != "restarting"]
        if resumed:
            break
        assert time.monotonic() < deadline, "the download did not go on after the power came back"
        time.sleep(0.1)
    assert resumed[0]["file"] > 1 or resumed[0]["offset"] > 0, resumed[0]  # not from the start
    record("resumed_at_file", resumed[0]["file"])

    # Right after the switch: the power goes again.
    while devices(admin, boards)[0]["update"]["state"] != "installing":
        assert time.monotonic() < deadline, "the unit never switched"
        time.sleep(0.01)
    unit.power_cut(off_s=0.1)

    doc = releases.wait(rollout, "completed", timeout=90)
    assert doc["waves"][0]["units"][0]["state"] == "committed"
    (d,) = devices(admin, boards)
    assert d["firmware"] == version != before
    (till,) = agents(1)
    link(till, unit)
    sell(till, unit, "after two power cuts")
