"""Latency of the hot registry operations on each store, side by side in one run.

    python -m tests.host.registry.bench_stores [--ops N] [--units N]

A shop of one hybrid location, two agents and N online units (half linked to
agent a, the rest in the pool). Per store it times, one call at a time through
the async `Registry` (what a server does): `reserve_for_agent` (then an untimed
`complete`), `renew_device` (a heartbeat) and `list_devices`. SQLite runs on a
file in a temporary directory, Redis on a fresh valkey-server from
`tools.valkey`, both on this machine. Not a test: it prints figures.
"""

import argparse
import asyncio
import statistics
import tempfile
import time

from host.registry import Actor, open_registry
from tools.valkey import running_valkey


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url, ops, units):
    timings = {"reserve": [], "renew": [], "list_devices": []}
    async with open_registry(url) as registry:
        await registry.create_location("L1", "Main street")
        for agent_id in ("a", "b"):
            await registry.create_agent(agent_id, f"Till {agent_id}", "L1")
        epochs = {}
        for i in range(units):
            unit = f"u{i}"
            await registry.register_device(unit, f"secret-of-{unit}-0123456789", None, "L1")
            epochs[unit] = await registry.acquire_device(unit, "s1", 600)
            if i < units // 2:
                await registry.link("a", unit, None, Actor("admin"))

        async def timed(name, operation):
            started = time.perf_counter()
            result = await operation
            timings[name].append((time.perf_counter() - started) * 1000)
            return result

        for n in range(ops):
            agent_id = "ab"[n % 2]
            txn = await timed("reserve", registry.reserve_for_agent(agent_id, f"t{n}", 60))
            await registry.complete(txn.txn_id, Actor.agent(agent_id))
            unit = f"u{n % units}"
            await timed("renew", registry.renew_device(unit, "s1", epochs[unit], 600))
            if n % 10 == 0:
                await timed("list_devices", registry.list_devices())
    return timings


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.host.registry.bench_stores")
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--units", type=int, default=20)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        results["sqlite"] = asyncio.run(
            measure(f"sqlite:///{directory}/registry.db", args.ops, args.units)
        )
    with running_valkey() as valkey:
        results["redis"] = asyncio.run(measure(valkey.url(), args.ops, args.units))

    print(f"{args.ops} reservations and heartbeats, {args.units} units, times in ms")
    print(f"{'operation':<14}{'store':<8}{'p50':>8}{'p99':>8}{'mean':>8}")
    for operation in results["sqlite"]:
        for store, timings in results.items():
            samples = timings[operation]
            print(
                f"{operation:<14}{store:<8}{percentile(samples, 0.5):>8.3f}"
                f"{percentile(samples, 0.99):>8.3f}{statistics.mean(samples):>8.3f}"
            )


if __name__ == "__main__":
    main()
