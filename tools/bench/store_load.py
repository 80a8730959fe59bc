"""What a fleet asks of its Valkey, and how much of that one Valkey primary takes.

    .venv/bin/python -m tools.bench.store_load fleet --units 10000 --out fleet.json
    .venv/bin/python -m tools.bench.store_load primary --mix fleet.json
    .venv/bin/python -m tools.bench.store_load audit --sales 2000

`fleet`: one Valkey (`tools.valkey`), `--instances` `qrfleet serve` processes on it, and
`--units` simulated units (tools.bench.capacity's client processes) spread over them. Each
instance runs with its Redis store tallied (`Recorder`): every registry operation by name, with
the round trips, commands, commits (a MULTI/EXEC with writes), read ends (an empty MULTI/EXEC)
and conflicts it cost. The run measures one window per activity, each added to a fleet that is
otherwise idle (units heartbeating): `idle`; `events` (one `GET /api/events` stream open on
every instance); `scrape` (`GET /metrics` every second on every instance); `sales` (`--sellers`
agents, each with its own linked unit, ringing up a sale every `--sale-every` seconds: QR, a
payment pause, complete; the result screen and the home screen after it). Valkey's own view
(INFO commandstats, its CPU from /proc, bytes in and out) is taken over the same windows.
`--out` keeps the figures and samples of each operation's commands for `primary`;
`fleet --again FILE` prints the report of such a file again.

`primary`: a fresh Valkey, loaded by the fleet's own transactions replayed byte for byte from
`--mix` (the samples `fleet` kept), each connection standing for one instance with the fleet's
units per instance: its heartbeat batches, presence, sweeps, event-stream polls, a metrics
read every 15 s, and the store operations of `--sales-per-hour` sales per unit, each at the rate
`fleet` measured. Each connection runs its transactions one after another, as an instance's
store thread does. Keys get a prefix per connection (no two instances' units conflict).
Replies are skipped, not decoded, so that the load generator costs about what Valkey does.
Reported per step: each round trip's time; a sale's store transactions (reserve and finish)
by their service time (first command sent to last reply: Valkey's share) and their wait (from
when they were due: also the time behind the same instance's earlier transactions, such as a
heartbeat batch). Steps add connections until the sale's service p99 passes `--p99-ms` or the
connections fall behind what they are offered.

`audit`: what the audit log costs per sale in each store: a fresh Valkey and a fresh SQLite
file, `--units` units online and linked, `--sales` sales made through the registry as the
server makes them (reserve, the QR recorded, complete, the result and home screens recorded);
then the same entries again in the layout docs/scaling.md proposes (one stream holding each
entry, lists of seq numbers per unit and per agent), for their size.

A report, not a test: nothing is asserted.
"""

import argparse
import asyncio
import contextlib
import heapq
import itertools
import json
import multiprocessing
import os
import random
import selectors
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict, deque

from tools import provision
from tools.background import BackgroundLoop
from tools.bench.capacity import LOCATION, Cashiers, Clients, Scraper, raise_fd_limit
from tools.bench.qr_bench import payloads
from tools.bench.stats import cpu_seconds, percentile
from tools.serverproc import ServerProcess, read_url, spawn, stop

HEARTBEAT_S = 5
ADMIN_TOKEN = "admin-secret"
PREFIX = "qrfleet:"  # the store's default key prefix, which the fleet runs with
# A sample of an operation's commands is taken at most every SAMPLE_EVERY_S; the last
# SAMPLES_KEPT are kept, so they show the fleet as it was at the end of the run.
SAMPLE_EVERY_S = 1.0
SAMPLES_KEPT = 8
SCRAPE_INTERVAL_S = 15  # Prometheus's usual interval, for the mix `primary` replays


# -- inside a `qrfleet serve` process: tallies of its store operations


def operation_name(fn):
    """The registry operation a store call runs: the rule a `Registry._write`/`_read` lambda
    closes over, else the first name the lambda calls (`tx.audit_after`, `rules.get_agent`)."""
    if hasattr(fn, "__self__"):
        return fn.__name__  # a bound method: the store's own schema check
    for cell in fn.__closure__ or ():
        value = cell.cell_contents
        if callable(value) and getattr(value, "__module__", "") == "host.registry.rules":
            return value.__name__
    names = [n for n in fn.__code__.co_names if n != "rules"]
    return names[0] if names else fn.__code__.co_qualname


class Recorder:
    """Counts what this process's Redis store sends, per registry operation, and keeps samples
    of the commands; SIGUSR1 writes the counts to `path` as JSON, SIGUSR2 with the samples."""

    def __init__(self, path):
        self.path = path
        self.ops = defaultdict(Counter)
        self.samples = defaultdict(lambda: deque(maxlen=SAMPLES_KEPT))
        self.sampled_at = Counter()  # operation -> when its last sample was taken
        self.dumps = 0
        self._local = threading.local()

    def install(self):
        from host.registry import redis as store_module

        run, roundtrip = store_module.RedisStore._run, store_module._roundtrip
        local, ops, samples, sampled_at = self._local, self.ops, self.samples, self.sampled_at

        def traced_run(store, fn, writing, deadline, confirm=True):
            name = operation_name(fn)
            tally = ops[name]
            tally["calls"] += 1
            local.op = name
            started = time.perf_counter()
            sampling = started - sampled_at[name] >= SAMPLE_EVERY_S
            if sampling:
                sampled_at[name] = started
            local.trips = [] if sampling else None
            try:
                return run(store, fn, writing, deadline, confirm)
            finally:
                tally["busy_us"] += round((time.perf_counter() - started) * 1e6)
                if local.trips:
                    samples[name].append(local.trips)
                local.op = local.trips = None

        def traced_roundtrip(conn, commands):
            replies = roundtrip(conn, commands)
            tally = ops[getattr(local, "op", None) or "other"]
            tally["round_trips"] += 1
            for command in commands:
                tally[command[0]] += 1
                if command[0] == "MGET":
                    tally["keys_read"] += len(command) - 1
            if commands[-1][0] == "EXEC":
                if replies[-1] is None:
                    tally["conflicts"] += 1
                # MULTI, EXEC alone ends a read (or a function that raised); else it commits.
                tally["commits" if len(commands) > 2 else "read_ends"] += 1
            if getattr(local, "trips", None) is not None:
                local.trips.append([[str(arg) for arg in c] for c in commands])
            return replies

        store_module.RedisStore._run = traced_run
        store_module._roundtrip = traced_roundtrip
        signal.signal(signal.SIGUSR1, lambda *_: self.dump(False))
        signal.signal(signal.SIGUSR2, lambda *_: self.dump(True))

    def dump(self, with_samples):
        self.dumps += 1
        doc = {"dumps": self.dumps, "ops": {n: dict(t) for n, t in list(self.ops.items())}}
        if with_samples:
            doc["samples"] = {n: list(s) for n, s in list(self.samples.items())}
        with open(self.path + ".tmp", "w") as f:
            json.dump(doc, f)
        os.replace(self.path + ".tmp", self.path)


