"""Capacity of one `qrfleet serve` process: how many units it holds at a 5 s heartbeat.

    .venv/bin/python -m tools.bench.capacity [--steps 1000,2500,5000,10000] [--workers 2]
    .venv/bin/python -m tools.bench.capacity --steps 10000 --hold 90 --scrape

One server process on SQLite; simulated units (`tools.simdevice`: the firmware's own session
code in CPython) in `--workers` client processes, added step by step. At each step, once every
unit is online, the run measures for `--hold` seconds while `--agents` cashiers each issue
one QR every `--qr-every` seconds (POST /qr -> verified ack, then complete) to their own
linked unit:

- units online, and reconnections (a unit that lost its session and came back);
- heartbeats per second the units sent and got answered (a unit whose heartbeats go
  unanswered for 3 periods drops its session, so a step with no reconnections had them all
  handled);
- server CPU (% of one core) and RSS, from /proc; the clients' CPU beside it, because server
  and clients share this machine's cores;
- QR latency p50/p99/max: client wall time and the server's own `latency_ms`.

With `--scrape`, each step is measured twice on the same server and units, side by side: without
scraping and with a Prometheus scraper reading `GET /metrics` every second (with the admin token,
or `--metrics-token`, which the server is then started with). The two are interleaved in
windows of `--window` seconds (no scrape first), `--hold` seconds of each in all, so that the
machine's other work weighs on both alike; the scrape's own duration and size are reported
beside them.

It stops at the first step where QR p99 exceeds `--p99-ms` or units fail to stay connected.
A report, not a test: nothing is asserted.
"""

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import tempfile
import threading
import time
import traceback
import urllib.request

from tools import provision
from tools.background import BackgroundLoop, wait_for
from tools.bench.qr_bench import payloads
from tools.bench.stats import cpu_seconds, percentile, rss_mb
from tools.serverproc import running_server
from tools.simdevice import SimulatedUnit

LOCATION = "bench"
HEARTBEAT_S = 5


