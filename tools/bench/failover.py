"""Failover benchmark: cashiers keep selling while a `qrfleet serve` instance or Valkey fails.

    .venv/bin/python -m tools.bench.failover [--runs 10] [--failure kill,stop,valkey]

Each run starts a fresh cluster: Valkey (journaling every write), three instances on it, one
simulated unit per cashier (the firmware's own session code, tools/simdevice.py) at a strict
location. The cashiers sell through random instances as cashier systems do
(tools/harness/selling.py: post, then complete or cancel, retrying with the same
`Idempotency-Key`) for `--before` seconds, then one failure happens and they sell on for
`--after` seconds:

- kill:   SIGKILL of the instance holding the most units;
- stop:   SIGSTOP of that instance past its lease, then SIGCONT;
- valkey: Valkey killed and started again one second later.

Reported per failure, over every cashier of every run: the time from the failure's end (the
kill; the stopped instance's lease running out; Valkey answering again) to the cashier's next
verified QR, against the target of 3 s; the longest gap between a cashier's verified QRs; the
refusals after the failure by code; `all_busy` answered after a cashier's first QR back; and
the two things that must never happen: a unit reserved twice (from the audit log) and a
retried request applied twice (one key answered with two transactions).
"""

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from host.client import ApiClient
from tools import provision
from tools.background import BackgroundLoop, wait_for
from tools.bench.stats import p50_p99_max
from tools.harness.selling import (
    FAILURES,
    Cashier,
    Selling,
    applied_twice,
    fail,
    reserved_twice,
)
from tools.serverproc import running_server
from tools.simdevice import SimulatedUnit
from tools.valkey import ValkeyServer

TOKEN = "bench-admin"
TARGET_S = 3.0
STOP_UNITS_S = 10.0


def line(name, values, unit="s"):
    p50, p99, top = p50_p99_max(values)
    return f"{name:<44} p50 {p50:6.2f} {unit}   p99 {p99:6.2f} {unit}   max {top:6.2f} {unit}"


class BenchCluster:
    """Valkey, three instances, `units` simulated units each linked to a cashier of its own."""

    def __init__(self, stack, tmp, units, heartbeat_s):
        self.heartbeat_s = heartbeat_s
        self.valkey = ValkeyServer(directory=tmp / "valkey")
        self.valkey.start()
        stack.callback(self.valkey.stop)
        self.servers = {}
        for n in (1, 2, 3):
            (tmp / f"s{n}").mkdir()
            self.servers[f"s{n}"] = stack.enter_context(
                running_server(
                    tmp / f"s{n}",
                    TOKEN,
                    store=self.valkey.url(),
                    server_id=f"s{n}",
                    heartbeat_s=heartbeat_s,
                )
            )
        self.alive = list(self.servers)
        admin = self.admin()
        admin.post("/api/locations", {"location_id": "shop", "name": "Shop", "policy": "strict"})
        loop = BackgroundLoop()
        stack.callback(loop.close)
        urls = [s.device_url for s in self.servers.values()]
        self.units, self.cashiers = [], []
        for i in range(units):
            device_id = f"qrf-bench{i:07x}"
            secret = provision.new_secret()
            admin.post(
                "/api/devices", {"device_id": device_id, "secret": secret, "location_id": "shop"}
            )
            unit = SimulatedUnit(device_id, secret, urls)
            loop.call(unit.start)
            self.units.append(unit)
            agent = f"till-{i}"
            token = admin.post(
                "/api/agents", {"agent_id": agent, "name": agent, "location_id": "shop"}
            )["token"]
            admin.post(f"/api/agents/{agent}/devices", {"device_id": device_id})
            self.cashiers.append(Cashier(agent, device_id, token, self.urls))
        stack.callback(lambda: loop.run(_stop_units(self.units), STOP_UNITS_S + 1))
        wait_for(lambda: all(u.online for u in self.units), 60, "units online")

    def urls(self):
        return [self.servers[s].url for s in self.servers]

    def admin(self):
        return ApiClient(self.servers[self.alive[0]].url, TOKEN, timeout=15)

    def busiest(self):
        held = Counter(d["server_id"] for d in self.admin().get("/api/devices")["devices"])
        return held.most_common(1)[0][0]

    def fail(self, failure):
        """Inject the failure (tools.harness.selling.fail) -> (what, when it may recover)."""
        victim = self.busiest()
        self.alive.remove(victim)  # the admin asks elsewhere from now on
        return fail(failure, self.servers, victim, self.valkey, self.heartbeat_s)

    def audit(self):
        admin = self.admin()
        return [
            entry
            for unit in self.units
            for entry in admin.get(f"/api/audit?device_id={unit.device_id}&limit=10000")["audit"]
        ]