def recorded_serve(path, argv):
    """`qrfleet serve` with its store operations tallied into `path`."""
    Recorder(path).install()
    from qrfleet.cli import main

    return main(argv)


# -- the bench side: servers, sellers, listeners, and what a window cost


class RecordedServer:
    """A `qrfleet serve` process on the Valkey store, its store tallied (`Recorder`)."""

    def __init__(self, workdir, number, store_url):
        self.tally_path = os.path.join(workdir, f"tally-{number}.json")
        log_path = os.path.join(workdir, f"server-{number}.log")
        command = (sys.executable, "-m", "tools.bench.store_load", "recorded", self.tally_path)
        # Every simulated unit connects from 127.0.0.1: one peer, as many connections as units.
        extra = ["--max-connections-per-peer", "1000000"]
        proc = spawn(
            store_url,
            ADMIN_TOKEN,
            log_path,
            server_id=f"s{number + 1}",
            heartbeat_s=HEARTBEAT_S,
            extra=extra,
            command=command,
        )
        self.server = ServerProcess(read_url(proc), ADMIN_TOKEN, None, proc, log_path)
        self._dumps = 0

    def tally(self, samples=False):
        """The store tallies so far: {"ops": {operation: {figure: count}}[, "samples"]}."""
        os.kill(self.server.process.pid, signal.SIGUSR2 if samples else signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while True:
            try:
                with open(self.tally_path) as f:
                    doc = json.load(f)
                if doc["dumps"] > self._dumps:
                    self._dumps = doc["dumps"]
                    return doc
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server {self.server.url} wrote no tally")
            time.sleep(0.02)

    def stop(self):
        stop(self.server.process)


class EventListener:
    """One `GET /api/events` stream kept open, as a dashboard does, read on its own thread."""

    def __init__(self, server):
        self.server = server
        self.sock = None
        self.events = 0
        self.thread = threading.Thread(target=self._read, daemon=True)

    def start(self):
        host, port = self.server.url.split("//", 1)[1].split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.sendall(
            f"GET /api/events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {self.server.admin_token}\r\n\r\n".encode()
        )
        self.thread.start()
        return self

    def _read(self):
        try:
            while chunk := self.sock.recv(65536):
                self.events += chunk.count(b"id: ")
        except OSError:
            pass

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.sock.close()


def valkey_figures(client, pid):
    """Valkey's counters now: commands by type (calls, usec), CPU seconds, bytes in and out."""
    stats = client.info("stats")
    commands = client.info("commandstats")
    return {
        "commands": {
            name.removeprefix("cmdstat_").upper(): {"calls": v["calls"], "usec": v["usec"]}
            for name, v in commands.items()
        },
        "cpu_s": cpu_seconds(pid),
        "net_in": stats["total_net_input_bytes"],
        "net_out": stats["total_net_output_bytes"],
    }


def snapshot(instances, client, pid):
    ops = defaultdict(Counter)
    for instance in instances:
        for name, tally in instance.tally()["ops"].items():
            ops[name].update(tally)
    return {"at": time.monotonic(), "ops": ops, "valkey": valkey_figures(client, pid)}


def window(before, after, **extra):
    """What happened between two snapshots, as plain dicts (for JSON)."""
    ops = {}
    for name, tally in after["ops"].items():
        delta = Counter(tally)
        delta.subtract(before["ops"].get(name, {}))
        delta = {k: v for k, v in delta.items() if v}
        if delta:
            ops[name] = delta
    vb, va = before["valkey"], after["valkey"]
    commands = {}
    for name, figures in va["commands"].items():
        was = vb["commands"].get(name, {"calls": 0, "usec": 0})
        calls = figures["calls"] - was["calls"]
        if calls:
            commands[name] = {"calls": calls, "usec": figures["usec"] - was["usec"]}
    return {
        "elapsed": after["at"] - before["at"],
        "ops": ops,
        "valkey": {
            "commands": commands,
            "cpu_s": va["cpu_s"] - vb["cpu_s"],
            "net_in": va["net_in"] - vb["net_in"],
            "net_out": va["net_out"] - vb["net_out"],
        },
        **extra,
    }


# -- fleet: the run


def measure(name, instances, client, pid, seconds, clients, activity=None):
    """One window of `seconds` (or of `activity()`, which returns extra figures) -> its dict."""
    before = snapshot(instances, client, pid)
    start = clients_stats(clients)
    extra = activity() if activity else (time.sleep(seconds) or {})
    after = snapshot(instances, client, pid)
    end = clients_stats(clients)
    w = window(before, after, **extra)
    w["online"] = end["online"]
    w["reconnects"] = end["reconnects"] - start["reconnects"]
    w["load"] = os.getloadavg()[0]
    print(
        f"  {name}: {w['elapsed']:.0f} s, {end['online']} units online, "
        f"{w['reconnects']} reconnections, Valkey CPU "
        f"{100 * w['valkey']['cpu_s'] / w['elapsed']:.1f} %, load average {w['load']:.2f}",
        flush=True,
    )
    return w


def clients_stats(clients):
    total = Counter()
    for c in clients:
        total.update(c.stats())
    return total


def run_fleet(args):
    if args.again:
        with open(args.again) as f:
            report_fleet(json.load(f), args.sales_per_hour)
        return
    from valkey import Valkey

    from tools.valkey import ValkeyServer

    raise_fd_limit()
    payload = payloads()["emv"]
    k = args.instances
    print(
        f"qrfleet store load: {args.units} simulated units over {k} instance(s) on one Valkey, "
        f"heartbeat {HEARTBEAT_S} s; {os.cpu_count()} cores shared; load average "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="qrfleet-store-load-") as workdir:
        valkey = ValkeyServer(log_path=os.path.join(workdir, "valkey.log")).start()
        client = Valkey(port=valkey.port, decode_responses=True)
        instances, clients, sellers, loop, listeners = [], [], None, None, []
        try:
            instances = [RecordedServer(workdir, n, valkey.url()) for n in range(k)]
            servers = [i.server for i in instances]
            servers[0].admin().post(
                "/api/locations", {"location_id": LOCATION, "name": "Load", "policy": "strict"}
            )
            memory_before = client.info("memory")["used_memory"]
            share = args.units // k
            for n, server in enumerate(servers):
                c = Clients(args.workers, server, args.connect_rate / k)
                c.next_number = n * share  # unit ids stay apart across instances
                clients.append(c)
            pid = valkey.process.pid
            phases = {}

            def ramp():
                threads = [threading.Thread(target=c.grow, args=(share,)) for c in clients]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                for c in clients:
                    c.wait_online(share, timeout=60 + share / 20)
                return {"units": share * k}

            print("measuring:", flush=True)
            phases["connect"] = measure("connect", instances, client, pid, 0, clients, ramp)
            time.sleep(HEARTBEAT_S + 1)  # heartbeats spread over a whole period
            memory_units = client.info("memory")["used_memory"]
            loop = BackgroundLoop()
            sellers = Cashiers(servers, loop)
            sellers.hire(args.sellers)
            time.sleep(HEARTBEAT_S + 1)  # the sellers' home screens are drawn
            w = args.window
            phases["idle"] = measure("idle", instances, client, pid, w, clients)

            def listening():
                listeners.extend(EventListener(s).start() for s in servers)
                time.sleep(w)
                for listener in listeners:
                    listener.stop()
                return {"streams": len(listeners), "events": sum(x.events for x in listeners)}

            phases["events"] = measure("events", instances, client, pid, w, clients, listening)
            time.sleep(2)  # the streams' ends reach the servers, and their feeds stop

            def scraping():
                scrapers = [Scraper(s.url, ADMIN_TOKEN) for s in servers]
                with contextlib.ExitStack() as stack:
                    for scraper in scrapers:
                        stack.enter_context(scraper.scraping())
                    time.sleep(w)
                return {"scrapes": sum(len(s.durations) for s in scrapers)}

            phases["scrape"] = measure("scrape", instances, client, pid, w, clients, scraping)

            def selling():
                wall, _, failures, done = sellers.run(w, args.sale_every, payload, args.pay_s)
                # The home screen follows the result by host.server.RESULT_SHOWN_S (4 s).
                time.sleep(5)
                return {
                    "sales": done,
                    "failures": failures[:5],
                    "failed": len(failures),
                    "qr_wall_ms": [percentile(wall, 50), percentile(wall, 99)] if wall else [],
                }

            phases["sales"] = measure("sales", instances, client, pid, w, clients, selling)
            samples = defaultdict(list)
            for instance in instances:
                for name, kept in instance.tally(samples=True).get("samples", {}).items():
                    samples[name].extend(kept)
            audit = {
                "entries": client.zcard(f"{PREFIX}audit"),
                "bytes": client.memory_usage(f"{PREFIX}audit", samples=0),
                "encoding": client.object("encoding", f"{PREFIX}audit"),
            }
            result = {
                "units": share * k,
                "instances": k,
                "sellers": args.sellers,
                "window_s": w,
                "sale_every_s": args.sale_every,
                "pay_s": args.pay_s,
                "memory": {"before_units": memory_before, "with_units": memory_units},
                "audit": audit,
                "phases": phases,
                "samples": samples,
            }
        finally:
            for listener in listeners:
                listener.stop()
            if sellers:
                sellers.close()
            for c in clients:
                c.close()
            if loop:
                loop.close()
            for instance in instances:
                instance.stop()
            valkey.stop()
    report_fleet(result, args.sales_per_hour)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f)
        print(f"\nfigures and samples kept in {args.out} (for `primary --mix`)")


