"""A cashier who abuses the API, on a running `qrfleet serve`: what the other users notice."""

import json
import random
import statistics
import threading
import time
import urllib.error
import urllib.request

import pytest

from host.client import ApiClientError
from tests.conftest import wait_for
from tools.hostile_agents import BlankUnit, large_ecc_h_payload


def refused(call, status, code):
    with pytest.raises(ApiClientError) as info:
        call()
    assert (info.value.status, info.value.code) == (status, code), info.value
    return info.value


def answer(client, path):
    """Status and whole JSON body of a GET, refused or not."""
    req = urllib.request.Request(client.base_url + path)
    req.add_header("Authorization", f"Bearer {client.token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def pool_unit(shop):
    unit = shop.unit(1)
    wait_for(lambda: unit.shown and unit.shown[-1][0] == "pairing", what="the pairing QR")
    return unit


def epoch_of(shop, unit):
    return shop.admin.get(f"/api/devices/{unit.device_id}")["epoch"]


def test_a_message_over_the_units_limit_is_refused_and_the_unit_keeps_its_session(shop):
    till = shop.agent("till-1")
    unit = shop.unit(1)
    shop.link(till, "till-1", unit)
    epoch = epoch_of(shop, unit)

    for payload in ('"' * 2100, "\x01" * 800):  # escaped to 4,200 and 4,800 bytes of JSON
        e = refused(
            lambda p=payload: till.post("/api/agents/till-1/qr", {"payload": p}),
            422,
            "payload_too_large",
        )
        assert "4096 bytes" in e.message

    assert shop.admin.get(f"/api/devices/{unit.device_id}")["txn_id"] is None  # nothing held
    shown = till.post("/api/agents/till-1/qr", {"payload": "é" * 800})  # 1,600 bytes as UTF-8
    assert shown["verified"] is True and unit.shown[-1] == ("payment", "é" * 800)
    assert epoch_of(shop, unit) == epoch and unit.online


def test_another_cashiers_qr_stays_fast_while_4_connections_post_large_ecc_h_payloads(shop):
    till = shop.agent("till-1")
    shop.link(till, "till-1", shop.unit(1))
    abuser = shop.agent("abuser")
    shop.link(abuser, "abuser", shop.unit(2, kind=BlankUnit))
    stop = threading.Event()
    attempts = []

    def post_large_payloads(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            body = {"payload": large_ecc_h_payload(rng), "ecc": "H"}
            try:
                abuser.post("/api/agents/abuser/qr", body)
            except ApiClientError as e:
                attempts.append(e.code)

    abusers = [threading.Thread(target=post_large_payloads, args=(n,)) for n in range(4)]
    for thread in abusers:
        thread.start()
    latencies = []
    try:
        wait_for(lambda: "render_failed" in attempts, what="the server to encode a large payload")
        deadline = time.monotonic() + 20
        while len(latencies) < 30 and time.monotonic() < deadline:
            started = time.perf_counter()
            sale = till.post("/api/agents/till-1/qr", {"payload": f"upi://pay?am={len(latencies)}"})
            latencies.append(time.perf_counter() - started)
            till.post(f"/api/txns/{sale['txn_id']}/complete")
    finally:
        stop.set()
        for thread in abusers:
            thread.join(30)

    assert len(latencies) >= 10
    assert statistics.median(latencies) < 0.050, sorted(latencies)
    assert attempts.count("render_failed") >= 2  # the load did reach the encoder


def test_a_link_attempt_on_a_reserved_unit_is_refused_and_the_cashiers_qr_stays(shop):
    unit = pool_unit(shop)
    pairing = unit.shown[-1][1]
    till1, till2 = shop.agent("till-1"), shop.agent("till-2")
    sale = till2.post("/api/agents/till-2/qr", {"payload": "till-2 sale"})

    e = refused(
        lambda: till1.post("/api/agents/till-1/devices", {"pairing": pairing}), 409, "conflict"
    )

    assert "transaction in progress" in e.message
    assert unit.shown[-1] == ("payment", "till-2 sale") and unit.screen == "payment"
    device = shop.admin.get(f"/api/devices/{unit.device_id}")
    assert (device["agent_id"], device["txn_id"]) == (None, sale["txn_id"])


def test_a_pairing_code_shown_before_a_qr_no_longer_links_once_the_unit_left_its_pairing_screen(
    shop,
):
    unit = pool_unit(shop)
    shown_before = unit.shown[-1][1]
    till1, till2 = shop.agent("till-1"), shop.agent("till-2")
    sale = till2.post("/api/agents/till-2/qr", {"payload": "till-2 sale"})
    till2.post(f"/api/txns/{sale['txn_id']}/complete")

    refused(
        lambda: till1.post("/api/agents/till-1/devices", {"pairing": shown_before}),
        403,
        "pairing_rejected",
    )

    wait_for(lambda: unit.shown[-1][0] == "pairing", timeout=15, what="the unit back home")
    assert unit.shown[-1][1] != shown_before
    assert (
        till1.post("/api/agents/till-1/devices", {"pairing": unit.shown[-1][1]})["agent_id"]
        == "till-1"
    )


def test_reads_from_another_location_answer_404_without_details(shop):
    till = shop.agent("till-1")
    unit = shop.unit(1)
    shop.link(till, "till-1", unit)
    sale = till.post("/api/agents/till-1/qr", {"payload": "sale"})
    shop.admin.post("/api/locations", {"location_id": "shop-2", "name": "Other shop"})
    token = shop.admin.post(
        "/api/agents", {"agent_id": "stranger", "name": "S", "location_id": "shop-2"}
    )["token"]
    stranger = shop.server.client(token)

    for path in (f"/api/devices/{unit.device_id}", f"/api/txns/{sale['txn_id']}"):
        status, doc = answer(stranger, path)
        assert status == 404 and set(doc) == {"error", "message"}
        assert "till-1" not in doc["message"] and "shop-1" not in doc["message"]
    _, unknown = answer(stranger, "/api/devices/qrf-ffffffffffff")
    _, hidden = answer(stranger, f"/api/devices/{unit.device_id}")
    assert hidden["message"].replace(unit.device_id, "X") == unknown["message"].replace(
        "qrf-ffffffffffff", "X"
    )
    refused(lambda: stranger.post(f"/api/txns/{sale['txn_id']}/cancel"), 404, "not_found")
    assert answer(till, f"/api/txns/{sale['txn_id']}")[1]["agent_id"] == "till-1"
    assert unit.shown[-1] == ("payment", "sale")


def test_one_cashier_cannot_hold_every_pool_unit(shop):
    units = [shop.unit(n) for n in (1, 2, 3)]
    for unit in units:
        wait_for(lambda u=unit: u.shown, what="the pool to come up")
    greedy, other = shop.agent("greedy"), shop.agent("other")
    hold = {"ttl_s": 3600, "supersede": False}  # keep every earlier sale unfinished
    held = [
        greedy.post("/api/agents/greedy/qr", {"payload": f"hold {n}", **hold}) for n in range(2)
    ]

    e = refused(
        lambda: greedy.post("/api/agents/greedy/qr", {"payload": "one more", **hold}),
        429,
        "reservation_limit",
    )

    assert "2 unfinished" in e.message
    replacing = greedy.post("/api/agents/greedy/qr", {"payload": "replaces one", "ttl_s": 3600})
    assert replacing["device_id"] in {h["device_id"] for h in held}  # holds no more than before
    served = other.post("/api/agents/other/qr", {"payload": "served"})
    assert served["device_id"] not in {h["device_id"] for h in held}
    assert shop.admin.get("/api/metrics")["refusals"]["reservation_limit"] == 1


def test_wrong_pairing_codes_are_throttled_logged_and_counted_and_others_still_link(shop):
    unit = pool_unit(shop)
    right = unit.shown[-1][1]
    wrong = right.rsplit("=", 1)[0] + "=WRONGCOD"
    guesser, cashier = shop.agent("guesser"), shop.agent("cashier")
    for _ in range(5):
        refused(
            lambda: guesser.post("/api/agents/guesser/devices", {"pairing": wrong}),
            403,
            "pairing_rejected",
        )

    e = refused(
        lambda: guesser.post("/api/agents/guesser/devices", {"pairing": right}),
        429,
        "pairing_throttled",
    )

    assert "agent guesser" in e.message and "try again in" in e.message
    refusals = shop.admin.get("/api/metrics")["refusals"]
    assert (refusals["pairing_rejected"], refusals["pairing_throttled"]) == (5, 1)
    with open(shop.server.log_path) as log:
        assert "pairing_throttled" in log.read()
    assert cashier.post("/api/agents/cashier/devices", {"pairing": right})["agent_id"] == "cashier"
