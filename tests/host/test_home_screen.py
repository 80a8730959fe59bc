"""After a sale, the unit shows its result, then its home screen: once, however fast the
cashier sells."""

import time

from host.server import RESULT_SHOWN_S
from tests.conftest import wait_for
from tools.simdevice import SimulatedUnit


class CountingUnit(SimulatedUnit):
    """A simulated unit that counts the commands it is sent, by type."""

    def __init__(self, *args):
        super().__init__(*args)
        self.received = {}

    def handle(self, msg):
        self.received[msg["type"]] = self.received.get(msg["type"], 0) + 1
        return super().handle(msg)


def test_a_cashier_selling_back_to_back_gets_one_home_screen_at_the_end(shop):
    agent = shop.agent("till-1")
    unit = shop.unit(1, kind=CountingUnit)
    shop.link(agent, "till-1", unit)
    homes_before = unit.received.get("clear", 0)

    sales = 0
    started = time.monotonic()
    while time.monotonic() - started < RESULT_SHOWN_S + 2:
        doc = agent.post("/api/agents/till-1/qr", {"payload": f"upi://pay?am={sales}.00"})
        agent.post(f"/api/txns/{doc['txn_id']}/complete", {})
        sales += 1
    wait_for(lambda: unit.screen == "status", RESULT_SHOWN_S + 2, "the home screen")
    time.sleep(1)  # any timer left over from an earlier sale would fire by now

    assert sales > 20
    assert unit.received["show_result"] >= sales
    # One timer per unit: the latest result's. One per sale would send a clear into every gap
    # between two sales, and dozens at the end, each taking the screen ahead of the next QR.
    assert unit.received.get("clear", 0) - homes_before == 1