# -- fleet: the report


FIGURES = (
    "calls",
    "commits",
    "read_ends",
    "round_trips",
    "commands",
    "EVAL",
    "conflicts",
    "busy_us",
)


def commands_of(tally):
    """Commands sent: every upper-case key of a tally is a command name."""
    return sum(v for k, v in tally.items() if k.isupper())


def rates(phase):
    """{operation: {figure: per second}} of a window."""
    out = {}
    for name, tally in phase["ops"].items():
        figures = {f: tally.get(f, 0) for f in FIGURES}
        figures["commands"] = commands_of(tally)
        figures["keys_read"] = tally.get("keys_read", 0)
        figures["SET"] = tally.get("SET", 0)
        out[name] = {f: v / phase["elapsed"] for f, v in figures.items()}
    return out


# Operations on timers, whatever else the fleet does: what a window adds leaves them out, as
# their rate moves a little from window to window (a batch waits for a heartbeat to come).
BACKGROUND = ("renew_devices", "renew_instance", "sweep")


def added(phase, idle):
    """What a window added to the idle fleet, per second, by operation (rates above idle's)."""
    mine, base = rates(phase), rates(idle)
    out = {}
    for name, figures in mine.items():
        if name in BACKGROUND:
            continue
        was = base.get(name, {})
        delta = {f: v - was.get(f, 0) for f, v in figures.items()}
        if delta["calls"] > 0.01:
            out[name] = delta
    return out


