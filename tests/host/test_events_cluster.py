"""`GET /api/events` across three `qrfleet serve` instances on one real Valkey: a client that
moves from instance to instance with Last-Event-ID gets every event of the cluster exactly once.

Simulated units (the firmware's session code), one held by each instance, keep the cluster
quick to start; tests/host/test_cluster.py runs virtual boards on the same kind of cluster."""

import time
from contextlib import ExitStack

import pytest

from host.client import ApiClient
from host.events import TYPES
from tests.host.test_events import EventStream
from tools import provision
from tools.background import BackgroundLoop, wait_for
from tools.harness.selling import Cashier, Selling
from tools.serverproc import running_server
from tools.simdevice import SimulatedUnit
from tools.valkey import ValkeyServer

TOKEN = "cluster-admin"
EVENTS_PER_VISIT = 15


@pytest.fixture
def cluster(tmp_path):
    """-> (servers by id, admin client, cashiers): a cashier and its unit per instance."""
    with ExitStack() as stack:
        valkey = ValkeyServer().start()
        stack.callback(valkey.stop)
        servers = {}
        for n in (1, 2, 3):
            (tmp_path / f"s{n}").mkdir()
            servers[f"s{n}"] = stack.enter_context(
                running_server(
                    tmp_path / f"s{n}", TOKEN, store=valkey.url(), server_id=f"s{n}", heartbeat_s=1
                )
            )
        admin = ApiClient(servers["s1"].url, TOKEN)
        admin.post("/api/locations", {"location_id": "shop", "name": "Shop"})
        loop = BackgroundLoop()
        stack.callback(loop.close)
        cashiers = []
        for n, server in enumerate(servers.values()):
            device_id, secret, agent_id = f"qrf-00000000000{n}", provision.new_secret(), f"till-{n}"
            admin.post(
                "/api/devices", {"device_id": device_id, "secret": secret, "location_id": "shop"}
            )
            unit = SimulatedUnit(device_id, secret, [server.device_url])  # held by this one
            loop.call(unit.start)
            stack.callback(lambda unit=unit: loop.run(unit.stop()))
            token = admin.post(
                "/api/agents", {"agent_id": agent_id, "name": agent_id, "location_id": "shop"}
            )["token"]
            wait_for(lambda unit=unit: unit.online, what=f"{device_id} to come online")
            admin.post(f"/api/agents/{agent_id}/devices", {"device_id": device_id})
            cashiers.append(
                Cashier(agent_id, device_id, token, lambda: [s.url for s in servers.values()])
            )
        yield servers, admin, cashiers


def newest(admin):
    return admin.get("/api/audit?limit=1")["audit"][-1]["seq"]


def test_a_client_moving_between_instances_gets_every_event_once_in_order(cluster):
    servers, admin, cashiers = cluster
    start = last = newest(admin)
    visits = {}  # instance -> the events read from it
    with Selling(cashiers) as selling:
        for server_id, server in servers.items():
            with EventStream(server.url, TOKEN, last_event_id=last) as stream:
                visits[server_id] = [stream.next() for _ in range(EVENTS_PER_VISIT)]
            last = visits[server_id][-1]["id"]
            time.sleep(0.3)  # away: the cashiers go on selling
        selling.stop()
    tip = newest(admin)
    with EventStream(servers["s3"].url, TOKEN, last_event_id=last) as stream:
        visits["s3"] += stream.until(lambda e: e["id"] >= tip)

    received = [e for events in visits.values() for e in events]
    log = [e for e in admin.get("/api/audit?limit=10000")["audit"] if start < e["seq"] <= tip]
    assert [e["id"] for e in received] == [e["seq"] for e in log]
    assert [e["type"] for e in received] == [TYPES[e["action"]] for e in log]
    assert {"txn.reserved", "txn.shown", "txn.completed"} <= {e["type"] for e in received}

    # Every instance's units sold through the stream, and instances served events of units
    # that another instance holds.
    holders = {d["device_id"]: d["server_id"] for d in admin.get("/api/devices")["devices"]}
    assert set(holders.values()) == set(servers)
    assert {e["device_id"] for e in received} == set(holders)
    assert any(
        e["device_id"] and holders[e["device_id"]] != server_id
        for server_id, events in visits.items()
        for e in events
    )
