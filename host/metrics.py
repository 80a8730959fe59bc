"""`GET /metrics`: one server's figures in the Prometheus text format, by `prometheus_client`.

Counts are kept where things happen, as plain numbers that `GET /api/metrics` shows too (the
hub's, the HTTP layer's, the API's refusals, the store's retries); a collector turns them into
metric families when Prometheus scrapes. Two histograms are observed as things happen: the
duration of a QR request by outcome, and of each store operation.

A scrape never waits on anything but the store, and on that only as every store call does, off
the event loop: units online per location come from the sessions in memory (a unit's location
is learnt when the server greets it); reservations and queue places per location and units per
instance come from one small read (the records in use, not every unit), at most every
STORE_FIGURES_EVERY_S, and a scrape waits STORE_FIGURES_WAIT_S for it at the most before
taking the last figures read. No label names a unit: a fleet is tens of thousands of them. No
label takes text a unit chose either: the error code answered for a unit's failed command is the
unit's own (any 1-32 characters), and `code_label` turns one the server does not know into
UNIT_ERROR for every metric counted by code. docs/metrics.md lists every metric and how to
protect the endpoint.
"""

import asyncio
import hmac
import time
from collections import Counter

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from firmware.proto import messages
from host.http import ApiError, Body, Router
from host.registry import RegistryError

STORE_FIGURES_EVERY_S = 5.0
STORE_FIGURES_WAIT_S = 1.0
NO_LOCATION = "none"  # a unit registered without a location, or not greeted yet
UNIT_ERROR = "unit_error"  # an error code a unit answered that the server does not know

# QR requests: the target p99 is 100 ms; a request may wait up to api.MAX_WAIT_S in its queue.
QR_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STORE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# Connection and session limits (README, "Limits") by the name of their `limit` label, from the
# HTTP layer's and the hub's counts.
_HTTP_LIMITS = {
    "connections_total": "connections_refused_total_cap",
    "connections_per_peer": "connections_refused_peer_cap",
    "request_timeout": "http_read_timeouts",
    "write_timeout": "http_write_timeouts",
    "tls_handshake": "tls_handshakes_failed",
    "body_size": "bodies_too_large",
    "json_depth": "json_too_deep",
}
_UNIT_LIMITS = {"unit_ping_rate": "ping_floods", "unit_send_timeout": "send_timeouts"}
# Counters of the hub's plain counts: (metric, key in hub.metrics, help).
_UNIT_COUNTS = (
    ("qrfleet_heartbeats", "heartbeats", "Heartbeats received from units."),
    (
        "qrfleet_unit_sessions",
        "sessions_accepted",
        "Unit sessions started (units that passed authentication).",
    ),
    (
        "qrfleet_unit_reconnects",
        "reconnects",
        "Unit sessions started by units that had a session before, here or elsewhere.",
    ),
    (
        "qrfleet_fenced_writes",
        "fenced_writes",
        "Heartbeats refused because a newer session holds the unit (its session is closed).",
    ),
    (
        "qrfleet_fenced_commands",
        "fenced_commands",
        "Commands not sent because a newer session, or another transaction, holds the unit.",
    ),
)
_AUTH_FAILURES = {
    "refused": "auth_refused",
    "bad_mac": "bad_macs",
    "unsupported_version": "unsupported_version",
}


def _registry_codes(error=RegistryError):
    """The codes of the registry's refusals, from its exception tree."""
    return {error.code}.union(*(_registry_codes(sub) for sub in error.__subclasses__()))


# Every error code a label may take: the codes units answer (firmware/proto/messages.py), the
# registry's, and those the HTTP layer and the API answer themselves (host/http.py, host/api.py,
# host/devices.py; "internal" for a server failure). A code added there belongs here too, or it
# counts as UNIT_ERROR.
KNOWN_CODES = frozenset(
    {
        messages.BAD_MESSAGE,
        messages.UNKNOWN_COMMAND,
        messages.PAYLOAD_TOO_LARGE,
        messages.RENDER_FAILED,
        messages.BUSY,
        "bad_json",
        "bad_last_event_id",
        "bad_query",
        "bad_request",
        "body_too_large",
        "device_offline",
        "device_timeout",
        "encoder_busy",
        "internal",
        "method_not_allowed",
        "render_mismatch",
        "request_timeout",
        "server_stopping",
        "too_many_connections",
        "too_many_streams",
    }
    | _registry_codes()
)