def report_fleet(r, sales_per_hour):
    units, k, phases = r["units"], r["instances"], r["phases"]
    idle = phases["idle"]
    print(
        f"\n{units} units, {k} instance(s) ({units // k} units each), windows of "
        f"{r['window_s']:g} s; Valkey used_memory {r['memory']['before_units'] / 2**20:.1f} MB "
        f"without units, {r['memory']['with_units'] / 2**20:.1f} MB with them "
        f"({(r['memory']['with_units'] - r['memory']['before_units']) / units:.0f} bytes per "
        "registered, connected unit)"
    )
    print("\nValkey, per window:")
    print(
        f"{'window':<8} {'s':>4} {'online':>6} {'reconn':>6} {'CPU %':>6} {'in cmds %':>9} "
        f"{'cmds/s':>8} {'EXEC/s':>7} {'in KB/s':>8} {'out KB/s':>8} {'load':>5}"
    )
    for name, p in phases.items():
        v, s = p["valkey"], p["elapsed"]
        cmds = sum(c["calls"] for c in v["commands"].values())
        # INFO commandstats' usec: the time spent running commands, not reading and answering.
        in_cmds = sum(c["usec"] for c in v["commands"].values()) / 1e4
        execs = v["commands"].get("EXEC", {}).get("calls", 0)
        print(
            f"{name:<8} {s:>4.0f} {p['online']:>6} {p['reconnects']:>6} "
            f"{100 * v['cpu_s'] / s:>6.1f} {in_cmds / s:>9.1f} {cmds / s:>8.0f} {execs / s:>7.1f} "
            f"{v['net_in'] / s / 1024:>8.1f} {v['net_out'] / s / 1024:>8.1f} {p['load']:>5.2f}"
        )

    head = (
        f"{'operation':<22} {'calls':>8} {'commits':>8} {'reads':>8} {'trips':>8} "
        f"{'commands':>9} {'audit':>6} {'confl':>6} {'ms/call':>7}"
    )

    def rows(by_op, unit):
        """One line per operation; `ms/call` is the store thread's time per call."""
        print(head + f"   ({unit})")
        for name, f in sorted(by_op.items(), key=lambda x: -x[1]["commands"]):
            ms = f["busy_us"] / max(1e-9, f["calls"]) / 1000
            print(
                f"{name:<22} {f['calls']:>8.2f} {f['commits']:>8.2f} {f['read_ends']:>8.2f} "
                f"{f['round_trips']:>8.2f} {f['commands']:>9.1f} {f['EVAL']:>6.2f} "
                f"{f['conflicts']:>6.2f} {ms:>7.2f}"
            )

    print("\nIdle fleet, store operations per second (all instances):")
    rows(rates(idle), "per s")
    print("\nOne event stream open per instance, added per second:")
    rows(added(phases["events"], idle), "per s")
    scrape = phases["scrape"]
    print(f"\nScraping /metrics every 1 s on each instance ({scrape['scrapes']} scrapes), added:")
    rows(added(scrape, idle), "per s")
    sales = phases["sales"]
    n = max(1, sales["sales"])
    print(
        f"\nSales: {sales['sales']} completed, {sales['failed']} failed, QR wall p50/p99 "
        f"{'/'.join(f'{v:.0f}' for v in sales['qr_wall_ms'])} ms; per sale:"
    )
    per_sale = {
        name: {f: v * sales["elapsed"] / n for f, v in figs.items()}
        for name, figs in added(sales, idle).items()
    }
    rows(per_sale, "per sale")
    for failure in sales["failures"]:
        print(f"       refused: {failure}")

    connect = phases["connect"]
    base = rates(idle)
    per_connect = {}
    for name, tally in connect["ops"].items():
        figures = {f: tally.get(f, 0) for f in FIGURES}
        figures["commands"] = commands_of(tally)
        was = base.get(name, {})
        per_connect[name] = {
            f: (v - was.get(f, 0) * connect["elapsed"]) / units for f, v in figures.items()
        }
    per_connect = {n_: f for n_, f in per_connect.items() if f["calls"] > 0.01}
    print(f"\nA unit registered and connecting ({connect['elapsed']:.0f} s ramp), per unit:")
    rows(per_connect, "per unit")

    print(f"\nPer unit per minute at {units} units ({sales_per_hour:g} sales per unit per hour):")
    print(f"{'activity':<42} {'transactions':>12} {'commits':>8} {'commands':>9} {'audit':>7}")
    idle_r = rates(idle)
    named = {
        "heartbeat batches (renew_devices)": "renew_devices",
        "instance presence (renew_instance)": "renew_instance",
        "sweeps (sweep)": "sweep",
    }
    scrape_added = added(scrape, idle)
    # A scrape reads the store at most every 5 s: at a 15 s interval, one read per scrape.
    refreshes = max(1e-9, scrape_added.get("occupancy", {}).get("calls", 0))
    lines = [(label, [idle_r.get(op, {})], 60 / units) for label, op in named.items()]
    rest = [f for op, f in idle_r.items() if op not in named.values()]
    lines += [
        ("other operations of the idle fleet", rest, 60 / units),
        ("one event stream per instance", list(added(phases["events"], idle).values()), 60 / units),
        (
            f"a metrics scrape every {SCRAPE_INTERVAL_S} s per instance",
            list(scrape_added.values()),
            60 / units * (k / SCRAPE_INTERVAL_S) / refreshes,
        ),
        (
            f"sales, {sales_per_hour:g} per unit per hour",
            list(per_sale.values()),
            sales_per_hour / 60,
        ),
    ]
    sums = Counter()
    for label, group, scale in lines:
        row = {
            x: scale * sum(f.get(x, 0) for f in group)
            for x in ("calls", "commits", "commands", "EVAL")
        }
        sums.update(row)
        print(
            f"{label:<42} {row['calls']:>12.4f} {row['commits']:>8.4f} {row['commands']:>9.3f} "
            f"{row['EVAL']:>7.4f}"
        )
    print(
        f"{'all of the above':<42} {sums['calls']:>12.4f} {sums['commits']:>8.4f} "
        f"{sums['commands']:>9.3f} {sums['EVAL']:>7.4f}"
    )
    audit = r["audit"]
    print(
        f"\naudit log: {audit['entries']} entries in {PREFIX}audit ({audit['encoding']}), "
        f"{audit['bytes']} bytes (MEMORY USAGE SAMPLES 0), "
        f"{audit['bytes'] / max(1, audit['entries']):.0f} bytes per entry in that one index"
    )


