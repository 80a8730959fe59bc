"""A cashier's QR latency with and without each abusive load, side by side in one run.

    .venv/bin/python -m tools.bench.abuse [--seconds 10] [--load NAME ...]

One `qrfleet serve` on SQLite, one cashier whose unit is a simulated unit running the
firmware's session code. For each load in LOADS, the cashier rings up sales back to back (POST
/qr until the verified ack, then complete) for `--seconds` with the server quiet, then as long
again while the load runs in a process of its own (so its Python does not share the cashier's
GIL); a failed sale is counted, and its time is not a latency.
Every load comes from ATTACKER (127.0.0.2) or with a unit credential of its own, never the
cashier's. A report, not a test: nothing is asserted.

A load is a coroutine function in `tools.hostile` (units, connections) or `tools.hostile_agents`
(cashiers) taking `(server, unit)`, where `unit` is a registered (device_id, secret) it may use;
add one to LOADS to measure it beside the others.
"""

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time

from host.client import ApiClientError
from tools import hostile, hostile_agents, provision
from tools.background import BackgroundLoop, wait_for
from tools.bench.stats import p50_p99_max
from tools.serverproc import Server, running_server
from tools.simdevice import SimulatedUnit

LOCATION = "bench"
_SETTLE_S = 1.5  # for a load to take hold, and for the server to recover after it


def _port(server):
    return int(server.url.rsplit(":", 1)[1])


LOADS = {
    "300 body-less POST connections": lambda server, unit: hostile.bodyless_posts(
        "127.0.0.1", _port(server)
    ),
    "a unit that stops reading": lambda server, unit: hostile.stalled_unit(
        server.device_url, *unit
    ),
    "a unit flooding pings": lambda server, unit: hostile.ping_flood(server.device_url, *unit),
    "4 x 1,800-char ECC-H payloads": lambda server, unit: hostile_agents.large_payloads(
        server, *unit
    ),
    "a cashier hoarding the pool": lambda server, unit: hostile_agents.pool_hoarder(server, *unit),
}


def _run_load(name, server, unit):
    asyncio.run(LOADS[name](server, unit))


def register(admin, n):
    device_id, secret = f"qrf-0000000b{n:04x}", provision.new_secret()
    admin.post("/api/devices", {"device_id": device_id, "secret": secret, "location_id": LOCATION})
    return device_id, secret


def ring_up(client, seconds):
    """Sales one after another for `seconds` -> (ms each QR took to be shown, sales failed)."""
    shown_ms, failed = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            doc = client.post("/api/agents/till-1/qr", {"payload": f"upi://pay?am={started}"})
            client.post(f"/api/txns/{doc['txn_id']}/complete")
        except ApiClientError:
            failed += 1
            continue
        shown_ms.append((time.perf_counter() - started) * 1000)
    return shown_ms, failed


def figures(ms):
    p50, p99, top = p50_p99_max(ms)
    return f"{p50:>7.1f} {p99:>7.1f} {top:>7.1f}"


def run(seconds, names):
    print(
        f"A cashier's QR (POST /qr -> verified ack), sales back to back for {seconds} s without "
        f"and {seconds} s with each load; {os.cpu_count()} cores shared; ms"
    )
    print(
        f"{'load':<32} {'quiet p50':>9} {'p99':>7} {'max':>7}   {'loaded p50':>10} {'p99':>7} "
        f"{'max':>7} {'failed':>6}"
    )
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="qrfleet-abuse-") as workdir,
        running_server(workdir) as server,
    ):
        admin = server.admin()
        admin.post("/api/locations", {"location_id": LOCATION, "name": "Bench"})
        token = admin.post(
            "/api/agents", {"agent_id": "till-1", "name": "till-1", "location_id": LOCATION}
        )["token"]
        cashier = server.client(token)
        loop = BackgroundLoop()
        unit = SimulatedUnit(*register(admin, 0), [server.device_url])
        loop.call(unit.start)
        wait_for(lambda: unit.shown, timeout=30, what="the cashier's unit's pairing QR")
        cashier.post("/api/agents/till-1/devices", {"pairing": unit.shown[-1][1]})
        ring_up(cashier, 1)  # warm-up, not counted
        try:
            for n, name in enumerate(names, 1):
                quiet, _ = ring_up(cashier, seconds)
                where = Server(server.url, server.admin_token)  # what the load's process needs
                load = spawn.Process(target=_run_load, args=(name, where, register(admin, n)))
                load.start()
                time.sleep(_SETTLE_S)
                loaded, failed = ring_up(cashier, seconds)
                load.terminate()
                load.join()
                print(
                    f"{name:<32} {figures(quiet)}   {figures(loaded):>26} {failed:>6}", flush=True
                )
                time.sleep(_SETTLE_S)
            print(f"server's refusals: {admin.get('/api/metrics')}")
        finally:
            loop.run(unit.stop())
            loop.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=10, help="length of each phase (default 10)"
    )
    parser.add_argument(
        "--load", action="append", choices=list(LOADS), help="only these loads (repeatable)"
    )
    args = parser.parse_args()
    run(args.seconds, args.load or list(LOADS))


if __name__ == "__main__":
    main()
