"""Counters without Wi-Fi: units tethered by USB to the cashier's PC, whose `qrfleet bridge`
carries their sessions to the server. The same guarantees as over Wi-Fi, and what a cable, a PC
and its route to the server add: each failure fails fast with a clear error, shows the unit
offline within the heartbeat rule, and heals by itself once its cause is gone.

On virtual boards (their serial ports are real RFC 2217 endpoints) every scenario runs; with
`--board PORT --tethered` the same scenarios run on real units, except those that pull a cable.
"""

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from firmware.proto.messages import SILENT_HEARTBEATS
from host.client import ApiClientError
from tests.hil.conftest import SOAK_S, link, on_screen, two_cashiers_sell_and_steal
from tools.background import wait_for
from tools.harness.units import VirtualUnit

HEARTBEAT_S = 2  # the harness's servers (tools/harness/benches.py)
# The heartbeat rule: a unit silent for SILENT_HEARTBEATS periods is offline; a second more
# for the server's sweep.
OFFLINE_WITHIN_S = SILENT_HEARTBEATS * HEARTBEAT_S + 1
BACK_WITHIN_S = 30
MPREMOTE = str(Path(sys.executable).parent / "mpremote")
CONFIG_LINK = "import json; print(json.load(open('config.json'))['link'])"


@pytest.fixture(scope="module", autouse=True)
def _tethered_boards_off_after(_benches):
    yield
    _benches.power_off_tethered()


def status(server, unit):
    return server.admin().get(f"/api/devices/{unit.id}")


def wait_status(server, unit, wanted, timeout):
    """Seconds until the server reports `unit` as `wanted`."""
    started = time.monotonic()
    while status(server, unit)["status"] != wanted:
        assert time.monotonic() - started < timeout, f"{unit.id} not {wanted} within {timeout} s"
        time.sleep(0.1)
    return round(time.monotonic() - started, 2)


def unit_log(unit):
    """What a virtual board printed on its serial port (a real unit's is the bridge's)."""
    return Path(unit.log_path).read_text(errors="replace")


def wait_unit_log(unit, text, start, timeout=15):
    """On a virtual board: until its serial log holds `text` after offset `start`."""
    if isinstance(unit, VirtualUnit):
        wait_for(lambda: text in unit_log(unit)[start:], timeout, f"{unit.id} to log {text!r}")


def log_end(unit):
    return len(unit_log(unit)) if isinstance(unit, VirtualUnit) else 0


def sells(till, unit, payload):
    """A verified QR on `unit`, read off its screen, and the sale completed."""
    shown = till.show(payload)
    assert shown["device_id"] == unit.id and shown["verified"]
    assert on_screen(unit, payload)
    till.api.post(f"/api/txns/{shown['txn_id']}/complete")


def selling_unit(tethered, agents, first_sale):
    """One tethered unit behind a bridge of its own, online, its cashier linked to it and one
    sale done -> (unit, bridge, cashier)."""
    (unit,) = tethered.units(1)
    bridge = tethered.bridge([unit])
    tethered.ready([unit])
    (till,) = agents(1)
    link(till, unit)
    sells(till, unit, first_sale)
    return unit, bridge, till


def refused_fast(till, payload, codes=("device_offline",)):
    """A sale now is refused at once, with a code a cashier system understands -> seconds."""
    started = time.monotonic()
    with pytest.raises(ApiClientError) as refusal:
        till.show(payload)
    elapsed = time.monotonic() - started
    assert refusal.value.code in codes, refusal.value
    assert elapsed < 5
    return round(elapsed, 2)


@pytest.mark.parametrize("qrfleet_tls", [False, True], indirect=True, ids=["ws", "wss"])
def test_two_cashiers_on_tethered_units_keep_them_under_concurrent_sales_and_steal_attempts(
    tethered, agents, server, record
):
    unit1, unit2 = tethered.units(2)
    tethered.bridge([unit1], "till-1-pc")
    tethered.bridge([unit2], "till-2-pc")
    tethered.ready([unit1, unit2])
    assert status(server, unit1)["via"] == "bridge@till-1-pc"
    assert status(server, unit2)["via"] == "bridge@till-2-pc"
    till1, till2 = agents(2)
    link(till1, unit1)
    link(till2, unit2)
    two_cashiers_sell_and_steal(server, (till1, unit1), (till2, unit2), record, SOAK_S / 2)


def test_cable_pulled_mid_qr_fails_fast_shows_offline_and_comes_back_when_replugged(
    tethered, agents, server, record
):
    unit, bridge, till = selling_unit(tethered, agents, "before the pull")
    log_start = log_end(unit)

    during = {}

    def sale():
        started = time.monotonic()
        try:
            during["shown"] = till.show("while the cable goes")
        except ApiClientError as e:
            during["refused"] = e
        during["s"] = time.monotonic() - started

    cashier = threading.Thread(target=sale)
    cashier.start()
    unit.unplug()
    cashier.join(30)
    assert not cashier.is_alive(), "the sale hung when the cable went"
    record("mid_qr_answer_s", round(during["s"], 2))
    if "refused" in during:  # the usual case: the cable went before the unit's ack came back
        assert during["refused"].code in ("device_offline", "device_timeout")
        assert during["s"] < 10
    else:  # the QR was on the screen before the cable went
        assert during["shown"]["verified"]
    record("offline_noticed_s", wait_status(server, unit, "offline", OFFLINE_WITHIN_S))
    record("refused_while_unplugged_s", refused_fast(till, "while unplugged"))
    bridge.wait_for_log(f"lost unit {unit.id}")
    wait_unit_log(unit, "lost the bridge", log_start)

    unit.plug()
    record("back_online_s", wait_status(server, unit, "online", BACK_WITHIN_S))
    sells(till, unit, "after the replug")