def raise_fd_limit():
    """Every unit is a socket in the server and one in a client: lift the soft limit to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- client processes


def device_id(n):
    return f"qrf-{0xB0000000 + n:012x}"


class CountingUnit(SimulatedUnit):
    """A simulated unit that counts the heartbeats it sends (each one calls `status()`)."""

    heartbeats = 0

    def status(self):
        self.heartbeats += 1
        return super().status()


async def _register(admin, numbers, concurrency):
    """Register units as provisioning does, several requests at a time -> {device_id: secret}."""
    secrets_by_id = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(n):
        async with gate:
            secret = provision.new_secret()
            await asyncio.to_thread(
                admin.post,
                "/api/devices",
                {"device_id": device_id(n), "secret": secret, "location_id": LOCATION},
            )
            secrets_by_id[device_id(n)] = secret

    await asyncio.gather(*(one(n) for n in numbers))
    return secrets_by_id


async def _client(pipe, server_url, device_url, admin_token, connect_rate):
    """Answer the main process's requests ("grow", numbers), ("stats",), ("stop",) with
    ("ok", result) or ("failed", traceback)."""
    from host.client import ApiClient

    admin = ApiClient(server_url, admin_token, timeout=120)
    units = []

    async def grow(numbers):
        secrets_by_id = await _register(admin, numbers, concurrency=8)
        for unit_id, secret in secrets_by_id.items():
            unit = CountingUnit(unit_id, secret, [device_url])
            units.append(unit)
            unit.start()
            await asyncio.sleep(1 / connect_rate)
        return len(units)

    def stats():
        return {
            "units": len(units),
            "online": sum(1 for u in units if u.online),
            "reconnects": sum(max(0, u.session.connects - 1) for u in units),
            "heartbeats": sum(u.heartbeats for u in units),
        }

    while True:
        request = await asyncio.to_thread(pipe.recv)
        if request[0] == "stop":
            await asyncio.gather(*(unit.stop() for unit in units))
            pipe.send(("ok", None))
            return
        try:
            result = await grow(request[1]) if request[0] == "grow" else stats()
        except Exception:  # noqa: BLE001 - the main process reports it and stops the run
            pipe.send(("failed", traceback.format_exc()))
        else:
            pipe.send(("ok", result))


def client_main(pipe, server_url, device_url, admin_token, connect_rate):
    raise_fd_limit()
    asyncio.run(_client(pipe, server_url, device_url, admin_token, connect_rate))


class Clients:
    """The client processes, each holding a share of the simulated units."""

    def __init__(self, count, server, connect_rate):
        ctx = multiprocessing.get_context("spawn")
        self.pipes, self.processes = [], []
        for _ in range(count):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=client_main,
                daemon=True,
                args=(
                    theirs,
                    server.url,
                    server.device_url,
                    server.admin_token,
                    connect_rate / count,
                ),
            )
            proc.start()
            self.pipes.append(mine)
            self.processes.append(proc)
        self.next_number = 0

    def _ask_all(self, requests):
        for pipe, request in zip(self.pipes, requests, strict=True):
            pipe.send(request)
        results = []
        for pipe, proc in zip(self.pipes, self.processes, strict=True):
            while not pipe.poll(1):
                if not proc.is_alive():
                    raise RuntimeError(f"client process {proc.pid} died ({proc.exitcode})")
            outcome, result = pipe.recv()
            if outcome == "failed":
                raise RuntimeError(f"client process {proc.pid} failed:\n{result}")
            results.append(result)
        return results

    def grow(self, count):
        numbers = range(self.next_number, self.next_number + count)
        self.next_number += count
        shares = [list(numbers[i :: len(self.pipes)]) for i in range(len(self.pipes))]
        self._ask_all([("grow", share) for share in shares])

    def stats(self):
        total = {}
        for part in self._ask_all([("stats",)] * len(self.pipes)):
            for key, value in part.items():
                total[key] = total.get(key, 0) + value
        return total

    def wait_online(self, count, timeout):
        """Until `count` units are online or `timeout` passes; the row shows how many made it."""
        deadline = time.monotonic() + timeout
        while self.stats()["online"] < count and time.monotonic() < deadline:
            time.sleep(1)

    def cpu_seconds(self):
        return sum(cpu_seconds(p.pid) for p in self.processes)

    def close(self):
        for pipe, proc in zip(self.pipes, self.processes, strict=True):
            if proc.is_alive():
                pipe.send(("stop",))
        for proc in self.processes:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


# -- cashiers issuing QRs


class Cashiers:
    """Agents with one linked simulated unit each, in this process, issuing QRs at a pace.
    With several `servers`, cashier i's unit is on server i % k and its API calls go to server
    (i // k) % k, so that half the commands cross to the instance holding the unit, as behind a
    load balancer."""

    def __init__(self, servers, loop):
        self.servers = servers
        self.loop = loop
        self.agents = []  # (agent_id, client)
        self.units = []

    def hire(self, count):
        admin = self.servers[0].admin()
        k = len(self.servers)
        for i in range(count):
            agent_id = f"cashier-{i + 1}"
            token = admin.post(
                "/api/agents", {"agent_id": agent_id, "name": agent_id, "location_id": LOCATION}
            )["token"]
            secret = provision.new_secret()
            unit_id = f"qrf-{0xC0000000 + i:012x}"
            admin.post(
                "/api/devices", {"device_id": unit_id, "secret": secret, "location_id": LOCATION}
            )
            unit = SimulatedUnit(unit_id, secret, [self.servers[i % k].device_url])
            self.loop.call(unit.start)
            wait_for(
                lambda unit=unit: unit.shown and unit.shown[-1][0] == "pairing",
                timeout=60,
                what=f"{unit_id} to show its pairing QR",
            )
            client = self.servers[(i // k) % k].client(token)
            client.post(f"/api/agents/{agent_id}/devices", {"pairing": unit.shown[-1][1]})
            self.agents.append((agent_id, client))
            self.units.append(unit)

    def run(self, seconds, every_s, payload, pay_s=0):
        """A sale every `every_s` per cashier for `seconds`: the QR, `pay_s` for the customer to
        pay, complete -> (QR wall ms, QR server ms, failures, sales completed)."""
        wall, server_ms, failures, done = [], [], [], []
        deadline = time.monotonic() + seconds

        def cashier(agent_id, client, offset_s):
            next_qr = time.monotonic() + offset_s
            while next_qr < deadline:
                time.sleep(max(0, next_qr - time.monotonic()))
                next_qr += every_s
                started = time.perf_counter()
                try:
                    doc = client.post(f"/api/agents/{agent_id}/qr", {"payload": payload})
                    wall.append((time.perf_counter() - started) * 1000)
                    server_ms.append(doc["latency_ms"])
                    time.sleep(pay_s)
                    client.post(f"/api/txns/{doc['txn_id']}/complete")
                    done.append(1)
                except Exception as e:  # noqa: BLE001 - a refusal is a figure here, not a crash
                    failures.append(str(e))

        # Cashiers start staggered: real ones do not press the button in step.
        threads = [
            threading.Thread(target=cashier, args=(*agent, i * every_s / len(self.agents)))
            for i, agent in enumerate(self.agents)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return wall, server_ms, failures, len(done)

    def close(self):
        for unit in self.units:
            self.loop.run(unit.stop())


# -- a Prometheus scraper


class Scraper:
    """Reads `GET /metrics` every `every_s` on a thread of its own while `scraping()` lasts,
    as Prometheus would, noting each scrape's wall time (ms) and size (bytes)."""

    def __init__(self, url, token, every_s=1.0):
        self.request = urllib.request.Request(
            url + "/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        self.every_s = every_s
        self.durations, self.sizes, self.failures = [], [], []

    def _run(self, stop):
        next_scrape = time.monotonic()
        while not stop.wait(max(0, next_scrape - time.monotonic())):
            next_scrape += self.every_s
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.request, timeout=10) as answer:
                    body = answer.read()
            except OSError as e:  # a figure here, not a crash
                self.failures.append(str(e))
                continue
            self.durations.append((time.perf_counter() - started) * 1000)
            self.sizes.append(len(body))

    @contextlib.contextmanager
    def scraping(self):
        """Scrapes from entering the block until leaving it."""
        stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(stop,))
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


