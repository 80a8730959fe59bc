"""Server instances and Valkey fail while cashiers sell: every cashier shows QRs again within
the bound, nothing granted to a dead instance keeps its unit busy, and nothing is applied
twice."""

import signal
import time
from collections import Counter

import pytest

from tools.background import wait_for
from tools.harness.selling import (
    FAILURES,
    Cashier,
    Selling,
    applied_twice,
    fail,
    reserved_twice,
)

FAILOVER_BOUND_S = 10
# Every cashier back within 3 s (issue 16) of a killed instance, of a paused one's lease
# running out, and of Valkey answering again after a restart. tools.bench.failover, p99 over
# 10 runs on a shared 2-core machine: 0.95 s, 2.62 s and 0.63 s; here, after a Valkey restart,
# every cashier was back within 0.3 s (4 runs).
BACK_WITHIN_S = 3.0
SELLING_BEFORE_S = 3
SELLING_AFTER_S = 10


def test_instance_killed_while_units_connect_every_unit_shows_qrs_in_bound(cluster, record):
    victim = "s1"
    for board in cluster.boards:  # every unit reconnects at once...
        cluster.loop.run(board.power_off())
    for board in cluster.boards:
        cluster.loop.call(board.power_on)
    killed_at = time.monotonic()
    cluster.servers[victim].process.send_signal(signal.SIGKILL)  # ...while one instance dies
    survivors = [s for s in cluster.servers if s != victim]
    cluster.admin = cluster.any_admin(alive=survivors)

    served = {}

    def all_served():
        for agent_id in cluster.agents:
            if agent_id not in served:
                try:
                    cluster.show(agent_id, f"after failover {agent_id}", survivors[0])
                    served[agent_id] = time.monotonic() - killed_at
                except Exception:  # noqa: BLE001 - not yet: try again
                    pass
        return len(served) == len(cluster.agents)

    wait_for(all_served, FAILOVER_BOUND_S, "every unit to show a QR after the failover")
    worst = max(served.values())
    record("units", len(served))
    record("worst_recovery_s", round(worst, 2))
    assert all(d["server_id"] != victim for d in cluster.devices().values())


@pytest.mark.parametrize("failure", FAILURES)
def test_cashiers_keep_selling_across_a_failure(cluster, record, failure):
    cashiers = [
        Cashier(agent_id, board.device_id, token, cluster.urls)
        for agent_id, (board, token) in cluster.agents.items()
    ]
    victim = cluster.busiest()
    with Selling(cashiers) as selling:
        time.sleep(SELLING_BEFORE_S)
        what, origin = fail(failure, cluster.servers, victim, cluster.valkey, cluster.heartbeat_s)
        cluster.admin = cluster.any_admin(alive=[s for s in cluster.servers if s != victim])
        time.sleep(max(0.0, origin + SELLING_AFTER_S - time.monotonic()))
        sales = selling.stop()
    audit = [
        entry
        for board, _ in cluster.agents.values()
        for entry in cluster.admin.get(f"/api/audit?device_id={board.device_id}&limit=10000")[
            "audit"
        ]
    ]

    back = {s.agent_id: (s.first_qr_after(origin) or float("inf")) - origin for s in sales}
    busy_after = {s.agent_id: s.refused_after(s.first_qr_after(origin) or origin) for s in sales}
    record("failure", what)
    record("back_after_s", {a: round(b, 2) for a, b in back.items()})
    ended = time.monotonic()
    record("longest_gap_s", {s.agent_id: round(s.longest_gap(origin, ended), 2) for s in sales})
    record("refusals_after", dict(sum((s.refused_after(origin) for s in sales), Counter())))
    assert max(back.values()) <= BACK_WITHIN_S, back
    assert all(refusals["all_busy"] == 0 for refusals in busy_after.values()), busy_after
    assert reserved_twice(audit) == []
    assert applied_twice(sales) == {}