# -- primary: the fleet's transactions replayed against one Valkey


def build_mix(fleet, sales_per_hour):
    """Per instance (one connection), per second: {operation: rate}, and each operation's
    samples, from a `fleet` run's figures."""
    phases, k = fleet["phases"], fleet["instances"]
    units_per_instance = fleet["units"] / k
    idle = phases["idle"]
    mix = Counter()
    for name, figures in rates(idle).items():
        mix[name] += figures["calls"] / k
    for name, figures in added(phases["events"], idle).items():
        mix[name] += figures["calls"] / k
    scrape = added(phases["scrape"], idle)
    refreshes = max(1e-9, scrape.get("occupancy", {}).get("calls", 0))
    for name, figures in scrape.items():
        mix[name] += figures["calls"] / refreshes / SCRAPE_INTERVAL_S
    sales = phases["sales"]
    per_sale = {
        name: figures["calls"] * sales["elapsed"] / max(1, sales["sales"])
        for name, figures in added(sales, idle).items()
    }
    sales_per_s = units_per_instance * sales_per_hour / 3600
    for name, count in per_sale.items():
        mix[name] += count * sales_per_s
    samples = {name: fleet["samples"][name] for name in mix if fleet["samples"].get(name)}
    missing = {name: rate for name, rate in mix.items() if name not in samples}
    rates_ = {name: rate for name, rate in mix.items() if name in samples and rate > 0}
    return units_per_instance, rates_, samples, missing


def _pack(commands, prefix):
    """RESP bytes of `commands`, their keys moved under `prefix` instead of the fleet's."""
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if arg.startswith(PREFIX):
                arg = prefix + arg[len(PREFIX) :]
            data = arg.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _skip(buf, pos, errors):
    """The position after the RESP2 reply at `pos`, or -1 if it is not all in `buf` yet."""
    if pos >= len(buf):
        return -1
    eol = buf.find(b"\r\n", pos)
    if eol < 0:
        return -1
    kind = buf[pos]
    if kind == 45:  # '-': an error, counted
        errors[0] += 1
        return eol + 2
    if kind in (43, 58):  # '+', ':'
        return eol + 2
    n = int(buf[pos + 1 : eol])
    if kind == 36:  # '$'
        end = eol + 2 + n + 2 if n >= 0 else eol + 2
        return end if end <= len(buf) else -1
    pos = eol + 2  # '*'
    for _ in range(max(0, n)):
        pos = _skip(buf, pos, errors)
        if pos < 0:
            return -1
    return pos


def _replies_end(buf, count, errors):
    """The position after `count` whole replies at the start of `buf`, or -1."""
    pos, found = 0, [0]
    for _ in range(count):
        pos = _skip(buf, pos, found)
        if pos < 0:
            return -1
    errors[0] += found[0]
    return pos


# Background work runs on timers; sales and their screens come when customers do.
PERIODIC = ("renew_devices", "renew_instance", "sweep", "audit_after", "occupancy")


class _Instance:
    """One connection replaying one instance's transactions, one at a time, as its store thread
    runs them: a transaction due while another runs waits for it."""

    def __init__(self, number, port, rates_, samples):
        prefix = f"ld{number}:"
        self.plan = {
            name: [[(_pack(trip, prefix), len(trip)) for trip in sample] for sample in kept]
            for name, kept in samples.items()
            if name in rates_
        }
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.waiting = deque()  # (due, since, name) of transactions due, not yet started
        self.turns = Counter()
        # [name, due, since, trips, next trip, first sent, this trip sent]
        self.running = None

    def due(self, at, since, name):
        self.waiting.append((at, since, name))
        if self.running is None:
            self._start()

    def _start(self):
        at, since, name = self.waiting.popleft()
        kept = self.plan[name]
        trips = kept[self.turns[name] % len(kept)]
        self.turns[name] += 1
        now = time.monotonic()
        self.running = [name, at, since, trips, 0, now, now]
        self.sock.sendall(trips[0][0])

    def readable(self, times):
        """Take what arrived; each round trip and transaction that ended goes to `times`, and
        the next waiting transaction starts."""
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise ConnectionError("Valkey closed the connection")
        self.buf += chunk
        while self.running is not None:
            name, at, since, trips, n, first, sent = self.running
            end = _replies_end(self.buf, trips[n][1], times.errors)
            if end < 0:
                return
            del self.buf[:end]
            now = time.monotonic()
            times.trip(at, now - sent)
            if n + 1 < len(trips):
                self.running[4:] = [n + 1, first, now]
                self.sock.sendall(trips[n + 1][0])
                return
            times.transaction(name, at, now - since, now - first)
            self.running = None
            if self.waiting:
                self._start()


