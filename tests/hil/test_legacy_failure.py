"""The failure qrfleet exists to end: a cashier's unit taken over by another cashier.

Two cashiers sell at the same time for SOAK_S seconds; between sales each tries to link the
other's unit. Every attempt must be refused, every QR must be verified by the server and read
off the right unit's screen, and no cashier may ever hear "no device". It runs over ws:// and
over wss:// (a server with a CA of the harness's, which the units are provisioned to trust).
"""

import os
import threading
import time

import pytest

from host.client import ApiClientError
from tests.hil.conftest import link, on_screen

SOAK_S = float(os.environ.get("QRFLEET_SOAK_S", "30"))


@pytest.mark.parametrize("qrfleet_board", ["virtual:2"], indirect=True)  # two cashiers, two units
@pytest.mark.parametrize("qrfleet_tls", [False, True], indirect=True, ids=["ws", "wss"])
def test_two_cashiers_keep_their_units_under_concurrent_sales_and_steal_attempts(
    boards, agents, server, record
):
    till1, till2 = agents(2)
    unit1, unit2 = boards[0], boards[1]
    link(till1, unit1)
    link(till2, unit2)
    counts = {
        "qr": 0,
        "verified": 0,
        "on_screen": 0,
        "no_device": 0,
        "steal_refused": 0,
        "stolen": 0,
        "other_errors": [],
    }
    lock = threading.Lock()

    def cashier(me, mine, other_unit):
        n = 0
        deadline = time.monotonic() + SOAK_S
        while time.monotonic() < deadline:
            n += 1
            payload = f"upi://pay?pa=shop@bank&am={n}.00&tn={me.id}-{n}"
            try:
                shown = me.show(payload, caption=f"{n}.00")
                ok = shown["device_id"] == mine.id and shown["verified"]
                seen = on_screen(mine, payload)
                me.api.post(f"/api/txns/{shown['txn_id']}/complete")
                with lock:
                    counts["qr"] += 1
                    counts["verified"] += ok
                    counts["on_screen"] += seen
            except ApiClientError as e:
                with lock:
                    key = (
                        "no_device"
                        if e.code in ("not_linked", "device_offline", "all_busy")
                        else None
                    )
                    if key:
                        counts[key] += 1
                    else:
                        counts["other_errors"].append(str(e))
            try:
                me.api.post(
                    f"/api/agents/{me.id}/devices", {"device_id": other_unit.id, "code": "GUESSED1"}
                )
                with lock:
                    counts["stolen"] += 1
            except ApiClientError as e:
                with lock:
                    if e.status == 409:
                        counts["steal_refused"] += 1
                    else:
                        counts["other_errors"].append(str(e))

    threads = [
        threading.Thread(target=cashier, args=(till1, unit1, unit2)),
        threading.Thread(target=cashier, args=(till2, unit2, unit1)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for name in ("qr", "verified", "on_screen", "no_device", "steal_refused", "stolen"):
        record(name, counts[name])
    assert counts["other_errors"] == []
    assert counts["no_device"] == 0 and counts["stolen"] == 0
    assert counts["qr"] >= 20
    assert counts["verified"] == counts["on_screen"] == counts["qr"]
    assert counts["steal_refused"] >= counts["qr"] // 2
    admin = server.admin()
    assert admin.get(f"/api/devices/{unit1.id}")["agent_id"] == till1.id
    assert admin.get(f"/api/devices/{unit2.id}")["agent_id"] == till2.id
