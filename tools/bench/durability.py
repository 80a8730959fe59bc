"""Durability across a Valkey failover: what waiting for a replica costs, and what a failover
costs the cashiers.

    .venv/bin/python -m tools.bench.durability [--requests 300] [--runs 5]

Latency: one `qrfleet serve` with one simulated unit on a replicated Valkey (a primary, two
replicas, one Sentinel), first on the primary as a plain `redis://` store (nothing waits for a
replica), then behind the Sentinel with `min_replicas=0` (nothing waits either), then as a
`redis+sentinel://` store as it comes (a change that must outlive a failover waits for one
replica, WAIT 1, and the Sentinel is asked whether the server is still the primary), on the
same servers, one request at a time: p50/p99 of an admin's link, of a cashier's QR request
(reserve, show, verify) and of its completion.

Failover: `--runs` times, a fresh replicated Valkey, three instances on it behind the
Sentinel, six simulated units with a cashier each (tools/harness/selling.py: post, then
complete or cancel, retrying with the same `Idempotency-Key`) and an admin moving two spare
units between clerks (`Linker`); the primary is SIGKILLed after `--before` seconds and they
go on for `--after`. Per cashier: the time from the kill to its next verified QR, and its
longest gap without one across the failover; and what the API acknowledged that the store
lost (`lost`, must be nothing).

`Shop`, `Linker` and `lost` are also the failover tests' (tests/host/test_failover_durability.py).
A report, not a test: nothing is asserted.
"""

import argparse
import asyncio
import itertools
import json
import random
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from host.client import ApiClient, ApiClientError
from tools import provision
from tools.background import BackgroundLoop, wait_for
from tools.bench.stats import p50_p99_max
from tools.harness.selling import (
    ATTEMPT_TIMEOUT_S,
    RETRY_PAUSE_S,
    STEP_DEADLINE_S,
    TRANSIENT,
    Cashier,
    Selling,
    applied_twice,
    reserved_twice,
)
from tools.serverproc import running_server
from tools.simdevice import SimulatedUnit
from tools.valkey import ReplicatedValkey

TOKEN = "durability-admin"
LOCATION = "shop"
CLERK = "clerk"
DOWN_AFTER_MS = 1000
LINK_PAUSE_S = 0.02
STOP_UNITS_S = 10.0


class RecordingCashier(Cashier):
    """A cashier that also keeps what the API acknowledged: ("reserve", txn_id) for every QR
    shown, ("complete" or "cancel", txn_id) for every sale it ended."""

    def __init__(self, *args):
        super().__init__(*args)
        self.acknowledged = []

    def _step(self, path, body, stop):
        answer = super()._step(path, body, stop)
        if answer is not None:
            action = "reserve" if path.endswith("/qr") else path.rpartition("/")[2]
            self.acknowledged.append((action, answer["txn_id"]))
        return answer