async def _stop_units(units):
    """Stop every unit at once, giving up after STOP_UNITS_S: one unit stuck closing towards
    an instance that was paused must not fail the run's figures."""
    await asyncio.wait([asyncio.ensure_future(u.stop()) for u in units], timeout=STOP_UNITS_S)


def run_once(failure, args):
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        cluster = BenchCluster(stack, Path(tmp), args.units, args.heartbeat)
        with Selling(cluster.cashiers) as selling:
            time.sleep(args.before)
            what, origin = cluster.fail(failure)
            time.sleep(max(0.0, origin + args.after - time.monotonic()))
            sales = selling.stop()
            ended = time.monotonic()
        return what, origin, ended, sales, cluster.audit()


def report(failure, runs, args):
    back, gaps, refused, busy_after = [], [], Counter(), 0
    twice, double_reserved = {}, []
    for _, origin, ended, sales, audit in runs:
        for s in sales:
            first = s.first_qr_after(origin)
            back.append((first if first is not None else ended) - origin)
            gaps.append(s.longest_gap(origin - args.before / 2, ended))
            refused += s.refused_after(origin)
            if first is not None:
                busy_after += s.refused_after(first)["all_busy"]
        twice.update(applied_twice(sales))
        double_reserved += reserved_twice(audit)
    never = sum(b >= args.after for b in back)
    print(f"{failure}: {runs[0][0]}; {len(runs)} runs x {args.units} cashiers")
    print(line("failure -> the cashier's next verified QR", back))
    print(line("longest gap between a cashier's QRs", gaps))
    print(f"{'cashiers with no QR until the run ended':<44} {never}")
    print(f"{'refusals after the failure':<44} {dict(sorted(refused.items())) or 'none'}")
    print(f"{'all_busy after a cashier was served again':<44} {busy_after}")
    print(f"{'units reserved twice (audit)':<44} {len(double_reserved)}")
    print(f"{'retried requests applied twice':<44} {len(twice)}")
    p99 = p50_p99_max(back)[1]
    print(f"{'target':<44} p99 within {TARGET_S} s: {'met' if p99 <= TARGET_S else 'not met'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per failure")
    parser.add_argument("--failure", default=",".join(FAILURES), help="comma-separated")
    parser.add_argument("--units", type=int, default=6, help="units, one cashier each")
    parser.add_argument("--heartbeat", type=int, default=1, help="unit heartbeat, seconds")
    parser.add_argument("--before", type=float, default=3.0, help="selling before the failure")
    parser.add_argument("--after", type=float, default=22.0, help="selling after it")
    args = parser.parse_args(argv)
    failures = args.failure.split(",")
    unknown = set(failures) - set(FAILURES)
    if unknown:
        parser.error(f"unknown failure {', '.join(unknown)}; use {', '.join(FAILURES)}")
    print(
        f"3 instances on Valkey, {args.units} simulated units and cashiers, strict policy, "
        f"heartbeat {args.heartbeat} s, {args.before:g} s selling before the failure and "
        f"{args.after:g} s after"
    )
    for failure in failures:
        report(failure, [run_once(failure, args) for _ in range(args.runs)], args)


if __name__ == "__main__":
    main()