class _Times:
    """What one replay process measured after the warm-up: each round trip's time, and each
    transaction's wait (from when it was due, or from when its timer fired if its connection
    was free then) and service (from its first command sent to its last reply)."""

    def __init__(self, warm_until):
        self.warm_until = warm_until
        self.trips = []
        self.wait = defaultdict(list)
        self.service = defaultdict(list)
        self.lag = []  # how late this process fired its timers
        self.errors = [0]

    def trip(self, at, seconds):
        if at >= self.warm_until:
            self.trips.append(seconds)

    def transaction(self, name, at, wait, service):
        if at >= self.warm_until:
            self.wait[name].append(wait)
            self.service[name].append(service)


def replay_main(pipe, port, mix_path, numbers, t0, warm_until, until):
    """Replay the instances `numbers` from `t0` to `until` on one selector loop, then send
    back what `_Times` measured."""
    with open(mix_path) as f:
        mix = json.load(f)
    rates_, samples = mix["rates"], mix["samples"]
    instances = [_Instance(n, port, rates_, samples) for n in numbers]
    selector = selectors.DefaultSelector()
    for instance in instances:
        selector.register(instance.sock, selectors.EVENT_READ, instance)
    times = _Times(warm_until)
    due, order = [], itertools.count()  # (when, tie-breaker, instance, operation, its random)
    for i, n in enumerate(numbers):
        rng = random.Random(n)
        for name, rate in rates_.items():
            due.append((t0 + rng.random() / rate, next(order), i, name, rng))
    heapq.heapify(due)
    while due or any(x.running for x in instances):
        if due and due[0][0] >= until:
            due.clear()  # nothing more is due before the end: finish what runs
        now = time.monotonic()
        while due and due[0][0] <= now:
            at, _, i, name, rng = heapq.heappop(due)
            rate = rates_[name]
            gap = 1 / rate if name in PERIODIC else rng.expovariate(rate)
            heapq.heappush(due, (at + gap, next(order), i, name, rng))
            instance = instances[i]
            if at >= warm_until:
                times.lag.append(now - at)
            # Due while the connection is busy: it waits from when it was due.
            instance.due(at, at if instance.running else now, name)
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else 0.05
        for key, _ in selector.select(timeout):
            key.data.readable(times)
    for instance in instances:
        instance.sock.close()
    pipe.send(
        {
            "trips": times.trips,
            "wait": dict(times.wait),
            "service": dict(times.service),
            "lag": times.lag,
            "errors": times.errors[0],
        }
    )


def commits_of(sample):
    return sum(1 for trip in sample if trip[-1][0] == "EXEC" and len(trip) > 2)


def run_primary(args):
    from valkey import Valkey

    from tools.valkey import ValkeyServer

    with open(args.mix) as f:
        fleet = json.load(f)
    per_instance, rates_, samples, missing = build_mix(fleet, args.sales_per_hour)
    tx_per_s = sum(rates_.values())
    commits_per_s = sum(
        rate * sum(map(commits_of, samples[n])) / len(samples[n]) for n, rate in rates_.items()
    )
    print(
        f"qrfleet primary capacity: the transactions of {fleet['units']} units measured by "
        f"`fleet` ({fleet['instances']} instances), replayed; one connection per instance of "
        f"{per_instance:.0f} units, each with {tx_per_s:.1f} transactions/s "
        f"({commits_per_s:.1f} commits/s): {args.sales_per_hour:g} sales per unit per hour, "
        f"one event stream, a metrics read every {SCRAPE_INTERVAL_S} s; {args.procs} replay "
        f"processes, {os.cpu_count()} cores shared; load average {os.getloadavg()[0]:.2f}"
    )
    for name, rate in sorted(rates_.items(), key=lambda x: -x[1]):
        print(f"  {name:<22} {rate:>8.2f}/s per instance, {len(samples[name])} samples")
    if missing:
        print(f"  not replayed (no sample kept): {missing}")
    print(
        f"\n{'inst':>4} {'units':>7} {'tx/s':>6} {'done/s':>6} {'commits/s':>9} {'cmds/s':>7} "
        f"{'Valkey':>6} {'replay':>6} {'trip p50/p99':>13} {'sale svc p50/p99':>16} "
        f"{'sale wait p99':>13} {'batch p99':>9} {'lag p99':>7} {'err':>3} {'load':>5}"
    )
    with tempfile.TemporaryDirectory(prefix="qrfleet-primary-") as workdir:
        mix_path = os.path.join(workdir, "mix.json")
        with open(mix_path, "w") as f:
            json.dump({"rates": rates_, "samples": samples}, f)
        valkey = ValkeyServer(log_path=os.path.join(workdir, "valkey.log")).start()
        client = Valkey(port=valkey.port, decode_responses=True)
        ctx = multiprocessing.get_context("spawn")
        try:
            for count in args.steps:
                t0 = time.monotonic() + 3 + count * 0.05  # time for the workers to pack
                warm_until, until = t0 + args.warmup, t0 + args.warmup + args.seconds
                procs = []
                for p in range(min(args.procs, count)):
                    mine, theirs = ctx.Pipe()
                    numbers = list(range(p, count, args.procs))
                    proc = ctx.Process(
                        target=replay_main,
                        args=(theirs, valkey.port, mix_path, numbers, t0, warm_until, until),
                        daemon=True,
                    )
                    proc.start()
                    procs.append((proc, mine))
                time.sleep(max(0, warm_until - time.monotonic()))
                before = valkey_figures(client, valkey.process.pid)
                replay_cpu = sum(cpu_seconds(p.pid) for p, _ in procs)
                time.sleep(max(0, until - time.monotonic()))
                after = valkey_figures(client, valkey.process.pid)
                replay_cpu = sum(cpu_seconds(p.pid) for p, _ in procs) - replay_cpu
                m = {"trips": [], "lag": [], "errors": 0}
                wait, service = defaultdict(list), defaultdict(list)
                for proc, pipe in procs:
                    result = pipe.recv()
                    proc.join()
                    m["errors"] += result["errors"]
                    m["trips"] += result["trips"]
                    m["lag"] += result["lag"]
                    for name, values in result["wait"].items():
                        wait[name] += values
                    for name, values in result["service"].items():
                        service[name] += values
                done = {n: len(v) / args.seconds for n, v in wait.items()}
                commits = sum(
                    rate * sum(map(commits_of, samples[n])) / len(samples[n])
                    for n, rate in done.items()
                )
                cmds = sum(
                    c["calls"] - before["commands"].get(n, {"calls": 0})["calls"]
                    for n, c in after["commands"].items()
                )

                def ms(values, p):
                    return 1000 * percentile(values, p) if values else float("nan")

                # What the cashier waits for at the store: the sale's reservation and its end.
                sale_svc = [v for n in ("reserve", "finish") for v in service.get(n, [])]
                sale_wait = [v for n in ("reserve", "finish") for v in wait.get(n, [])]
                svc_p99 = ms(sale_svc, 99)
                offered, achieved = count * tx_per_s, sum(done.values())
                print(
                    f"{count:>4} {count * per_instance:>7.0f} {offered:>6.0f} {achieved:>6.0f} "
                    f"{commits:>9.0f} {cmds / args.seconds:>7.0f} "
                    f"{100 * (after['cpu_s'] - before['cpu_s']) / args.seconds:>5.0f}% "
                    f"{100 * replay_cpu / args.seconds:>5.0f}% "
                    f"{ms(m['trips'], 50):>6.2f}/{ms(m['trips'], 99):<6.2f} "
                    f"{ms(sale_svc, 50):>8.2f}/{svc_p99:<7.2f} {ms(sale_wait, 99):>13.2f} "
                    f"{ms(service.get('renew_devices', []), 99):>9.2f} {ms(m['lag'], 99):>7.2f} "
                    f"{m['errors']:>3} {os.getloadavg()[0]:>5.2f}",
                    flush=True,
                )
                if svc_p99 > args.p99_ms or achieved < 0.95 * offered:
                    print(
                        f"stopped: the sale's store transactions took {svc_p99:.1f} ms at p99 "
                        f"(limit {args.p99_ms:g} ms); {achieved:.0f} of {offered:.0f} "
                        "transactions/s done"
                    )
                    break
            memory = client.info("memory")["used_memory"]
            print(f"Valkey used_memory at the end: {memory / 2**20:.0f} MB")
        finally:
            valkey.stop()