class Shop:
    """`instances` `qrfleet serve` processes on the store at `store_url`, a strict location with
    `units` simulated units each linked to a cashier of its own, `spares` registered units
    (offline, for the back office to link) and a clerk."""

    def __init__(self, stack, directory, store_url, units=6, spares=2, instances=3, heartbeat_s=1):
        self.servers = {}
        for n in range(1, instances + 1):
            server_id = f"s{n}"
            (directory / server_id).mkdir(parents=True)
            self.servers[server_id] = stack.enter_context(
                running_server(
                    directory / server_id,
                    TOKEN,
                    store=store_url,
                    server_id=server_id,
                    heartbeat_s=heartbeat_s,
                )
            )
        admin = self.admin()
        admin.post("/api/locations", {"location_id": LOCATION, "name": "Shop", "policy": "strict"})
        admin.post("/api/agents", {"agent_id": CLERK, "name": CLERK, "location_id": LOCATION})
        loop = BackgroundLoop()
        stack.callback(loop.close)
        device_urls = [s.device_url for s in self.servers.values()]
        self.units, self.cashiers, self.spares = [], [], []
        for i in range(units + spares):
            device_id = f"qrf-durab{i:07x}"
            secret = provision.new_secret()
            admin.post(
                "/api/devices", {"device_id": device_id, "secret": secret, "location_id": LOCATION}
            )
            if i >= units:
                self.spares.append(device_id)
                continue
            unit = SimulatedUnit(device_id, secret, device_urls)
            loop.call(unit.start)
            self.units.append(unit)
            agent_id = f"till-{i}"
            token = admin.post(
                "/api/agents", {"agent_id": agent_id, "name": agent_id, "location_id": LOCATION}
            )["token"]
            admin.post(f"/api/agents/{agent_id}/devices", {"device_id": device_id})
            self.cashiers.append(RecordingCashier(agent_id, device_id, token, self.urls))
        stack.callback(lambda: loop.run(_stop_units(self.units), STOP_UNITS_S + 1))
        wait_for(lambda: all(u.online for u in self.units), 60, "units online")

    def urls(self):
        return [s.url for s in self.servers.values()]

    def admin(self):
        return ApiClient(random.choice(self.urls()), TOKEN, timeout=15)

    def audit(self, device_id):
        return self.admin().get(f"/api/audit?device_id={device_id}&limit=10000")["audit"]

    def granted_epochs(self):
        """(device_id, epoch) of every session an instance started (its `device_online` log
        line: written once the registry granted the epoch), over all instances."""
        granted = []
        for server in self.servers.values():
            with open(server.log_path) as log:
                for line in log:
                    event = json.loads(line)
                    if event.get("event") == "device_online":
                        granted.append((event["device_id"], event["epoch"]))
        return granted


async def _stop_units(units):
    await asyncio.wait([asyncio.ensure_future(u.stop()) for u in units], timeout=STOP_UNITS_S)


class Linker:
    """A back office at work through random instances until stopped: for each spare unit in
    turn, two new clerks, a link of the unit to the first, a transfer to the second, an unlink;
    `LINK_PAUSE_S` between steps. A step refused with a transient error is repeated until
    `STEP_DEADLINE_S`; one refused otherwise (an earlier attempt may have stood after all, or
    a step before it did not) is skipped, and the next round starts afresh.

    Keeps what the API acknowledged: the clerks (`agents`) and, per unit, the owner each
    acknowledged link, transfer or unlink left it with, in order (`owners`; every clerk is
    new, so that order is exact), and whether a step was tried after the last acknowledged
    one (`tried_since`: then the unit's owner may be either)."""

    def __init__(self, shop):
        self.shop = shop
        self.agents = []
        self.owners = {unit: [] for unit in shop.spares}
        self.tried_since = dict.fromkeys(shop.spares, False)
        self._rounds = itertools.count()  # run again, it carries on with new clerks

    def run(self, stop):
        for k in self._rounds:
            for unit in self.shop.spares:
                first, second = f"{unit}-{k}-a", f"{unit}-{k}-b"
                for agent_id in (first, second):
                    body = {"agent_id": agent_id, "name": agent_id, "location_id": LOCATION}
                    if self._step(stop, "POST", "/api/agents", body):
                        self.agents.append(agent_id)
                steps = [
                    (first, "POST", f"/api/agents/{first}/devices", {"device_id": unit}),
                    (second, "POST", f"/api/devices/{unit}/transfer", {"agent_id": second}),
                    (None, "DELETE", f"/api/agents/{second}/devices/{unit}", None),
                ]
                for owner, method, path, body in steps:
                    self.tried_since[unit] = True
                    if self._step(stop, method, path, body):
                        self.owners[unit].append(owner)
                        self.tried_since[unit] = False
                if stop.is_set():
                    return

    def _step(self, stop, method, path, body):
        """-> True once acknowledged."""
        time.sleep(LINK_PAUSE_S)
        deadline = time.monotonic() + STEP_DEADLINE_S
        while time.monotonic() < deadline and not stop.is_set():
            api = ApiClient(random.choice(self.shop.urls()), TOKEN, timeout=ATTEMPT_TIMEOUT_S)
            try:
                api.request(method, path, body)
                return True
            except ApiClientError as e:
                if e.code not in TRANSIENT:
                    return False
                time.sleep(RETRY_PAUSE_S)
        return False


