"""The HTTP API on a running `qrfleet serve`, with units that run the firmware's session code."""

import asyncio
import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from host.client import ApiClient, ApiClientError
from tests.conftest import wait_for
from tools.simdevice import SimulatedUnit


def refused(call, status, code):
    with pytest.raises(ApiClientError) as info:
        call()
    assert (info.value.status, info.value.code) == (status, code), info.value
    assert info.value.message  # a sentence for a person, not only a code
    return info.value


def refusal_body(client, path, body):
    """Status and whole JSON body of a refused POST (ApiClientError keeps code and message)."""
    req = urllib.request.Request(
        client.base_url + path, data=json.dumps(body).encode(), method="POST"
    )
    req.add_header("Authorization", f"Bearer {client.token}")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    return info.value.code, json.loads(info.value.read())


class ResultUnit(SimulatedUnit):
    """A simulated unit that also remembers the last result it was told to show."""

    result = None

    def handle(self, msg):
        if msg["type"] == "show_result":
            self.result = msg["result"]
        return super().handle(msg)


def test_serve_prints_its_url_first_and_answers_health(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert server.admin().get("/api/health")["ok"] is True


def test_a_linked_unit_shows_a_verified_qr_and_the_result(shop):
    till = shop.agent("till-1")
    unit = shop.unit(1)
    linked = shop.link(till, "till-1", unit)
    assert linked["agent_id"] == "till-1"

    shown = till.post(
        "/api/agents/till-1/qr", {"payload": "upi://pay?pa=shop@bank&am=12.50", "caption": "12.50"}
    )
    assert shown["device_id"] == unit.device_id and shown["verified"] is True
    assert shown["version"] >= 1 and shown["latency_ms"] < 1000
    assert unit.shown[-1] == ("payment", "upi://pay?pa=shop@bank&am=12.50")

    done = till.post(f"/api/txns/{shown['txn_id']}/complete")
    assert done == {
        "txn_id": shown["txn_id"],
        "device_id": unit.device_id,
        "result": "paid",
        "shown": True,
    }
    assert unit.screen == "result"
    again = till.post("/api/agents/till-1/qr", {"payload": "next sale"})
    assert again["device_id"] == unit.device_id  # released: free for the next sale


def test_devices_list_shows_status_owner_server_and_screen(shop):
    till = shop.agent("till-1")
    unit = shop.unit(1)
    shop.link(till, "till-1", unit)
    (device,) = shop.admin.get("/api/devices")["devices"]
    assert device["device_id"] == unit.device_id
    assert device["status"] == "online" and device["agent_id"] == "till-1"
    assert device["location_id"] == "shop-1" and device["server_id"]
    assert device["last_seen"]


def test_devices_list_says_which_bridge_a_unit_on_usb_came_through(shop):
    tethered = shop.unit(1, via="bridge@till-3")
    wireless = shop.unit(2)

    via = {d["device_id"]: d["via"] for d in shop.admin.get("/api/devices")["devices"]}
    assert via == {tethered.device_id: "bridge@till-3", wireless.device_id: None}
    assert shop.admin.get(f"/api/devices/{tethered.device_id}")["via"] == "bridge@till-3"


@pytest.mark.parametrize("claimed", ["till-3", "bridge@" + "t" * 74])
def test_a_via_that_names_no_bridge_is_ignored_and_logged(shop, claimed):
    unit = shop.unit(1, via=claimed)

    (device,) = shop.admin.get("/api/devices")["devices"]
    assert (device["device_id"], device["status"], device["via"]) == (
        unit.device_id,
        "online",
        None,
    )
    ignored = [
        json.loads(line)
        for line in Path(shop.server.log_path).read_text().splitlines()
        if '"device_via_ignored"' in line
    ]
    assert [(e["device_id"], e["via"]) for e in ignored] == [(unit.device_id, claimed)]


def test_a_unit_tells_what_it_shows_and_another_cashier_learns_only_its_kind(shop):
    till1, till2 = shop.agent("till-1"), shop.agent("till-2")
    unit = shop.unit(1)
    shop.link(till1, "till-1", unit)
    sale = till1.post("/api/agents/till-1/qr", {"payload": "upi://pay?am=9.90", "caption": "9.90"})

    mine = till1.get(f"/api/devices/{unit.device_id}")["shown"]
    assert mine["screen"] == "payment" and mine["payload"] == "upi://pay?am=9.90"
    assert (mine["txn_id"], mine["version"]) == (sale["txn_id"], sale["version"])
    (theirs,) = till2.get("/api/devices")["devices"]
    assert set(theirs["shown"]) == {"screen", "at"} and theirs["shown"]["screen"] == "payment"
    assert shop.admin.get("/api/devices")["devices"][0]["shown"]["payload"] == mine["payload"]


def test_stealing_a_linked_unit_is_refused_and_the_owner_stays(shop):
    till1, till2 = shop.agent("till-1"), shop.agent("till-2")
    unit = shop.unit(1)
    pairing = None
    wait_for(lambda: unit.shown)
    pairing = unit.shown[-1][1]
    shop.link(till1, "till-1", unit)
    refused(lambda: till2.post("/api/agents/till-2/devices", {"pairing": pairing}), 409, "conflict")
    refused(
        lambda: shop.admin.post("/api/agents/till-2/devices", {"device_id": unit.device_id}),
        409,
        "conflict",
    )
    assert shop.admin.get(f"/api/devices/{unit.device_id}")["agent_id"] == "till-1"
    till1.post("/api/agents/till-1/qr", {"payload": "still mine"})


def test_an_agent_cannot_act_on_another_agents_unit(shop):
    till1, till2 = shop.agent("till-1"), shop.agent("till-2")
    unit = shop.unit(1)
    shop.link(till1, "till-1", unit)
    refused(lambda: till2.delete(f"/api/agents/till-1/devices/{unit.device_id}"), 403, "forbidden")
    refused(lambda: till2.post("/api/agents/till-1/qr", {"payload": "x"}), 403, "forbidden")
    shown = till1.post("/api/agents/till-1/qr", {"payload": "sale"})
    refused(lambda: till2.post(f"/api/txns/{shown['txn_id']}/cancel"), 403, "forbidden")
    assert shop.admin.get(f"/api/devices/{unit.device_id}")["agent_id"] == "till-1"


def test_refusals_say_why(shop):
    strict = shop.admin.post(
        "/api/locations", {"location_id": "kiosk", "name": "Kiosk", "policy": "strict"}
    )
    assert strict["policy"] == "strict"
    doc = shop.admin.post(
        "/api/agents", {"agent_id": "kiosk-1", "name": "K", "location_id": "kiosk"}
    )
    kiosk = shop.server.client(doc["token"])
    e = refused(lambda: kiosk.post("/api/agents/kiosk-1/qr", {"payload": "x"}), 409, "not_linked")
    assert "kiosk-1" in e.message

    till = shop.agent("till-1")
    unit = shop.unit(1)
    shop.link(till, "till-1", unit)
    shop.stop(unit)
    wait_for(lambda: shop.admin.get(f"/api/devices/{unit.device_id}")["status"] == "offline")
    e = refused(lambda: till.post("/api/agents/till-1/qr", {"payload": "x"}), 503, "device_offline")
    assert "since" in e.message
    _, doc = refusal_body(till, "/api/agents/till-1/qr", {"payload": "x"})
    assert doc["device_ids"] == [unit.device_id] and doc["since"].endswith("Z")  # the facts

    e = refused(lambda: till.post("/api/agents/till-1/qr", {"payload": "9" * 8000}), 400, "invalid")
    e = refused(
        lambda: till.post("/api/agents/till-1/qr", {"payload": "A" * 3900, "ecc": "H"}),
        422,
        "payload_too_large",
    )
    assert "1852" in e.message or "capacity" in e.message.lower() or "fit" in e.message


def test_all_pool_units_busy_says_how_many_wait(shop):
    pool = shop.unit(1)
    till1, till2 = shop.agent("till-1"), shop.agent("till-2")
    wait_for(lambda: pool.shown)
    first = till1.post("/api/agents/till-1/qr", {"payload": "pool sale"})
    assert first["device_id"] == pool.device_id
    e = refused(lambda: till2.post("/api/agents/till-2/qr", {"payload": "x"}), 503, "all_busy")
    assert "busy" in e.message
    status, doc = refusal_body(till2, "/api/agents/till-2/qr", {"payload": "x"})
    assert status == 503
    assert doc == {
        "error": "all_busy",
        "message": doc["message"],
        "agent_id": "till-2",
        "busy": 1,
        "waiting": 0,
    }


def test_complete_and_cancel_raced_one_wins_and_the_unit_shows_its_result(shop):
    till = shop.agent("till-1")
    unit = shop.unit(1, kind=ResultUnit)
    shop.link(till, "till-1", unit)

    async def race(txn_id):
        return await asyncio.gather(
            asyncio.to_thread(till.post, f"/api/txns/{txn_id}/complete"),
            asyncio.to_thread(till.post, f"/api/txns/{txn_id}/cancel"),
            return_exceptions=True,
        )

    for n in range(8):
        txn_id = till.post("/api/agents/till-1/qr", {"payload": f"sale {n}"})["txn_id"]
        outcomes = asyncio.run(race(txn_id))
        (won,) = [o for o in outcomes if isinstance(o, dict)]
        (lost,) = [o for o in outcomes if isinstance(o, ApiClientError)]
        assert (lost.status, lost.code) == (404, "not_found")  # already finished
        assert won["shown"] is True
        assert unit.result == won["result"]


def test_a_waiting_sale_shows_its_qr_after_the_result_of_the_sale_it_waited_for(shop):
    pool = shop.unit(1)
    till1, till2 = shop.agent("till-1"), shop.agent("till-2")
    wait_for(lambda: pool.shown)
    first = till1.post("/api/agents/till-1/qr", {"payload": "first sale"})
    waited = {}
    waiter = threading.Thread(
        target=lambda: waited.update(
            till2.post("/api/agents/till-2/qr", {"payload": "next sale", "wait_s": 10})
        )
    )
    waiter.start()
    time.sleep(0.5)  # till-2 queues for the unit
    till1.post(f"/api/txns/{first['txn_id']}/complete")
    waiter.join(15)
    assert waited["device_id"] == pool.device_id
    assert pool.screen == "payment" and pool.shown[-1] == ("payment", "next sale")


def test_bad_tokens_malformed_json_and_oversized_bodies_change_nothing(shop):
    unit = shop.unit(1)
    before = shop.admin.get("/api/devices")
    refused(lambda: ApiClient(shop.server.url).get("/api/devices"), 401, "unauthorized")
    refused(lambda: ApiClient(shop.server.url, "nope").get("/api/devices"), 401, "unauthorized")
    till = shop.agent("till-1")
    refused(
        lambda: till.post("/api/agents", {"agent_id": "x", "name": "x", "location_id": "shop-1"}),
        403,
        "forbidden",
    )

    def raw(body, headers=None):
        req = urllib.request.Request(
            shop.server.url + "/api/agents/till-1/devices", data=body, method="POST"
        )
        req.add_header("Authorization", f"Bearer {shop.server.admin_token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            urllib.request.urlopen(req, timeout=10)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
        raise AssertionError("accepted")

    status, doc = raw(b'{"pairing": ')
    assert (status, doc["error"]) == (400, "bad_json")
    status, doc = raw(b"[1, 2]")
    assert (status, doc["error"]) == (400, "bad_json")
    status, doc = raw(b"x" * (64 * 1024 + 1))
    assert (status, doc["error"]) == (413, "body_too_large")
    after = shop.admin.get("/api/devices")
    assert [d["agent_id"] for d in after["devices"]] == [d["agent_id"] for d in before["devices"]]
    assert unit.online


def test_audit_takes_a_percent_encoded_query_and_refuses_a_malformed_one(shop):
    till = shop.agent("till-1")
    unit = shop.unit(1)
    shop.link(till, "till-1", unit)
    entries = shop.admin.get(f"/api/audit?agent_id=till%2D1&device_id={unit.device_id}")["audit"]
    # The link, then the idle screen the unit shows its new owner.
    assert [e["action"] for e in entries][:2] == ["link", "screen"]
    assert {(e["agent_id"], e["device_id"]) for e in entries} == {("till-1", unit.device_id)}
    assert shop.admin.get("/api/audit?agent_id=till-2")["audit"] == []
    refused(lambda: shop.admin.get("/api/audit?agent_id=%ff"), 400, "bad_query")
    refused(lambda: shop.admin.get("/api/audit?agent_id=a&agent_id=b"), 400, "bad_query")


def test_a_malformed_http_head_gets_a_json_400(server):
    host, port = server.url[len("http://") :].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /api/health HTTP/1.0\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 505") and b'"error"' in reply


def test_a_known_unit_moves_location_without_resending_its_secret(shop):
    unit = shop.unit(1)
    shop.admin.post("/api/locations", {"location_id": "shop-2", "name": "Shop 2"})
    moved = shop.admin.post("/api/devices", {"device_id": unit.device_id, "location_id": "shop-2"})
    assert moved["location_id"] == "shop-2" and moved["status"] == "online"
    refused(
        lambda: shop.admin.post("/api/devices", {"device_id": "qrf-0000000000ff"}), 400, "invalid"
    )


def test_a_bad_websocket_upgrade_is_refused_with_400(server):
    host, port = server.url[len("http://") :].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /ws/device HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400")
