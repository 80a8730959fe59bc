import os
import threading
import time

from host.client import ApiClientError
from tools.background import wait_for
from tools.vboard.screen import wait_for_qr

SOAK_S = float(os.environ.get("QRFLEET_SOAK_S", "30"))


def pairing_text(unit, timeout=20):
    """What the unit's pairing QR says, read off its screen as a cashier's phone would."""
    return wait_for_qr(unit.screen_path, "qrfleet://pair?", timeout)


def link(agent, unit):
    return agent.link(pairing_text(unit))


def on_screen(unit, payload, timeout=10):
    """True once the unit's screen shows a QR reading exactly `payload`."""
    try:
        wait_for(lambda: payload in unit.screen(), timeout, f"{unit.id} to show the QR")
        return True
    except TimeoutError:
        return False


def two_cashiers_sell_and_steal(server, first, second, record, seconds=SOAK_S):
    """The legacy failure's test: two cashiers, each with (agent, unit), sell at once for
    `seconds`, and between sales each tries to link the other's unit. Every attempt must be
    refused, every QR verified by the server and read off the right unit's screen, and no
    cashier may ever hear "no device"."""
    (till1, unit1), (till2, unit2) = first, second
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
        deadline = time.monotonic() + seconds
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
                    if e.code in ("not_linked", "device_offline", "all_busy"):
                        counts["no_device"] += 1
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