def _in_order(acknowledged, timeline):
    """Is every acknowledged state in the timeline, in the same order (one state of the
    timeline may stand for several acknowledged in a row)?"""
    i = 0
    for state in acknowledged:
        while i < len(timeline) and timeline[i] != state:
            i += 1
        if i == len(timeline):
            return False
    return True


def lost(shop, cashiers, linker):
    """What the store lost or broke of what the API acknowledged, read back through the API
    once the store is settled -> {what: [instances]}, every list empty when nothing was lost:

    - transactions: a QR shown (its `reserve` or `retry`) or a sale completed or cancelled,
      acknowledged, with no such entry in the audit;
    - registrations: a clerk acknowledged as created that does not exist;
    - links: a spare unit's owners after its acknowledged links, transfers and unlinks that
      are not, in order, among those its audit shows; or its owner now other than the last
      acknowledged step left it;
    - second owner: a unit linked while the audit says another agent owned it;
    - epochs: a session an instance started whose epoch is not in the audit, or an epoch of a
      unit granted twice;
    - reserved twice: a unit reserved while another live transaction held it (audit);
    - applied twice: a retried request answered with two transactions."""
    admin = shop.admin()
    # Sessions go on starting (units reconnect): only those granted before the audit is read
    # must be in it.
    granted = shop.granted_epochs()
    audits = {unit: shop.audit(unit) for unit in [u.device_id for u in shop.units] + shop.spares}
    found = {name: [] for name in ("transactions", "registrations", "links", "second owner")}

    done = {(e["action"], e["txn_id"]) for entries in audits.values() for e in entries}
    for cashier in cashiers:
        for action, txn_id in cashier.acknowledged:
            retried = action == "reserve" and ("retry", txn_id) in done
            if (action, txn_id) not in done and not retried:
                found["transactions"].append((cashier.agent_id, action, txn_id))

    agents = {a["agent_id"] for a in admin.get("/api/agents")["agents"]}
    found["registrations"] = [a for a in linker.agents if a not in agents]

    devices = {d["device_id"]: d for d in admin.get("/api/devices")["devices"]}
    for unit, entries in audits.items():
        owner, timeline = None, []
        for e in entries:
            if e["action"] == "link" and owner not in (None, e["agent_id"]):
                found["second owner"].append(e)
            if e["action"] in ("link", "transfer", "unlink"):
                owner = None if e["action"] == "unlink" else e["agent_id"]
                timeline.append(owner)
        if unit not in linker.owners:
            continue
        if not _in_order(linker.owners[unit], timeline):
            found["links"].append((unit, "acknowledged owners missing from the audit"))
        if linker.owners[unit] and not linker.tried_since[unit]:
            now, expected = devices[unit]["agent_id"], linker.owners[unit][-1]
            if now != expected:
                found["links"].append((unit, f"owned by {now}, acknowledged {expected}"))

    sessions = {
        (e["device_id"], e["detail"])
        for entries in audits.values()
        for e in entries
        if e["action"] == "session"
    }
    found["epochs"] = [
        (*g, "not in the audit") for g in granted if (g[0], f"epoch {g[1]}") not in sessions
    ]
    found["epochs"] += [(*g, "granted twice") for g, n in Counter(granted).items() if n > 1]

    found["reserved twice"] = reserved_twice([e for es in audits.values() for e in es])
    found["applied twice"] = list(applied_twice([c.sales for c in cashiers]).items())
    return found


# Latency


def _latencies(store_url, directory, requests):
    """-> {operation: [seconds]} for one server with one unit on the store at `store_url`."""
    with ExitStack() as stack:
        shop = Shop(stack, directory, store_url, units=1, spares=1, instances=1)
        admin, cashier, spare = shop.admin(), shop.cashiers[0], shop.spares[0]
        till = ApiClient(shop.urls()[0], cashier.token, timeout=15)
        times = {"link": [], "qr": [], "complete": []}
        for n in range(requests):
            started = time.perf_counter()
            admin.post(f"/api/agents/{CLERK}/devices", {"device_id": spare})
            times["link"].append(time.perf_counter() - started)
            admin.delete(f"/api/agents/{CLERK}/devices/{spare}")
            started = time.perf_counter()
            shown = till.post(f"/api/agents/{cashier.agent_id}/qr", {"payload": f"sale {n}"})
            times["qr"].append(time.perf_counter() - started)
            started = time.perf_counter()
            till.post(f"/api/txns/{shown['txn_id']}/complete")
            times["complete"].append(time.perf_counter() - started)
        times["qr + complete"] = [
            a + b for a, b in zip(times["qr"], times["complete"], strict=True)
        ]
        return times