def test_bridge_killed_and_restarted_brings_its_unit_back(tethered, agents, server, record):
    unit, bridge, till = selling_unit(tethered, agents, "before the bridge dies")

    bridge.kill()
    record("offline_noticed_s", wait_status(server, unit, "offline", OFFLINE_WITHIN_S))
    record("refused_while_down_s", refused_fast(till, "no bridge"))
    bridge.start()
    record("back_online_s", wait_status(server, unit, "online", BACK_WITHIN_S))
    sells(till, unit, "after the restart")


def test_pc_asleep_takes_its_unit_offline_and_waking_it_brings_the_unit_back(
    tethered, agents, server, record
):
    unit, bridge, till = selling_unit(tethered, agents, "before the PC sleeps")
    log_start = log_end(unit)

    bridge.sleep()  # its sockets stay open and silent: only the heartbeat rule can tell
    record("offline_noticed_s", wait_status(server, unit, "offline", OFFLINE_WITHIN_S + 2))
    record("refused_while_asleep_s", refused_fast(till, "PC asleep"))
    wait_unit_log(unit, "no bridge on the USB port", log_start)  # and its screen asks for one
    bridge.wake()
    record("back_online_s", wait_status(server, unit, "online", BACK_WITHIN_S))
    sells(till, unit, "after the PC woke")


def test_server_unreachable_from_the_pc_the_bridge_backs_off_and_the_unit_says_why(
    tethered, agents, server, record
):
    unit, bridge, till = selling_unit(tethered, agents, "before the route goes")
    log_start = log_end(unit)

    tethered.route.cut()
    outage_started = time.monotonic()
    record("offline_noticed_s", wait_status(server, unit, "offline", OFFLINE_WITHIN_S))
    record("refused_while_cut_s", refused_fast(till, "no route"))
    bridge.wait_for_log("unreachable")
    wait_unit_log(unit, "unreachable from the PC", log_start)  # its screen says so too
    time.sleep(max(0, 12 - (time.monotonic() - outage_started)))
    attempts = len(re.findall(r"(?m)^\S+ \S+ server \S+ unreachable", bridge.log_text()))
    outage_s = time.monotonic() - outage_started
    record("connect_attempts_in_outage", attempts)
    record("outage_s", round(outage_s, 1))
    # Backing off (full jitter, doubling): fewer tries than one a second, however the unit asks.
    assert 2 <= attempts < outage_s

    tethered.route.restore()
    record("back_online_s", wait_status(server, unit, "online", BACK_WITHIN_S))
    sells(till, unit, "after the route is back")


def test_two_tethered_units_on_one_pc_sell_and_one_pulled_cable_leaves_the_other_selling(
    tethered, agents, server, record
):
    unit1, unit2 = tethered.units(2)
    tethered.bridge([unit1, unit2], "counter-pc")
    tethered.ready([unit1, unit2])
    assert status(server, unit1)["via"] == status(server, unit2)["via"] == "bridge@counter-pc"
    till1, till2 = agents(2)
    link(till1, unit1)
    link(till2, unit2)
    for n in range(3):
        sells(till1, unit1, f"till 1 sale {n}")
        sells(till2, unit2, f"till 2 sale {n}")

    unit1.unplug()
    wait_status(server, unit1, "offline", OFFLINE_WITHIN_S)
    for n in range(3):
        sells(till2, unit2, f"till 2 alone {n}")
    unit1.plug()
    record("back_online_s", wait_status(server, unit1, "online", BACK_WITHIN_S))
    sells(till1, unit1, "till 1 is back")


def test_a_cashier_with_a_tethered_unit_and_wifi_pool_units_follows_the_hybrid_rules(
    tethered, boards, agents, server, record
):
    (own,) = tethered.units(1)
    tethered.bridge([own])
    tethered.ready([own])
    (till,) = agents(1)
    link(till, own)
    pool = {unit.id: unit for unit in boards}  # on Wi-Fi, at the same location
    assert status(server, own)["via"] == "bridge@till-pc"
    assert {status(server, unit)["via"] for unit in boards} == {None}
    record("free_heap_tethered", status(server, own)["free_heap"])
    record("free_heap_wifi", status(server, boards[0])["free_heap"])
    sells(till, own, "own unit first")

    own.unplug()
    record("offline_noticed_s", wait_status(server, own, "offline", OFFLINE_WITHIN_S))
    during = till.show("the pool while the cable is out")
    assert during["device_id"] in pool and during["verified"]
    assert on_screen(pool[during["device_id"]], "the pool while the cable is out")
    till.api.post(f"/api/txns/{during['txn_id']}/complete")
    own.plug()
    record("back_online_s", wait_status(server, own, "online", BACK_WITHIN_S))
    sells(till, own, "own unit again")


def test_with_its_bridge_stopped_a_technician_breaks_in_with_ctrl_c_and_mpremote_works(
    tethered, server, record
):
    (unit,) = tethered.units(1)
    bridge = tethered.bridge([unit])
    tethered.ready([unit])
    bridge.stop()
    unit.serial.write(b"\x03")  # what a terminal's Ctrl-C sends
    unit.serial.expect(">>> ", timeout=10)
    unit.serial.close()
    done = subprocess.run(
        [MPREMOTE, "connect", unit.serial_url, "exec", CONFIG_LINK],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["usb"]

    # The bridge started again with the unit still at its prompt: it says what to do.
    bridge.start()
    bridge.wait_for_log("the unit is at its MicroPython prompt, not running qrfleet: press its")
    assert status(server, unit)["status"] == "offline"
    bridge.stop()
    unit.reset()  # as its reset button does
    bridge.start()
    record("back_online_s", wait_status(server, unit, "online", BACK_WITHIN_S))