# -- the run


def measure_window(server, clients, cashiers, seconds, every_s, payload):
    """`seconds` of cashiers at work -> raw sums, to add up over windows (`tally`)."""
    pid = server.process.pid
    before = clients.stats()
    server_cpu, client_cpu, here_cpu = (
        cpu_seconds(pid),
        clients.cpu_seconds(),
        cpu_seconds(os.getpid()),
    )
    started = time.monotonic()
    wall, server_ms, failures, _ = cashiers.run(seconds, every_s, payload)
    elapsed = time.monotonic() - started
    after = clients.stats()
    client_cpu = clients.cpu_seconds() - client_cpu + cpu_seconds(os.getpid()) - here_cpu
    return {
        "units": after["units"] + len(cashiers.units),
        "online": after["online"] + sum(1 for u in cashiers.units if u.online),
        "reconnects": after["reconnects"] - before["reconnects"],
        "heartbeats": after["heartbeats"] - before["heartbeats"],
        "server_cpu_s": cpu_seconds(pid) - server_cpu,
        "client_cpu_s": client_cpu,
        "elapsed": elapsed,
        "rss_mb": rss_mb(pid),
        "failures": failures,
        "wall": wall,
        "server_ms": server_ms,
    }


def tally(windows):
    """The windows of one mode, in order -> the figures of a row (rates over all of them)."""
    elapsed = sum(w["elapsed"] for w in windows)
    last = windows[-1]
    wall = [v for w in windows for v in w["wall"]]
    return {
        "units": last["units"],
        "online": min(w["online"] for w in windows),
        "reconnects": sum(w["reconnects"] for w in windows),
        "hb_per_s": sum(w["heartbeats"] for w in windows) / elapsed,
        "server_cpu": 100 * sum(w["server_cpu_s"] for w in windows) / elapsed,
        "client_cpu": 100 * sum(w["client_cpu_s"] for w in windows) / elapsed,
        "rss_mb": max(w["rss_mb"] for w in windows),
        "qrs": len(wall),
        "failures": [f for w in windows for f in w["failures"]],
        "wall": wall,
        "server_ms": [v for w in windows for v in w["server_ms"]],
    }


