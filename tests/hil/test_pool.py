"""A location whose cashiers share a pool of units: more cashiers than units."""

import threading
import time

import pytest


@pytest.mark.parametrize("location", ["pool"], indirect=True)
def test_pool_reservations_are_exclusive_and_waiters_are_served_in_order(boards, agents, record):
    units = boards[:2]
    for extra in boards[2:]:  # only two units in this shop
        extra.power_off()
    try:
        holders = agents(2)
        first = [a.show(f"hold {a.id}") for a in holders]
        assert sorted(r["device_id"] for r in first) == sorted(u.id for u in units)

        waiters = agents(3)
        served = {}

        def wait_turn(agent):
            shown = agent.show(f"waiting {agent.id}", wait_s=20)
            served[agent.id] = (time.monotonic(), shown)

        threads = []
        for agent in waiters:  # they queue up in this order
            t = threading.Thread(target=wait_turn, args=(agent,))
            t.start()
            threads.append(t)
            time.sleep(0.3)
        for r, agent in zip(first, holders, strict=True):
            time.sleep(0.3)
            agent.api.post(f"/api/txns/{r['txn_id']}/complete")
        time.sleep(0.5)
        w0 = served[waiters[0].id][1]
        waiters[0].api.post(f"/api/txns/{w0['txn_id']}/complete")
        for t in threads:
            t.join(30)

        order = sorted(served, key=lambda a: served[a][0])
        record("served_in_order", order == [a.id for a in waiters])
        assert order == [a.id for a in waiters]
        # Never two transactions on one unit at once: the third waiter got the unit the
        # first one freed, after it was freed.
        assert served[waiters[2].id][1]["device_id"] == w0["device_id"]
        for agent in waiters[1:]:
            agent.api.post(f"/api/txns/{served[agent.id][1]['txn_id']}/complete")
    finally:
        for extra in boards[2:]:
            extra.power_on()