# -- audit: what the log costs per sale


async def _sales_in(url, units, sales, size_of):
    """`sales` sales over `units` linked units in the store at `url` -> what they added to the
    figures `size_of()` returns (a tuple), taken after the units were set up and after the
    sales."""
    from host.devices import shown_screen
    from host.registry import ADMIN, Actor, open_registry

    registry = open_registry(url)
    try:
        await registry.join("s1", 3600)
        await registry.create_location(LOCATION, "Audit", "strict")
        held = []
        for i in range(units):
            agent_id, device_id = f"seller-{i + 1}", f"qrf-{0xD0000000 + i:012x}"
            await registry.create_agent(agent_id, agent_id, LOCATION)
            await registry.register_device(device_id, provision.new_secret(), None, LOCATION)
            epoch = await registry.acquire_device(device_id, "s1", 3600, "sim-0.1.0")
            code = await registry.issue_pairing_code(device_id)
            await registry.link(agent_id, device_id, code.code, ADMIN)
            held.append((agent_id, device_id, epoch))
        before = size_of()
        fields = {"payload": payloads()["emv"], "caption": "", "ecc": "M"}
        ack = {"version": 6, "mask": 2}
        for n in range(sales):
            agent_id, device_id, epoch = held[n % units]
            txn_id = os.urandom(16).hex()
            await registry.reserve_for_agent(agent_id, txn_id, 120)
            shown = shown_screen(device_id, "show_qr", fields, ack)
            await registry.record_screen(device_id, epoch, shown, txn_id)
            await registry.complete(txn_id, Actor.agent(agent_id))
            for kind, extra in (("show_result", {"result": "paid"}), ("clear", {})):
                shown = shown_screen(device_id, kind, extra, {})
                await registry.record_screen(device_id, epoch, shown)
        return tuple(b - a for a, b in zip(before, size_of(), strict=True))
    finally:
        await registry.close()


def compact_layout(client):
    """The log's entries again in the layout docs/scaling.md proposes: one stream holding each
    entry once (id <seq>-0), and per-unit and per-agent lists of seq numbers only -> (entries,
    bytes of the stream, bytes of the lists), by MEMORY USAGE."""
    members = client.zrange(f"{PREFIX}audit", 0, -1)
    lists = set()
    pipe = client.pipeline(transaction=False)
    for n, member in enumerate(members, 1):
        seq, fields = member.split(" ", 1)
        pipe.xadd("compact:audit", {"e": fields}, id=f"{seq}-0")
        _, _, _, device_id, agent_id, *_ = json.loads(fields)
        for kind, value in (("device", device_id), ("agent", agent_id)):
            if value is not None:
                lists.add(f"compact:audit:{kind}:{value}")
                pipe.rpush(f"compact:audit:{kind}:{value}", seq)
        if n % 1000 == 0:
            pipe.execute()
    pipe.execute()
    stream = client.memory_usage("compact:audit", samples=0)
    return len(members), stream, sum(client.memory_usage(k, samples=0) for k in lists)