def measure_step(server, clients, cashiers, hold_s, every_s, payload, scraper, window_s):
    """-> the step's row figures without scraping, and with `scraper` (None: not measured),
    the two interleaved in windows of `window_s`, `hold_s` of each."""
    if scraper is None:
        return tally([measure_window(server, clients, cashiers, hold_s, every_s, payload)]), None
    quiet, scraped = [], []
    for _ in range(max(1, round(hold_s / window_s))):
        quiet.append(measure_window(server, clients, cashiers, window_s, every_s, payload))
        with scraper.scraping():
            scraped.append(measure_window(server, clients, cashiers, window_s, every_s, payload))
    return tally(quiet), tally(scraped)


def _ms(values, p):
    return f"{percentile(values, p):.0f}" if values else "-"


HEADER = (
    f"{'units':>6} {'online':>6} {'reconn':>6} {'hb/s':>6} {'srv CPU%':>8} "
    f"{'RSS MB':>7} {'cli CPU%':>8} {'QRs':>5} {'wall p50/p99/max ms':>20} "
    f"{'server p50/p99 ms':>18} {'ramp s':>6}"
)
SCRAPE_HEADER = f" {'scrape':>6} {'scrape p50/p99 ms':>18} {'bytes':>7}"


def row(m, ramp_s):
    wall = f"{_ms(m['wall'], 50)}/{_ms(m['wall'], 99)}/{_ms(m['wall'], 100)}"
    srv = f"{_ms(m['server_ms'], 50)}/{_ms(m['server_ms'], 99)}"
    return (
        f"{m['units']:>6} {m['online']:>6} {m['reconnects']:>6} {m['hb_per_s']:>6.0f} "
        f"{m['server_cpu']:>8.0f} {m['rss_mb']:>7.0f} {m['client_cpu']:>8.0f} "
        f"{m['qrs']:>5} {wall:>20} {srv:>18} {ramp_s:>6.0f}"
    )


def scrape_rows(quiet, scraped, scraper, ramp_s):
    """The two modes of one step, side by side, and how much scraping moved the QR p99."""
    durations = scraper.durations
    took = f"{_ms(durations, 50)}/{_ms(durations, 99)}"
    size = f"{max(scraper.sizes)}" if scraper.sizes else "-"
    lines = [
        row(quiet, ramp_s) + f" {'none':>6} {'':>18} {'':>7}",
        row(scraped, ramp_s) + f" {'1/s':>6} {took:>18} {size:>7}",
    ]
    for key, what in (("wall", "wall"), ("server_ms", "server latency_ms")):
        if quiet[key] and scraped[key]:
            before, after = percentile(quiet[key], 99), percentile(scraped[key], 99)
            lines.append(
                f"       QR p99 {what}: {before:.0f} ms without scraping, {after:.0f} ms with "
                f"({100 * (after - before) / before:+.0f} %)"
            )
    lines.append(
        f"       {len(durations)} scrapes, {len(scraper.failures)} failed; load average {_load()}"
    )
    return lines