def latency(args):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with ReplicatedValkey(tmp / "valkey", replicas=2, down_after_ms=DOWN_AFTER_MS) as valkeys:
            stores = {
                "redis:// (no wait)": valkeys.primary.url(db=1),
                "sentinel, min_replicas=0": valkeys.url(db=2, min_replicas=0),
                "redis+sentinel:// (WAIT 1)": valkeys.url(db=3),
            }
            measured = {
                name: _latencies(url, tmp / f"latency-{n}", args.requests)
                for n, (name, url) in enumerate(stores.items())
            }
    print(
        f"Latency, one request at a time, {args.requests} each: one instance, one simulated "
        "unit, a primary with two replicas on loopback"
    )
    names = list(measured)
    print(f"{'':<16}" + "".join(f"{name:>34}" for name in names))
    for operation in measured[names[0]]:
        cells = []
        for name in names:
            p50, p99, _ = p50_p99_max(measured[name][operation])
            cells.append(f"p50 {p50 * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms")
        print(f"{operation:<16}" + "".join(f"{cell:>34}" for cell in cells))


# Failover


def failover_once(args, tmp):
    """One run -> (seconds from the kill to each cashier's next verified QR, each cashier's
    longest gap without one, refusals after the kill, what was lost)."""
    with ExitStack() as stack:
        valkeys = stack.enter_context(
            ReplicatedValkey(tmp / "valkey", replicas=2, down_after_ms=DOWN_AFTER_MS)
        )
        shop = Shop(stack, tmp, valkeys.url())
        linker = Linker(shop)
        stop = threading.Event()
        linking = threading.Thread(target=linker.run, args=(stop,))
        linking.start()
        try:
            with Selling(shop.cashiers) as selling:
                time.sleep(args.before)
                killed = time.monotonic()
                valkeys.primary.stop(kill=True)
                time.sleep(args.after)
                sales = selling.stop()
                ended = time.monotonic()
        finally:
            stop.set()
            linking.join()
        valkeys.wait_settled()
        back = [(s.first_qr_after(killed) or ended) - killed for s in sales]
        gaps = [s.longest_gap(killed - args.before / 2, ended) for s in sales]
        refused = sum((s.refused_after(killed) for s in sales), Counter())
        return back, gaps, refused, lost(shop, shop.cashiers, linker)


def failover(args):
    back, gaps, refused, losses = [], [], Counter(), Counter()
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            b, g, r, found = failover_once(args, Path(tmp))
        back += b
        gaps += g
        refused += r
        losses.update({what: len(items) for what, items in found.items()})
    print(
        f"\nFailover: {args.runs} runs x {len(back) // args.runs} cashiers; three instances "
        f"behind one Sentinel (down-after {DOWN_AFTER_MS} ms), the primary SIGKILLed after "
        f"{args.before:g} s of selling, {args.after:g} s after"
    )
    for name, values in (
        ("kill -> the cashier's next verified QR", back),
        ("longest gap without a verified QR", gaps),
    ):
        p50, p99, top = p50_p99_max(values)
        print(f"{name:<44} p50 {p50:5.2f} s   p99 {p99:5.2f} s   max {top:5.2f} s")
    print(f"{'refusals after the kill':<44} {dict(sorted(refused.items())) or 'none'}")
    print(f"{'acknowledged, then lost or broken':<44} {dict(sorted(losses.items()))}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per store")
    parser.add_argument("--runs", type=int, default=5, help="failover runs (at least 5)")
    parser.add_argument("--before", type=float, default=3.0, help="selling before the kill")
    parser.add_argument("--after", type=float, default=8.0, help="selling after it")
    args = parser.parse_args(argv)
    latency(args)
    failover(args)


if __name__ == "__main__":
    main()
