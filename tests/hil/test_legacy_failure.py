"""The failure qrfleet exists to end: a cashier's unit taken over by another cashier.

Two cashiers sell at the same time for SOAK_S seconds; between sales each tries to link the
other's unit. Every attempt must be refused, every QR must be verified by the server and read
off the right unit's screen, and no cashier may ever hear "no device". It runs over ws:// and
over wss:// (a server with a CA of the harness's, which the units are provisioned to trust).
"""

import pytest

from tests.hil.conftest import link, two_cashiers_sell_and_steal


@pytest.mark.parametrize("qrfleet_board", ["virtual:2"], indirect=True)  # two cashiers, two units
@pytest.mark.parametrize("qrfleet_tls", [False, True], indirect=True, ids=["ws", "wss"])
def test_two_cashiers_keep_their_units_under_concurrent_sales_and_steal_attempts(
    boards, agents, server, record
):
    till1, till2 = agents(2)
    unit1, unit2 = boards[0], boards[1]
    link(till1, unit1)
    link(till2, unit2)
    two_cashiers_sell_and_steal(server, (till1, unit1), (till2, unit2), record)
