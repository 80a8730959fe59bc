"""Units that lose power, all reconnect at once, or meet a rogue client, come back on their own."""

import random
import time

from tools.simdevice import SimulatedUnit


def online(admin, ids):
    devices = {d["device_id"]: d for d in admin.get("/api/devices")["devices"]}
    return all(devices[i]["status"] == "online" for i in ids)


def epochs(admin, ids):
    return {
        d["device_id"]: d["epoch"]
        for d in admin.get("/api/devices")["devices"]
        if d["device_id"] in ids
    }


def wait_online(admin, ids, timeout, after=None):
    """Seconds until every unit is online again, in a new session when `after` gives the
    epochs they had before."""
    started = time.monotonic()
    while (
        not online(admin, ids)
        or after
        and any(e is None or e <= after[i] for i, e in epochs(admin, ids).items())
    ):
        assert time.monotonic() - started < timeout, f"not back online within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - started


_REWRITE_CONFIG = (
    "from firmware import config\n"
    "c = config.load()\n"
    "for i in range(100000):\n"
    "    c['name'] = 'rewrite %d' % i\n"
    "    config.save(c)\n"
)


def test_power_cut_during_config_writes_never_leaves_a_unit_unbootable(boards, server, record):
    unit = boards[0]
    admin = server.admin()
    rng = random.Random(7)
    for cut in range(5):
        unit.serial.write(b"\r\x03\x03")  # stop the application, as a technician would
        unit.serial.expect(">>> ")
        unit.serial.write(b"\x01")
        unit.serial.expect("raw REPL; CTRL-B to exit\r\n>")
        unit.serial.write(_REWRITE_CONFIG.encode() + b"\x04")
        unit.serial.expect("OK")
        time.sleep(rng.uniform(0.05, 0.4))  # somewhere in the middle of a write
        before = epochs(admin, [unit.id])
        unit.power_cut()
        record(f"back_after_cut_{cut}_s", round(wait_online(admin, [unit.id], 30, after=before), 2))
    assert "not provisioned" not in unit.log_path.read_text(errors="replace")


def test_every_unit_reconnecting_at_once_is_back_and_serving(boards, agents, server, record):
    admin = server.admin()
    ids = [u.id for u in boards]
    before = epochs(admin, ids)
    for unit in boards:
        unit.power_off()
    for unit in boards:
        unit.power_on()
    took = wait_online(admin, ids, 60, after=before)
    record("all_back_online_s", round(took, 2))
    (till,) = agents(1)  # the location's pool: every unit is free
    shown = till.show("after the storm")
    assert shown["verified"] is True


def test_a_rogue_client_with_a_units_id_but_not_its_secret_changes_nothing(
    boards, agents, server, background, record
):
    admin = server.admin()
    real = boards[0]
    before = admin.get(f"/api/devices/{real.id}")
    rogue = SimulatedUnit(real.id, "0" * 64, [server.device_url])
    background.call(rogue.start)
    time.sleep(3)
    background.run(rogue.stop())
    after = admin.get(f"/api/devices/{real.id}")
    assert not rogue.shown and not rogue.online
    assert (after["status"], after["epoch"], after["server_id"]) == (
        before["status"],
        before["epoch"],
        before["server_id"],
    )
    (till,) = agents(1)
    assert till.show("still the real one")["device_id"] in {u.id for u in boards}
    record("rogue_sessions", 0)


def test_wifi_flapping_units_come_back_each_time_and_serve(boards, agents, server, record):
    admin = server.admin()
    unit = boards[0]
    (till,) = agents(1)
    for flap in range(3):
        before = epochs(admin, [unit.id])
        unit.wifi_down(2)
        took = wait_online(admin, [unit.id], 30, after=before)
        record(f"back_after_flap_{flap}_s", round(took, 2))
        shown = till.show(f"after flap {flap}")
        assert shown["verified"]
        till.api.post(f"/api/txns/{shown['txn_id']}/complete")


def test_an_agent_token_used_on_another_agents_unit_is_refused_logged_and_changes_nothing(
    boards, agents, server, record
):
    from host.client import ApiClientError
    from tests.hil.conftest import link

    owner, other = agents(2)
    unit = boards[0]
    link(owner, unit)
    admin = server.admin()
    audit_before = admin.get(f"/api/audit?device_id={unit.id}")["audit"]
    refused = 0
    for attempt in (
        lambda: other.api.delete(f"/api/agents/{owner.id}/devices/{unit.id}"),
        lambda: other.api.post(f"/api/agents/{owner.id}/qr", {"payload": "not yours"}),
        lambda: other.api.post(
            f"/api/agents/{other.id}/devices", {"device_id": unit.id, "code": "GUESSED1"}
        ),
    ):
        try:
            attempt()
        except ApiClientError as e:
            assert e.status in (403, 409)
            refused += 1
    record("refused", refused)
    assert refused == 3
    assert admin.get(f"/api/devices/{unit.id}")["agent_id"] == owner.id
    assert admin.get(f"/api/audit?device_id={unit.id}")["audit"] == audit_before
    assert owner.show("still mine")["device_id"] == unit.id
    if getattr(server, "log_path", None):  # a server the harness started: its log is here
        log = open(server.log_path).read()
        assert log.count('"event": "api_refused"') >= 3