def code_label(code):
    """An error code as a label value: the code if the server knows it, else UNIT_ERROR, so
    that the codes units make up do not each start a series (the API's answer keeps them)."""
    return code if code in KNOWN_CODES else UNIT_ERROR


class Metrics:
    """The metrics of one server (`host.server.QrfleetServer`), in a registry of their own:
    several servers may run in one process. `token`, if given, is accepted by `/metrics`
    besides the admin token."""

    def __init__(self, server, token=None):
        self.server = server
        self.token = token
        self.registry = CollectorRegistry(auto_describe=False)
        self.qr_duration = Histogram(
            "qrfleet_qr_request_duration_seconds",
            "POST /api/agents/{agent_id}/qr from its arrival to its answer, by outcome: "
            "shown, or the error code answered.",
            ["outcome"],
            buckets=QR_BUCKETS_S,
            registry=self.registry,
        )
        self.store_duration = Histogram(
            "qrfleet_store_operation_duration_seconds",
            "Registry store operations from the call to the result, waiting for the store's "
            "worker and retries included, by operation: read or write.",
            ["operation"],
            buckets=STORE_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_Figures(self))
        self.occupancy = {}  # location_id -> (reservations, queue places), as last read
        self.instances = {}  # server_id -> units it holds, as last read
        self._read_at = None
        self._reading = None

    def timed_qr(self, handler):
        """`handler` (the QR request's), observed by outcome in the QR duration histogram."""

        async def timed(req):
            started = time.monotonic()
            outcome = "internal"
            try:
                answer = await handler(req)
                outcome = "shown"
                return answer
            except (ApiError, RegistryError) as e:
                outcome = code_label(e.code)
                raise
            finally:
                self.qr_duration.labels(outcome).observe(time.monotonic() - started)

        return timed

    def store_timed(self, operation, seconds):
        self.store_duration.labels(operation).observe(seconds)

    def endpoint(self, token_required=True):
        """The `GET /metrics` handler: on the API's port it needs a token; on a port of its
        own (`--metrics-listen`), only if the operator set a metrics token."""

        async def scrape(req):
            if token_required or self.token:
                self._authorize(req)
            await self._fresh_store_figures()
            return 200, Body(generate_latest(self.registry), CONTENT_TYPE_LATEST)

        return scrape

    def router(self):
        """Routes of a listener that serves only the metrics."""
        router = Router()
        router.add("GET", "/metrics", self.endpoint(token_required=False))
        return router

    def _authorize(self, req):
        token = req.bearer()
        if not token:
            raise ApiError(
                401,
                "unauthorized",
                "Send 'Authorization: Bearer <token>' with the metrics token "
                "(--metrics-token) or the admin token.",
            )
        tokens = [t for t in (self.token, self.server.admin_token) if t]
        if not any(hmac.compare_digest(token.encode(), t.encode()) for t in tokens):
            raise ApiError(401, "unauthorized", "That token is not valid for /metrics.")

    async def _fresh_store_figures(self):
        if self._read_at is not None and time.monotonic() - self._read_at < STORE_FIGURES_EVERY_S:
            return
        if self._reading is None:
            self._reading = self.server.tasks.spawn(self._read_store())
            if self._reading is None:  # the server is closing
                return
        try:
            await asyncio.wait_for(asyncio.shield(self._reading), STORE_FIGURES_WAIT_S)
        except asyncio.TimeoutError:
            pass  # the last figures read now; this read serves a later scrape

    async def _read_store(self):
        registry = self.server.registry
        try:
            self.occupancy = await registry.occupancy()
            self.instances = {i.server_id: i.units for i in await registry.instances()}
            self._read_at = time.monotonic()
        except RegistryError as e:  # the next scrape tries again
            self.server.log.warning("metrics_store_read_failed", reason=str(e))
        finally:
            self._reading = None


def _family(kind, name, doc, samples, labels=()):
    """A metric family from `samples`: (label values, value) pairs."""
    family = kind(name, doc, labels=labels)
    for label_values, value in samples:
        family.add_metric(label_values, value)
    return family


