"""`GET /metrics` on a running `qrfleet serve`, read as Prometheus reads it."""

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from firmware.proto.messages import CommandError
from tests.conftest import wait_for
from tests.host.test_api import refused
from tests.host.test_events import EventStream
from tools.serverproc import read_url, running_server
from tools.simdevice import SimulatedUnit


def scrape(url, token=None):
    """The metrics at `url` -> {family name: family}; an HTTP refusal raises HTTPError."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families, name, sample=None, **labels):
    """The value of the sample `sample` (default: `name`) with exactly `labels`; 0 if absent."""
    sample = sample or name
    for s in families[name].samples:
        if s.name == sample and s.labels == labels:
            return s.value
    return 0


def refusal_status(url, token=None):
    with pytest.raises(urllib.error.HTTPError) as info:
        scrape(url, token)
    return info.value.code


def test_a_scrape_shows_the_qrs_commands_units_and_refusals_an_operator_looks_for(shop):
    till = shop.agent("till-1")
    unit = shop.unit(1)
    shop.link(till, "till-1", unit)
    till.post("/api/agents/till-1/qr", {"payload": "upi://pay?pa=shop@bank&am=12.50"})
    refused(
        lambda: till.post("/api/agents/till-1/qr", {"payload": "x" * 4090}),
        422,
        "payload_too_large",
    )
    refused(lambda: shop.admin.post("/api/agents/nobody/qr", {"payload": "p"}), 404, "not_found")
    url = shop.server.url + "/metrics"
    stream = EventStream(shop.server.url, till.token)  # a cashier system following its events

    wait_for(
        lambda: value(
            scrape(url, shop.server.admin_token), "qrfleet_heartbeats", "qrfleet_heartbeats_total"
        ),
        what="a heartbeat to be counted",
    )
    m = scrape(url, shop.server.admin_token)

    qr = "qrfleet_qr_request_duration_seconds"
    counts = {s.labels["outcome"]: s.value for s in m[qr].samples if s.name == f"{qr}_count"}
    assert counts == {"shown": 1, "payload_too_large": 1, "not_found": 1}
    assert value(m, qr, f"{qr}_bucket", outcome="shown", le="+Inf") == 1
    assert value(m, "qrfleet_commands", "qrfleet_commands_total", kind="show_qr", result="ack") == 1
    assert value(m, "qrfleet_units_online", location="shop-1") == 1
    assert value(m, "qrfleet_reservations", location="shop-1") == 1  # the sale is not finished
    assert value(m, "qrfleet_queue_length", location="shop-1") == 0
    for code in ("payload_too_large", "not_found"):
        assert value(m, "qrfleet_refusals", "qrfleet_refusals_total", code=code) == 1
    assert value(m, "qrfleet_unit_sessions", "qrfleet_unit_sessions_total") == 1
    assert value(m, "qrfleet_event_streams") == 1
    stream.close()
    assert (
        value(
            m,
            "qrfleet_store_operation_duration_seconds",
            "qrfleet_store_operation_duration_seconds_count",
            operation="write",
        )
        > 0
    )

    # Nothing names a unit: a fleet of tens of thousands would be as many series.
    labels = {(k, v) for family in m.values() for s in family.samples for k, v in s.labels.items()}
    assert not {k for k, _ in labels} & {"device_id", "device", "unit"}
    assert unit.device_id not in {v for _, v in labels}

    # The JSON figures are still there.
    assert shop.admin.get("/api/metrics")["refusals"]["payload_too_large"] == 1


class GremlinUnit(SimulatedUnit):
    """Refuses every QR with an error code of its own making (a unit may send any 1-32 chars)."""

    def handle(self, msg):
        if msg["type"] == "show_qr":
            raise CommandError("gremlins", "a code no firmware of ours sends")
        return super().handle(msg)


def test_an_error_code_a_unit_made_up_is_counted_as_unit_error(shop):
    till = shop.agent("till-1")
    shop.link(till, "till-1", shop.unit(1, kind=GremlinUnit))
    # The cashier system still hears what the unit said.
    refused(lambda: till.post("/api/agents/till-1/qr", {"payload": "upi://pay"}), 502, "gremlins")

    m = scrape(shop.server.url + "/metrics", shop.server.admin_token)

    qr = "qrfleet_qr_request_duration_seconds"
    counts = {s.labels["outcome"]: s.value for s in m[qr].samples if s.name == f"{qr}_count"}
    assert counts == {"unit_error": 1}
    refusals = {s.labels["code"]: s.value for s in m["qrfleet_refusals"].samples}
    assert refusals == {"unit_error": 1}
    commands = "qrfleet_commands", "qrfleet_commands_total"
    assert value(m, *commands, kind="show_qr", result="unit_error") == 1


def test_a_scrape_needs_the_admin_or_metrics_token(tmp_path, shop):
    url = shop.server.url + "/metrics"
    assert refusal_status(url) == 401
    assert refusal_status(url, "not-the-token") == 401
    agent_token = shop.admin.post(
        "/api/agents", {"agent_id": "till-1", "name": "Till", "location_id": "shop-1"}
    )["token"]
    assert refusal_status(url, agent_token) == 401

    with running_server(tmp_path, extra=["--metrics-token", "scraper"]) as server:
        url = server.url + "/metrics"
        assert "qrfleet_heartbeats" in scrape(url, "scraper")
        assert "qrfleet_heartbeats" in scrape(url, server.admin_token)
        assert refusal_status(url) == 401


def test_metrics_on_their_own_address_need_no_token_unless_one_is_set(tmp_path):
    with running_server(tmp_path, extra=["--metrics-listen", "127.0.0.1:0"]) as server:
        line = read_url(server.process)
        assert line.startswith("metrics: http://127.0.0.1:")
        listener = line.split()[1]
        assert "qrfleet_units_online" in scrape(listener)
        assert refusal_status(server.url + "/metrics") == 401  # the API's port still asks
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(listener.replace("/metrics", "/api/health"), timeout=10)
        assert info.value.code == 404  # nothing else is served there

    (tmp_path / "second").mkdir()
    extra = ["--metrics-listen", "127.0.0.1:0", "--metrics-token", "scraper"]
    with running_server(tmp_path / "second", extra=extra) as server:
        listener = read_url(server.process).split()[1]
        assert refusal_status(listener) == 401
        assert "qrfleet_units_online" in scrape(listener, "scraper")
