"""The hybrid policy: a cashier's own unit first, the location's pool when it is down."""

import time

from tests.hil.conftest import link, on_screen


def test_own_unit_goes_offline_mid_shift_and_its_qrs_move_to_the_pool_and_back(
    boards, agents, server, record
):
    (till,) = agents(1)
    own, pool = boards[0], boards[1]
    link(till, own)
    admin = server.admin()

    before = till.show("before")
    assert before["device_id"] == own.id
    till.api.post(f"/api/txns/{before['txn_id']}/complete")
    own.power_off()
    started = time.monotonic()
    while admin.get(f"/api/devices/{own.id}")["status"] != "offline":
        assert time.monotonic() - started < 20, "the server never noticed the unit was gone"
        time.sleep(0.1)
    record("offline_noticed_s", round(time.monotonic() - started, 2))
    during = till.show("during the outage")
    assert during["device_id"] in {u.id for u in boards[1:]}
    assert on_screen(next(u for u in boards if u.id == during["device_id"]), "during the outage")
    till.api.post(f"/api/txns/{during['txn_id']}/complete")

    own.power_on()
    started = time.monotonic()
    while admin.get(f"/api/devices/{own.id}")["status"] != "online":
        assert time.monotonic() - started < 30, "the unit did not come back"
        time.sleep(0.1)
    record("back_online_s", round(time.monotonic() - started, 2))
    after = till.show("after")
    assert after["device_id"] == own.id
    assert on_screen(own, "after")
    assert pool.id != own.id