def _load():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run(
    steps, workers, agents, hold_s, every_s, connect_rate, p99_ms, scrape, metrics_token, window_s
):
    limit = raise_fd_limit()
    if steps[-1] + 1000 > limit:
        print(
            f"note: {steps[-1]} units need about {steps[-1]} descriptors in the server; "
            f"the limit here is {limit}"
        )
    payload = payloads()["emv"]
    print(
        f"qrfleet capacity: one server process (SQLite), heartbeat {HEARTBEAT_S} s, "
        f"{workers} client processes, {agents} cashiers with a QR every {every_s:g} s each, "
        f"{os.cpu_count()} cores shared; load average {_load()}"
    )
    if scrape:
        print(
            f"each step twice on the same server and units: no scrape, then GET /metrics every "
            f"1 s ({'the metrics token' if metrics_token else 'the admin token'}), "
            f"interleaved in {window_s:g} s windows, {hold_s:g} s of each"
        )
    extra = ["--max-connections-per-peer", "1000000"]
    if metrics_token:
        extra += ["--metrics-token", metrics_token]
    with (
        tempfile.TemporaryDirectory(prefix="qrfleet-capacity-") as workdir,
        # Every simulated unit connects from 127.0.0.1: one peer, as many connections as units.
        running_server(workdir, heartbeat_s=HEARTBEAT_S, extra=extra) as server,
    ):
        server.admin().post(
            "/api/locations", {"location_id": LOCATION, "name": "Capacity", "policy": "strict"}
        )
        loop = BackgroundLoop()
        clients = Clients(workers, server, connect_rate)
        cashiers = Cashiers([server], loop)
        try:
            cashiers.hire(agents)
            print(HEADER + (SCRAPE_HEADER if scrape else ""), flush=True)
            for target in steps:
                started = time.monotonic()
                clients.grow(target - agents - clients.next_number)
                clients.wait_online(target - agents, timeout=60 + target / 20)
                ramp_s = time.monotonic() - started
                time.sleep(HEARTBEAT_S)  # let heartbeats spread over a full period
                scraper = (
                    Scraper(server.url, metrics_token or server.admin_token) if scrape else None
                )
                quiet, scraped = measure_step(
                    server, clients, cashiers, hold_s, every_s, payload, scraper, window_s
                )
                measured = [quiet] + ([scraped] if scraper else [])
                if scraper:
                    print("\n".join(scrape_rows(quiet, scraped, scraper, ramp_s)), flush=True)
                else:
                    print(row(quiet, ramp_s), flush=True)
                for reason in sorted({f for m in measured for f in m["failures"]})[:3]:
                    print(f"       refused: {reason}")
                held = all(
                    m["online"] == m["units"] and not m["reconnects"] and not m["failures"]
                    for m in measured
                )
                if not held or any(
                    not m["wall"] or percentile(m["wall"], 99) > p99_ms for m in measured
                ):
                    print(
                        f"stopped: {target} units is past what one server holds "
                        f"with QR p99 under {p99_ms} ms"
                    )
                    break
        finally:
            cashiers.close()
            clients.close()
            loop.close()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.capacity", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--steps",
        default="1000,2500,5000,10000",
        help="unit counts to step through, comma-separated",
    )
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--agents", type=int, default=4, help="cashiers issuing QRs")
    parser.add_argument("--hold", type=float, default=30, help="seconds measured per step")
    parser.add_argument(
        "--qr-every", type=float, default=0.25, help="seconds between one cashier's QRs"
    )
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=150,
        help="new units connecting per second while ramping (below the server's admission rate)",
    )
    parser.add_argument("--p99-ms", type=float, default=100, help="QR p99 bound (ms)")
    parser.add_argument(
        "--scrape",
        action="store_true",
        help="measure each step also with GET /metrics scraped every second, side by side",
    )
    parser.add_argument(
        "--metrics-token",
        help="start the server with this --metrics-token and scrape with it (default: admin)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=10,
        help="with --scrape: seconds per window; windows without and with scraping alternate",
    )
    args = parser.parse_args(argv)
    steps = sorted(int(s) for s in args.steps.split(","))
    run(
        steps,
        args.workers,
        args.agents,
        args.hold,
        args.qr_every,
        args.connect_rate,
        args.p99_ms,
        args.scrape,
        args.metrics_token,
        args.window,
    )


if __name__ == "__main__":
    main()
