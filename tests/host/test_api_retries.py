"""Retries a cashier system makes, and what the only instance holds when it restarts: on a
running `qrfleet serve` with units that run the firmware's session code."""

import signal
import uuid

from tests.conftest import wait_for
from tests.host.test_api import ResultUnit, refused
from tools.serverproc import running_server
from tools.simdevice import SimulatedUnit
from tools.valkey import free_port

DEVICE = "qrf-000000000001"


def keyed(key):
    return {"Idempotency-Key": key}


def reserves(shop, device_id):
    audit = shop.admin.get(f"/api/audit?device_id={device_id}&limit=1000")["audit"]
    return [e["txn_id"] for e in audit if e["action"] == "reserve"]


def test_a_qr_retried_with_its_key_is_shown_once_and_answered_the_same(shop):
    till = shop.agent("till-1")
    unit = shop.unit(1)
    shop.link(till, "till-1", unit)
    sale = {"payload": "upi://pay?pa=shop@bank&am=12.50"}
    key = str(uuid.uuid4())

    first = till.post("/api/agents/till-1/qr", sale, keyed(key))
    again = till.post("/api/agents/till-1/qr", sale, keyed(key))

    assert again == first
    assert reserves(shop, unit.device_id) == [first["txn_id"]]
    assert unit.shown.count(("payment", sale["payload"])) == 1


def test_a_key_reused_with_another_body_is_refused_and_changes_nothing(shop):
    till = shop.agent("till-1")
    unit = shop.unit(1)
    shop.link(till, "till-1", unit)
    first = till.post("/api/agents/till-1/qr", {"payload": "sale 1"}, keyed("k-1"))

    e = refused(
        lambda: till.post("/api/agents/till-1/qr", {"payload": "sale 2"}, keyed("k-1")),
        409,
        "idempotency_key_reused",
    )

    assert "new request needs a new key" in e.message
    assert shop.admin.get(f"/api/devices/{unit.device_id}")["txn_id"] == first["txn_id"]
    refused(
        lambda: till.post("/api/agents/till-1/qr", {"payload": "x"}, keyed("k" * 256)),
        400,
        "invalid",
    )


def test_a_complete_retried_with_its_key_completes_once(shop):
    till = shop.agent("till-1")
    unit = shop.unit(1, kind=ResultUnit)
    shop.link(till, "till-1", unit)
    txn_id = till.post("/api/agents/till-1/qr", {"payload": "sale"})["txn_id"]

    done = till.post(f"/api/txns/{txn_id}/complete", {}, keyed("done-1"))
    again = till.post(f"/api/txns/{txn_id}/complete", {}, keyed("done-1"))

    assert done["result"] == "paid" and done["shown"] is True
    assert again == {**done, "shown": None}
    audit = shop.admin.get(f"/api/audit?device_id={unit.device_id}")["audit"]
    assert [e["action"] for e in audit].count("complete") == 1
    refused(
        lambda: till.post(f"/api/txns/{txn_id}/cancel", {}, keyed("done-1")),
        409,
        "idempotency_key_reused",
    )


def test_a_new_qr_replaces_the_cashiers_unfinished_one(shop):
    till = shop.agent("till-1")
    unit = shop.unit(1)
    shop.link(till, "till-1", unit)
    abandoned = till.post("/api/agents/till-1/qr", {"payload": "abandoned sale"})

    kept = till.post("/api/agents/till-1/qr", {"payload": "next sale"})

    assert kept["device_id"] == unit.device_id and unit.shown[-1] == ("payment", "next sale")
    for end in ("complete", "cancel"):
        e = refused(
            lambda end=end: till.post(f"/api/txns/{abandoned['txn_id']}/{end}"), 409, "superseded"
        )
        assert kept["txn_id"] in e.message
    audit = shop.admin.get(f"/api/audit?device_id={unit.device_id}")["audit"]
    assert ("superseded", abandoned["txn_id"]) in [(e["action"], e["txn_id"]) for e in audit]
    refused(
        lambda: till.post("/api/agents/till-1/qr", {"payload": "third", "supersede": False}),
        503,
        "all_busy",
    )
    assert till.post(f"/api/txns/{kept['txn_id']}/complete")["result"] == "paid"


def test_a_restart_of_the_only_instance_releases_what_it_held(tmp_path, background):
    (tmp_path / "run").mkdir()
    port, secret = free_port(), "s" * 32
    serve = {"heartbeat_s": 1, "server_id": "solo", "port": port}
    with running_server(tmp_path / "run", "admin", **serve) as first:
        admin = first.admin()
        admin.post("/api/locations", {"location_id": "shop", "name": "S", "policy": "strict"})
        token = admin.post(
            "/api/agents", {"agent_id": "till-1", "name": "T", "location_id": "shop"}
        )["token"]
        admin.post("/api/devices", {"device_id": DEVICE, "secret": secret, "location_id": "shop"})
        admin.post("/api/agents/till-1/devices", {"device_id": DEVICE})
        unit = SimulatedUnit(DEVICE, secret, [first.device_url])
        background.call(unit.start)
        wait_for(lambda: admin.get(f"/api/devices/{DEVICE}")["status"] == "online")
        first.client(token).post("/api/agents/till-1/qr", {"payload": "sale", "ttl_s": 3600})
        first.process.send_signal(signal.SIGKILL)  # its reservation's ttl is an hour away
        first.process.wait()
    with running_server(tmp_path / "run", "admin", **serve) as second:
        admin = second.admin()
        assert admin.get(f"/api/devices/{DEVICE}")["txn_id"] is None
        # Back on the new run (the old run's lease is still live for a moment).
        wait_for(lambda: "connected_since" in admin.get(f"/api/devices/{DEVICE}"), 20)
        shown = second.client(token).post("/api/agents/till-1/qr", {"payload": "next sale"})
        assert shown["verified"]
        background.run(unit.stop())