def run_audit(args):
    from valkey import Valkey

    from tools.valkey import ValkeyServer

    print(
        f"audit log per sale: {args.sales} sales over {args.units} units, in each store "
        "(reserve, QR shown, complete, result shown, home screen shown)"
    )
    with tempfile.TemporaryDirectory(prefix="qrfleet-audit-") as workdir:
        with ValkeyServer(log_path=os.path.join(workdir, "valkey.log")) as valkey:
            client = Valkey(port=valkey.port, decode_responses=True)

            def valkey_size():
                keys = [f"{PREFIX}audit"]
                for pattern in (f"{PREFIX}audit:device:*", f"{PREFIX}audit:agent:*"):
                    keys += list(client.scan_iter(match=pattern, count=1000))
                indexes = sum(client.memory_usage(key, samples=0) or 0 for key in keys)
                used = client.info("memory")["used_memory"]
                return client.zcard(f"{PREFIX}audit"), indexes, used

            entries, index_bytes, used = asyncio.run(
                _sales_in(valkey.url(), args.units, args.sales, valkey_size)
            )
            member = client.zrange(f"{PREFIX}audit", -1, -1)[0]
            compact_entries, stream_bytes, list_bytes = compact_layout(client)
            encodings = {
                key: client.object("encoding", key)
                for key in (f"{PREFIX}audit", f"{PREFIX}audit:device:qrf-0000d0000000")
            }
        db = os.path.join(workdir, "audit.db")

        def sqlite_size():
            import sqlite3

            with sqlite3.connect(db) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                count = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
                pages = conn.execute(
                    "SELECT sum(pgsize) FROM dbstat WHERE name IN "
                    "('audit', 'audit_by_device', 'audit_by_agent')"
                ).fetchone()[0]
            return count, pages or 0

        sqlite_entries, sqlite_bytes = asyncio.run(
            _sales_in(f"sqlite:///{db}", args.units, args.sales, sqlite_size)
        )
    print(
        f"\nValkey: {entries / args.sales:.2f} entries per sale; one member, {len(member)} bytes:"
    )
    print(f"  {member}")
    print(f"  encodings: {encodings}")
    print(
        f"  audit, audit:device:*, audit:agent:* (MEMORY USAGE SAMPLES 0): "
        f"{index_bytes / args.sales:.0f} bytes per sale, {index_bytes / entries:.0f} per entry; "
        f"used_memory grew {used / args.sales:.0f} bytes per sale"
    )
    print(
        f"  per million sales: {index_bytes / args.sales * 1e6 / 2**30:.2f} GiB "
        f"(indexes), {used / args.sales * 1e6 / 2**30:.2f} GiB (used_memory)"
    )
    per_sale = entries / args.sales / compact_entries  # entries of a sale per entry of the log
    stream_sale, lists_sale = stream_bytes * per_sale, list_bytes * per_sale
    print(
        f"  proposed layout, the same {compact_entries} entries: a stream "
        f"{stream_bytes / compact_entries:.0f} bytes per entry, seq lists per unit and agent "
        f"{list_bytes / compact_entries:.0f}: {stream_sale + lists_sale:.0f} bytes per sale, "
        f"{(stream_sale + lists_sale) * 1e6 / 2**30:.2f} GiB per million sales"
    )
    print(
        f"SQLite: {sqlite_entries / args.sales:.2f} entries per sale; table and its two indexes "
        f"(dbstat): {sqlite_bytes / args.sales:.0f} bytes per sale, "
        f"{sqlite_bytes / args.sales * 1e6 / 2**30:.2f} GiB per million sales"
    )


# -- the command line


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["recorded"]:  # inside a server process started by `fleet`
        return recorded_serve(argv[1], argv[2:])
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.store_load", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    fleet = sub.add_parser("fleet", help="what a fleet asks of its Valkey, by operation")
    fleet.add_argument("--units", type=int, default=10000, help="simulated units")
    fleet.add_argument("--instances", type=int, default=2, help="qrfleet serve processes")
    fleet.add_argument("--workers", type=int, default=1, help="client processes per instance")
    fleet.add_argument("--window", type=float, default=60, help="seconds per measured window")
    fleet.add_argument("--sellers", type=int, default=100, help="agents ringing up sales")
    fleet.add_argument(
        "--sale-every",
        type=float,
        default=8,
        help="seconds between one seller's sales (over 4 s + --pay-s, so the home screen shows)",
    )
    fleet.add_argument("--pay-s", type=float, default=2, help="seconds from QR to complete")
    fleet.add_argument(
        "--connect-rate", type=float, default=150, help="units connecting per second, in all"
    )
    fleet.add_argument(
        "--sales-per-hour", type=float, default=12, help="per unit, for the per-unit summary"
    )
    fleet.add_argument("--out", help="keep figures and command samples here (JSON)")
    fleet.add_argument(
        "--again", metavar="FILE", help="print the report of a run kept with --out; run nothing"
    )
    primary = sub.add_parser("primary", help="one Valkey under the fleet's replayed load")
    primary.add_argument("--mix", required=True, help="the JSON `fleet --out` wrote")
    primary.add_argument("--sales-per-hour", type=float, default=12, help="per unit")
    primary.add_argument(
        "--steps",
        default="1,2,4,8,16,24,32,48,64,96,128",
        help="instances (connections) to step through, comma-separated",
    )
    primary.add_argument("--procs", type=int, default=2, help="replay processes")
    primary.add_argument("--seconds", type=float, default=20, help="measured per step")
    primary.add_argument("--warmup", type=float, default=3, help="unmeasured start of a step")
    primary.add_argument(
        "--p99-ms", type=float, default=10, help="stop past this p99 of the sale's service time"
    )
    audit = sub.add_parser("audit", help="what the audit log costs per sale")
    audit.add_argument("--sales", type=int, default=2000)
    audit.add_argument("--units", type=int, default=50)
    args = parser.parse_args(argv)
    if args.mode == "fleet":
        run_fleet(args)
    elif args.mode == "primary":
        args.steps = [int(s) for s in args.steps.split(",")]
        run_primary(args)
    else:
        run_audit(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
