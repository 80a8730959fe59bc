"""A `qrfleet serve` on a replicated Valkey behind Sentinel rides through a failover: real
valkey-server processes as primary, two replicas (a failover leaves one to confirm changes)
and three Sentinels, and a unit that runs the firmware's session code."""

import time

import pytest
import valkey

from host.client import ApiClientError
from tools.serverproc import running_server
from tools.valkey import ReplicatedValkey

DOWN_AFTER_S = 1.0
# Sentinel's down-after time, then its vote and the promotion (about 1.3 s here), then the
# server's next attempt on the promoted replica, which the Sentinels advertise before the
# other replica follows it: measured 2.3-2.6 s after the kill. When that outage outlasts an
# instance's presence (3 s, renewed each second), it joins again and its unit reconnects:
# the first QR after the failover may be refused (device_offline) and the next one served.
SERVED_AGAIN_S = DOWN_AFTER_S + 4


@pytest.fixture
def replicated(tmp_path):
    with ReplicatedValkey(
        tmp_path / "valkey", replicas=2, sentinels=3, down_after_ms=int(DOWN_AFTER_S * 1000)
    ) as valkeys:
        yield valkeys


@pytest.fixture
def server(tmp_path, replicated):
    """The `shop` fixture's server, on the Sentinels' URL."""
    with running_server(tmp_path, heartbeat_s=1, store=replicated.url()) as srv:
        yield srv


def replicated_so_far(valkeys):
    """Wait until both replicas have every write the primary took so far (WAIT counts the
    replicas that acknowledged this client's last write, which comes after all of them)."""
    with valkey.Valkey(port=valkeys.primary.port) as primary:
        primary.set("test:replicated", 1)
        return primary.wait(2, 1000)


def show_until_served(till, payload, since):
    """POST a QR until one is shown -> (its answer, seconds from `since`, refusal codes)."""
    refusals = []
    while True:
        try:
            shown = till.post("/api/agents/till-1/qr", {"payload": payload})
            return shown, time.monotonic() - since, refusals
        except ApiClientError as e:
            refusals.append(f"{e.code}: {e.message}")
            assert time.monotonic() - since < 30, refusals
            time.sleep(0.05)


def test_a_failover_keeps_the_link_and_the_same_servers_serve_qrs_again(shop, replicated, tmp_path):
    till = shop.agent("till-1")
    unit = shop.unit(1)
    shop.link(till, "till-1", unit)
    (tmp_path / "other").mkdir()
    with running_server(tmp_path / "other", heartbeat_s=1, store=replicated.url()) as other:
        # A QR asked of the other instance goes over pub/sub to the unit's instance.
        till_via_other = other.client(till.token)
        assert till_via_other.post("/api/agents/till-1/qr", {"payload": "sale 1"})["verified"]
        assert replicated_so_far(replicated) == 2

        killed_at = time.monotonic()
        replicated.primary.stop(kill=True)
        shown, served_after, refusals = show_until_served(till, "sale 2", killed_at)
        routed, routed_after, routed_refusals = show_until_served(
            till_via_other, "sale 3", killed_at
        )
        print(
            f"after SIGKILL of the primary: served again in {served_after:.2f} s "
            f"(refusals {refusals}), through the other instance in {routed_after:.2f} s "
            f"(refusals {routed_refusals})"
        )

        assert shown["verified"] and routed["verified"]
        assert shown["device_id"] == routed["device_id"] == unit.device_id
        assert unit.shown[-1] == ("payment", "sale 3")
        assert served_after < SERVED_AGAIN_S and routed_after < SERVED_AGAIN_S
        assert replicated.advertised_port() in {r.port for r in replicated.replicas}
        # The same processes, never restarted, and the link made before the failover.
        assert shop.server.process.poll() is None and other.process.poll() is None
        assert shop.admin.get(f"/api/devices/{unit.device_id}")["agent_id"] == "till-1"