class _Figures:
    """The server's in-memory counts as metric families, read at each scrape."""

    def __init__(self, metrics):
        self.metrics = metrics

    def collect(self):
        metrics = self.metrics
        server = metrics.server
        hub, http, api = server.hub, server.http, server.api
        if hub is None or http is None:  # not started
            return
        counts = hub.metrics

        def counter(name, doc, samples, labels=()):
            return _family(CounterMetricFamily, name, doc, samples, labels)

        def gauge(name, doc, samples, labels=()):
            return _family(GaugeMetricFamily, name, doc, samples, labels)

        yield counter(
            "qrfleet_commands",
            "Commands run on units held by this instance, by kind and result: ack, or why "
            "it failed (device_offline, device_timeout, or the unit's error code).",
            sorted((list(key), n) for key, n in hub.commands.items()),
            ["kind", "result"],
        )
        for name, key, doc in _UNIT_COUNTS:
            yield counter(name, doc, [((), counts[key])])
        yield counter(
            "qrfleet_refusals",
            "API requests refused, by the error code answered.",
            sorted(([code], n) for code, n in api.refusals.items()),
            ["code"],
        )
        limits = [([name], http.metrics[key]) for name, key in _HTTP_LIMITS.items()]
        limits += [([name], counts[key]) for name, key in _UNIT_LIMITS.items()]
        yield counter(
            "qrfleet_limit_hits",
            "Connections and unit sessions refused or closed at a limit, by limit.",
            limits,
            ["limit"],
        )
        yield counter(
            "qrfleet_unit_auth_failures",
            "Units refused at the handshake or closed for a wrong MAC, by reason.",
            [([reason], counts[key]) for reason, key in _AUTH_FAILURES.items()],
            ["reason"],
        )
        listeners = [http] + ([server.metrics_http] if server.metrics_http else [])
        yield counter(
            "qrfleet_accept_errors",
            "Connections the operating system failed to accept (out of descriptors and the like).",
            [((), sum(h.metrics["accept_errors"] for h in listeners))],
        )
        store = server.registry.store
        yield counter(
            "qrfleet_store_retries",
            "Store operations run again after a pause, by reason: busy (SQLite locked), "
            "conflict (Valkey/Redis watched keys changed), outage (Valkey/Redis unreachable).",
            sorted(([reason], n) for reason, n in dict(store.retries).items()),
            ["reason"],
        )
        if server.cluster:
            yield counter(
                "qrfleet_commands_routed",
                "Commands routed between instances: out (for a unit held elsewhere), in.",
                [(["out"], server.cluster.routed_out), (["in"], server.cluster.routed_in)],
                ["direction"],
            )
        online = Counter(dict.fromkeys((loc or NO_LOCATION for loc in metrics.occupancy), 0))
        online.update(s.location_id or NO_LOCATION for s in hub.sessions.values())
        yield gauge(
            "qrfleet_units_online",
            "Units whose session this instance holds, by location.",
            sorted(([location], n) for location, n in online.items()),
            ["location"],
        )
        yield gauge(
            "qrfleet_http_connections",
            "Connections open on the API's port, unit sessions included.",
            [((), http.connections)],
        )
        yield gauge(
            "qrfleet_event_streams",
            "GET /api/events streams open on this instance.",
            [((), server.events.open_streams)],
        )
        yield counter(
            "qrfleet_event_streams_behind",
            "Event streams ended because their client fell too far behind (it resumes with "
            "Last-Event-ID).",
            [((), server.events.ended_behind)],
        )
        occupancy = sorted(
            (location or NO_LOCATION, c) for location, c in metrics.occupancy.items()
        )
        yield gauge(
            "qrfleet_reservations",
            "Units reserved for a transaction, by location, fleet-wide (from the store).",
            [([location], held) for location, (held, _) in occupancy],
            ["location"],
        )
        yield gauge(
            "qrfleet_queue_length",
            "Requests waiting for a free unit, by location, fleet-wide (from the store).",
            [([location], waiting) for location, (_, waiting) in occupancy],
            ["location"],
        )
        yield gauge(
            "qrfleet_instance_units",
            "Units each live instance holds, as it last renewed its presence (from the store).",
            sorted(([server_id], n) for server_id, n in metrics.instances.items()),
            ["server_id"],
        )
