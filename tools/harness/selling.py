"""Cashiers selling through a cluster as cashier systems do, for the failover benchmark and the
harness's failover scenarios.

A cashier loops: it posts a QR through a random instance with an `Idempotency-Key` of its own,
then completes the sale (every `CANCEL_EVERY`th: cancels it), with a key of its own too. An
attempt that gets no answer within `ATTEMPT_TIMEOUT_S`, loses its connection or is refused
with a transient error is repeated with the same key and body through a random instance, until
the step's `STEP_DEADLINE_S`; then the cashier gives the sale up and starts the next one.

What each cashier records: the time of every verified QR, every refusal with its time and
code ("unreachable" for no answer), and the transaction each key was answered with, so that
a report can tell the longest gap between QRs, the refusals after a failure, and whether a
retried request was ever applied twice.
"""

import random
import signal
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from host.client import ApiClient, ApiClientError

ATTEMPT_TIMEOUT_S = 1.0
STEP_DEADLINE_S = 10.0
RETRY_PAUSE_S = 0.05
CANCEL_EVERY = 5
# Refusals a cashier system retries with the same key; any other ends the sale.
TRANSIENT = {
    "unreachable",
    "all_busy",
    "device_offline",
    "device_timeout",
    "store_unavailable",
    "encoder_busy",
    "internal",
}


@dataclass
class Sales:
    agent_id: str
    device_id: str
    shown: list = field(default_factory=list)  # monotonic times of verified QRs
    refusals: list = field(default_factory=list)  # (monotonic time, error code)
    txns: dict = field(default_factory=dict)  # Idempotency-Key -> {txn_id answered}

    def longest_gap(self, start, end):
        """The longest time in [start, end] without a verified QR."""
        times = [start, *(t for t in self.shown if start < t < end), end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def first_qr_after(self, t):
        return next((s for s in self.shown if s > t), None)

    def refused_after(self, t):
        return Counter(code for at, code in self.refusals if at > t)


class Cashier:
    def __init__(self, agent_id, device_id, token, urls):
        """`urls`: a callable -> the instances' base URLs to pick from."""
        self.agent_id = agent_id
        self.token = token
        self.urls = urls
        self.sales = Sales(agent_id, device_id)

    def _attempt(self, path, body, key):
        api = ApiClient(random.choice(self.urls()), self.token, timeout=ATTEMPT_TIMEOUT_S)
        return api.post(path, body, {"Idempotency-Key": key})

    def _step(self, path, body, stop):
        """One request, repeated with its key until answered -> the answer, or None."""
        key = uuid.uuid4().hex
        deadline = time.monotonic() + STEP_DEADLINE_S
        while time.monotonic() < deadline and not stop.is_set():
            try:
                answer = self._attempt(path, body, key)
            except ApiClientError as e:
                self.sales.refusals.append((time.monotonic(), e.code))
                if e.code not in TRANSIENT:
                    return None
                time.sleep(RETRY_PAUSE_S)
                continue
            if "txn_id" in answer:
                self.sales.txns.setdefault(key, set()).add(answer["txn_id"])
            return answer
        return None

    def sell(self, stop):
        n = 0
        while not stop.is_set():
            n += 1
            payload = f"upi://pay?pa=shop@bank&tn={self.agent_id}-{n}"
            shown = self._step(f"/api/agents/{self.agent_id}/qr", {"payload": payload}, stop)
            if shown is None:
                continue
            if shown.get("verified"):
                self.sales.shown.append(time.monotonic())
            end = "cancel" if n % CANCEL_EVERY == 0 else "complete"
            self._step(f"/api/txns/{shown['txn_id']}/{end}", {}, stop)


class Selling:
    """Cashiers selling in threads of their own until `stop()`."""

    def __init__(self, cashiers):
        self.cashiers = cashiers
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=c.sell, args=(self._stop,)) for c in cashiers]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return [c.sales for c in self.cashiers]

    def __exit__(self, *exc_info):
        self.stop()


FAILURES = ("kill", "stop", "valkey")


def fail(failure, servers, victim, valkey, heartbeat_s):
    """Inject one failure into a cluster: SIGKILL of the instance `victim` ("kill"), SIGSTOP of
    it past its units' lease then SIGCONT ("stop"), or Valkey killed and started again a second
    later ("valkey") -> (what happened, when the system may recover, as time.monotonic()): the
    kill; the lease running out; Valkey answering again."""
    if failure == "valkey":
        valkey.restart(kill=True, down_s=1)
        return "Valkey killed, started 1 s later", time.monotonic()
    process = servers[victim].process
    if failure == "kill":
        process.send_signal(signal.SIGKILL)
        return f"SIGKILL of {victim}", time.monotonic()
    lease_s = 3 * heartbeat_s
    process.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    time.sleep(lease_s + 2)
    process.send_signal(signal.SIGCONT)
    return f"SIGSTOP of {victim} for {lease_s + 2} s", stopped_at + lease_s


def applied_twice(sales):
    """Keys answered with more than one transaction: a retry applied again."""
    return {key: txns for s in sales for key, txns in s.txns.items() if len(txns) > 1}


def reserved_twice(audit):
    """Audit entries that reserved a unit still reserved by another live transaction."""
    reserved, wrong = {}, []
    for entry in audit:
        unit = entry["device_id"]
        if entry["action"] == "reserve":
            if reserved.get(unit) not in (None, entry["txn_id"]):
                wrong.append(entry)
            reserved[unit] = entry["txn_id"]
        elif entry["action"] in ("complete", "cancel", "expire", "release", "superseded"):
            if reserved.get(unit) == entry["txn_id"]:
                reserved[unit] = None
    return wrong
