"""Firmware updates over the air: what one costs a unit, beside a technician writing the same
firmware over USB, in one run.

    .venv/bin/python -m tools.bench.ota [--units 1] [--heap 160K] [--json FILE]

A release the size of the current firmware (this repository's `firmware` package, compiled and
signed by tools.release.build under a version of its own) is pushed to `--units` virtual
boards at once (the real firmware on the MicroPython Unix port, `--heap` each) by an in-process
server with a 1 s heartbeat, as a rollout pushes it (host.updates.push, with the rollout's
"no transaction holds the unit" check before every chunk). Reported:

1. bytes the server sends one unit for the update: every command's UTF-8 text plus its MAC
   (auth.SEAL_OVERHEAD), from the first offer to update_commit, and the number of commands;
   beside it, the same firmware written over USB to one of the boards after its update, as
   `qrfleet provision` writes it: esptool's compressed filesystem image over the board's
   rfc2217:// port, bytes on the link and time until the unit is back online. The bundle file
   and the firmware's own bytes are given for scale.
2. time per unit from the first offer until it is back online on the new version and its trial
   is committed (Device.update "committed" in the registry), in phases: restart into update
   mode; the manifest, then a restart to check it as the unit boots (where the firmware does
   that); download (offer and chunks); switch and restart; trial proof and commit. Median and
   max over the units.
3. heap: the unit's Updater (firmware/ota/update.py, compiled as on a board) run on the Unix
   port under the same cap and fed the real release in chunks of chunk_size(UPDATE_MESSAGE) bytes, as
   push sends them: free heap before the first offer, the lowest free right after a chunk
   (garbage included, and after a collection), the largest free block (micropython.mem_info),
   and the smallest heap cap the whole download and switch complete in (bisection in 1K
   steps): what was free before the first offer at that cap is what the update needed at its
   peak. Beside it, the virtual boards' free heap as their heartbeats (collected first) and
   first boot lines report it, serving QRs and in update mode.
4. Ed25519: firmware.ota.ed25519.verify of the real manifest on the Unix port beside PyNaCl
   (libsodium) on this host, and an ESP32 figure that is an estimate, from counted operations
   and assumptions stated beside ESP32_SLOWER and printed with it.

The Unix port on x86-64 has 8-byte words where an ESP32 has 4: its objects are up to twice as
large, so its heap figures overstate a unit's. Boards, server and this tool share the machine's
cores, which weighs on the times with several units. A report, not a test: nothing is asserted.
"""

import argparse
import asyncio
import hashlib
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

from nacl.signing import VerifyKey
from rich.console import Console
from rich.table import Table

from firmware import config
from firmware.proto import auth, messages
from firmware.version import VERSION as RUNNING
from host import devices
from host.log import Log
from host.releases import public_key, read_bundle
from host.server import QrfleetServer
from host.updates import chunk_size, push
from tools import flash, image, micropython, release
from tools.image import littlefs_image
from tools.vboard import fleet

TOKEN = "bench-admin"
VERSION = f"{RUNNING}+bench"
UNIT_MAX_MESSAGE = messages.UPDATE_MESSAGE  # what a unit in update mode says it takes
HEARTBEAT_S = 1  # often enough to see the free heap during a download of a few seconds
NORMAL_BEATS = 2  # heartbeats heard from each unit serving QRs before the push
TIMEOUT_S = 120  # for any one unit to come back
VERIFY_RUNS = 11
NACL_RUNS = 1001
UPDATE_KINDS = ("update_offer", "update_chunk", "update_switch", "update_commit")
_BOOT_FREE = re.compile(r"display ready, (\d+) bytes of heap free")

# -- the unit's side on the Unix port

# The unit's filesystem is a directory; the release's manifest and files are files 0..n in
# another, read a chunk at a time (the heap could not hold the release). After each chunk: free
# heap at once (what the chunk left, garbage included), then after a collection (what the
# download holds). mem_info's "max free sz" (in GC blocks) is printed after the manifest check
# and at the end.
_UPDATER = """
import gc, micropython, os
from binascii import b2a_base64
gc.collect()
start = gc.mem_free()
os.chdir(%(unit_dir)r)
import loader
from firmware.ota.update import Updater
unit = Updater([%(key)r], %(running)r)
gc.collect()
before = gc.mem_free()

def piece(file, offset):
    with open(%(blobs)r + "/%%d" %% file, "rb") as f:
        f.seek(offset)
        return f.read(%(chunk)d)

def offer():
    return unit.offer(%(version)r, %(manifest_size)d, %(sig)r, %(min_free)d)

lowest = lowest_held = before
chunks = 0
shown = False
ack = offer()
while ack["state"] != "ready":
    if ack["file"] and not shown:
        print("after the manifest check:")
        micropython.mem_info()
        shown = True
    if ack["state"] == "checking":  # the unit restarts, and checks the manifest as it boots
        unit = None
        os.remove(loader.UPDATING)
        unit = Updater([%(key)r], %(running)r)
        unit.check_staged(%(version)r, %(sig)r)
        lowest = min(lowest, gc.mem_free())
        ack = offer()
        continue
    file, offset = ack["file"], ack["offset"]
    data = b2a_base64(piece(file, offset), newline=False).decode()
    ack = unit.chunk(file, offset, data)
    chunks += 1
    lowest = min(lowest, gc.mem_free())
    data = None
    gc.collect()
    lowest_held = min(lowest_held, gc.mem_free())
print("at the end:")
micropython.mem_info()
print("result=" + repr((unit.switch()["state"], start, before, lowest, lowest_held, chunks)))
"""

# Median and best of `runs` for a verify; best of 7 for its parts (the breakdown is of the best
# verify), each product timed in a loop of 5000 less the same loop without it.
_VERIFY = """
import gc, time
from binascii import unhexlify
from firmware.ota import ed25519
from firmware.ota.sha512 import sha512
with open(%(manifest)r, "rb") as f:
    message = f.read()
key, sig = unhexlify(%(key)r), unhexlify(%(sig)r)
P = 2**255 - 19
Q = 2**127 - 1

def timed(work, runs=7):
    us = []
    for _ in range(runs):
        gc.collect()
        t = time.ticks_us()
        work()
        us.append(time.ticks_diff(time.ticks_us(), t))
    us.sort()
    return us[len(us) // 2], us[0]

def per_product(a, b, m, n=5000):
    def products():
        for _ in range(n):
            r = a * b %% m
    def loop():
        for _ in range(n):
            r = a
    return (timed(products)[1] - timed(loop)[1]) / n

a, b = P - 12345678901234567, P - 98765432109876543
ok = ed25519.verify(key, message, sig)
verify, best = timed(lambda: ed25519.verify(key, message, sig), %(runs)d)
sha = timed(lambda: sha512(message).digest())[1]
power = timed(lambda: pow(a, P - 2, P))[1]
print("result=" + repr((ok, verify, best, sha, power, per_product(a, b, P), per_product(a %% Q, b %% Q, Q))))
"""


def on_unix_port(code, heap, path):
    """Run `code` on the Unix port -> the value it printed as result=..., and its output."""
    done = micropython.run(code, heap=heap, path=(path,), timeout=300)
    out = done.stdout.decode("utf-8", "replace")
    found = [line for line in out.splitlines() if line.startswith("result=")]
    if not found:
        return None, out + done.stderr.decode("utf-8", "replace")
    return eval(found[-1][len("result=") :]), out  # noqa: S307 - our own repr of numbers


def heap_kib(heap):
    number = heap.upper().rstrip("B")
    scale = {"K": 1, "M": 1024}.get(number[-1:], None)
    return int(number[:-1]) * scale if scale else int(number) // 1024


def updater_on_unix_port(work, rel, key_hex, heap):
    """The download and switch on the Unix port under `heap` -> figures, or None if it fails."""
    unit_dir = Path(tempfile.mkdtemp(dir=work, prefix="unit-"))
    code = _UPDATER % {
        "unit_dir": str(unit_dir),
        "key": key_hex,
        "running": RUNNING,
        "blobs": str(work / "blobs"),
        "chunk": chunk_size(UNIT_MAX_MESSAGE),
        "version": rel.version,
        "manifest_size": len(rel.manifest_text.encode()),
        "sig": rel.signature,
        "min_free": rel.manifest["min_free"],
    }
    result, out = on_unix_port(code, heap, work / "mpy")
    if result is None or result[0] != "installing":
        return None
    state, start, before, lowest, lowest_held, chunks = result
    # mem_info's GC blocks are 4 machine words: 32 bytes here (16 on an ESP32).
    largest = [int(n) * 32 for n in re.findall(r"max free sz: (\d+)", out)]
    return {
        "heap_total": int(re.search(r"GC: total: (\d+)", out)[1]),
        "free_at_start": start,
        "free_before_offer": before,
        "lowest_free_after_chunk": lowest,
        "lowest_free_after_chunk_collected": lowest_held,
        "used_at_peak": before - lowest,
        "held_at_peak": before - lowest_held,
        "largest_free_block_after_manifest": largest[0],
        "largest_free_block_at_end": largest[1],
        "chunks": chunks,
    }


def smallest_heap(work, rel, key_hex, top_kib):
    """The smallest heap cap (KiB) the download and switch complete in, at most `top_kib`."""
    low, high = 8, top_kib  # fails at `low`, works at `high`
    while high - low > 1:
        middle = (low + high) // 2
        if updater_on_unix_port(work, rel, key_hex, f"{middle}K"):
            high = middle
        else:
            low = middle
    return high


def verify_timings(work, rel, key_hex, heap):
    code = _VERIFY % {
        "manifest": str(work / "blobs" / "0"),
        "key": key_hex,
        "sig": rel.signature,
        "runs": VERIFY_RUNS,
    }
    result, out = on_unix_port(code, heap, work / "mpy")
    if result is None or not result[0]:
        raise SystemExit(f"Ed25519 on the Unix port failed:\n{out}")
    _, verify, best, sha, power, product, product_127 = result
    return {
        "verify_us": verify,
        "verify_best_us": best,
        "sha512_us": sha,
        "pow_us": power,
        "product_us": product,
        "product_127_us": product_127,
    }


def nacl_verify_us(rel, key):
    verifier, message = VerifyKey(key), rel.manifest_text.encode()
    signature = bytes.fromhex(rel.signature)
    us = []
    for _ in range(NACL_RUNS):
        started = time.perf_counter()
        verifier.verify(message, signature)
        us.append((time.perf_counter() - started) * 1e6)
    return statistics.median(us)


# -- the ESP32 estimate


def operation_counts(rel, key):
    """Big-int products mod p in one firmware.ota.ed25519.verify of this signature, and SHA-512
    blocks, counted from the code: 8 products per point doubling and per addition, 1 per cached
    entry; [S]B - [k]A takes 254 doublings and an addition per step whose two bits of S and k
    are not both 0; its tables 2 doublings, 11 additions and 17 cached entries; decoding A,
    encoding the result and B's T 17 more; and two modular powers (pow(x, e, p), in C)."""
    signature = bytes.fromhex(rel.signature)
    s = int.from_bytes(signature[32:], "little")
    digest = hashlib.sha512(signature[:32] + key + rel.manifest_text.encode()).digest()
    k = int.from_bytes(digest, "little") % (2**252 + 27742317777372353535851937790883648493)
    additions = sum(1 for shift in range(252, -1, -2) if (s >> shift & 3) << 2 | (k >> shift & 3))
    products = 8 * (254 + 2) + 8 * (additions + 11) + 17 + 17
    hashed = 64 + len(rel.manifest_text.encode())
    return {
        "products": products,
        "additions": additions,
        "powers": 2,
        "sha512_blocks": (hashed + 17 + 127) // 128,
        "manifest_blocks": (len(rel.manifest_text.encode()) + 17 + 127) // 128,
    }


# Assumptions of the estimate, each a figure to argue with, not a measurement:
# - an ESP32 at 240 MHz runs MicroPython's interpreter-bound code 20-40x slower than a desktop
#   x86-64 core (the figure tools/bench/message_cost.py gives), 30x in the middle;
# - MicroPython's big ints (py/mpz.h) have 32-bit digits on x86-64 and 16-bit digits elsewhere:
#   a 255-bit product and its remainder take 4x the digit operations on an ESP32 (both are
#   quadratic in the digits). The digit share of a product here is measured: a 127-bit
#   product mod a 127-bit prime does a quarter of a 255-bit one's digit work, so the
#   difference is 3/4 of it. Modular powers are all digit work.
# Likely low for SHA-512: its 64-bit words are big ints on both, but an ESP32's small ints
# hold 31 bits where x86-64's hold 63, so more of its intermediate values allocate there.
ESP32_SLOWER = (20, 30, 40)
DIGIT_FACTOR = 4


def esp32_estimate(timings, counts):
    """ESP32 milliseconds for one verify at ESP32_SLOWER, from the Unix port's figures."""
    digits = max(0.0, (timings["product_us"] - timings["product_127_us"]) * 4 / 3)
    digits = min(digits, timings["product_us"])
    product_esp32_x86 = timings["product_us"] + (DIGIT_FACTOR - 1) * digits  # in x86 us
    sha = timings["sha512_us"] * counts["sha512_blocks"] / counts["manifest_blocks"]
    products = counts["products"] * timings["product_us"]
    powers = counts["powers"] * timings["pow_us"]
    rest = max(0.0, timings["verify_best_us"] - products - powers - sha)
    scaled = counts["products"] * product_esp32_x86 + powers * DIGIT_FACTOR + sha + rest
    return {
        "products_us": products,
        "powers_us": powers,
        "sha512_us": sha,
        "rest_us": rest,
        "product_digit_share": digits / timings["product_us"] if timings["product_us"] else 0,
        "esp32_ms": [round(scaled * f / 1000) for f in ESP32_SLOWER],
    }


# -- over the air, on virtual boards


class CommandLog:
    """Every command text the server sends, per unit, with its time: DeviceSession's exchange
    is wrapped for the run (the texts are what push and the trial proof send, sealed with a
    MAC of auth.SEAL_OVERHEAD characters)."""

    def __init__(self):
        self.sent = {}  # device_id -> [(monotonic, kind, bytes on the wire)]
        self._original = devices.DeviceSession._exchange

    def __enter__(self):
        original, sent = self._original, self.sent

        async def exchange(session, text, reply):
            kind = json.loads(text)["type"]
            if kind in UPDATE_KINDS or (kind == "show_qr" and "qrfleet://check" in text):
                sent.setdefault(session.device_id, []).append(
                    (time.monotonic(), kind, len(text.encode()) + auth.SEAL_OVERHEAD)
                )
            return await original(session, text, reply)

        devices.DeviceSession._exchange = exchange
        return self

    def __exit__(self, *exc):
        devices.DeviceSession._exchange = self._original


class Heartbeats:
    """The free_heap of every heartbeat each unit's current session reports, sampled."""

    def __init__(self, server, device_ids):
        self.server = server
        self.device_ids = device_ids
        self.samples = {d: [] for d in device_ids}  # device_id -> [(session, free_heap)]
        self._task = asyncio.create_task(self._sample())

    async def _sample(self):
        seen = {}
        while True:
            for device_id in self.device_ids:
                session = self.server.hub.session(device_id)
                beat = session and session.last_heartbeat
                if beat and beat is not seen.get(device_id):
                    seen[device_id] = beat
                    self.samples[device_id].append((session, beat["free_heap"]))
            await asyncio.sleep(0.05)

    def of(self, device_id, session):
        return [free for s, free in self.samples[device_id] if s is session]

    def stop(self):
        self._task.cancel()


async def next_session(server, device_id, old, version=None):
    """The unit's first session after `old` (on `version`, if given)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        session = server.hub.session(device_id)
        if session and session is not old and (version is None or session.fw == version):
            return session
        await asyncio.sleep(0.02)
    raise SystemExit(f"{device_id} did not come back online within {TIMEOUT_S} s")


async def committed(server, device_id, version):
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        update = (await server.registry.get_device(device_id)).device.update or {}
        if update.get("version") == version and update.get("state") == "committed":
            return
        await asyncio.sleep(0.02)
    raise SystemExit(f"{device_id} did not commit {version} within {TIMEOUT_S} s: {update}")


# What a unit does between one session and the next, by the push that ended the first: the
# first offer restarts it into update mode; a manifest whole restarts it to check the manifest
# as it boots (while its heap is whole); more restarts than that would be named by number.
RESTARTS = ("restart into update mode", "manifest, restart, check it")


async def update_unit(server, device_id, rel, log):
    """Push `rel` to the unit until it runs it, committed -> (phase seconds, the sessions it
    had in update mode)."""

    async def idle():  # as a rollout pushes: only while no transaction holds the unit
        return (await server.registry.get_device(device_id)).txn_id is None

    session = server.hub.session(device_id)
    phases, updating = {}, []
    offered = at = time.monotonic()
    while (state := await push(session, rel, idle)) == "restarting":
        session = await next_session(server, device_id, session)
        updating.append(session)
        name = RESTARTS[len(phases)] if len(phases) < len(RESTARTS) else f"restart {len(phases)}"
        phases[name], at = time.monotonic() - at, time.monotonic()
    if state != "installing":
        raise SystemExit(f"{device_id}: the update ended in {state!r}, not 'installing'")
    switched = next(t for t, kind, _ in reversed(log.sent[device_id]) if kind == "update_switch")
    phases["download"] = switched - at
    await next_session(server, device_id, session, rel.version)
    online = time.monotonic()
    phases["switch and restart"] = online - switched
    await committed(server, device_id, rel.version)
    phases["trial proof and commit"] = time.monotonic() - online
    phases["total"] = time.monotonic() - offered
    return phases, updating


def boot_free_heap(board):
    """Free heap the first boot in each mode printed: {"serving": [...], "update": [...]}.
    (Later boots in update mode check the manifest first, and the figure they print still
    counts its garbage.)"""
    found = {"serving": [], "update": []}
    mode = "serving"
    log = (board.dir / "serial.log").read_text("utf-8", "replace")
    for line in log.splitlines():
        if re.match(r"qrfleet \S+ on ", line):
            mode = "serving"
        elif line.startswith("qrfleet: update mode"):
            mode = "update"
        elif m := _BOOT_FREE.search(line):
            found[mode].append(int(m[1]))
    return {mode: values[:1] for mode, values in found.items()}


def write_over_usb(port, firmware_files):
    """The firmware written as `qrfleet provision` writes it, the unit's own config kept
    -> bytes on the serial link for the filesystem image."""
    with flash.open_unit(port) as unit:
        vfs = unit.vfs_partition()
        fs = unit.filesystem(vfs)  # held: an open file does not keep it alive
        with fs.open(config.CONFIG_PATH, "rb") as f:
            own_config = f.read()
        files = {**firmware_files, config.CONFIG_PATH: own_config}
        unit.write_filesystem(vfs.offset, littlefs_image(files, vfs.size))
        unit.hard_reset()
        return unit.bytes_sent


async def over_the_air(work, rel, firmware_files, units, heap):
    server = QrfleetServer(
        f"sqlite:///{work}/registry.db",
        TOKEN,
        heartbeat_s=HEARTBEAT_S,
        log=Log(stream=open(work / "server.log", "w")),  # noqa: SIM115 - for the run
    )
    port = await server.start()
    url = f"http://127.0.0.1:{port}"
    provisioning = fleet.Provisioning([url], TOKEN, release_keys=(str(work / "key.pub"),))
    boards = []
    try:
        boards = await fleet.start_boards(
            work / "boards", units, heap=heap, provisioning=provisioning
        )
        ids = [b.device_id for b in boards]
        beats = Heartbeats(server, ids)
        deadline = time.monotonic() + TIMEOUT_S
        while any(len(beats.samples[d]) < NORMAL_BEATS for d in ids):
            if time.monotonic() > deadline:
                raise SystemExit("the boards did not come online with heartbeats in time")
            await asyncio.sleep(0.1)
        serving = {d: server.hub.session(d) for d in ids}
        with CommandLog() as log:
            results = await asyncio.gather(*(update_unit(server, d, rel, log) for d in ids))
        beats.stop()
        updating = {d: u for d, (_, u) in zip(ids, results, strict=True)}
        phases = [p for p, _ in results]
        # The peer: the same firmware over USB, to the first board (now on the release).
        first = boards[0]
        old = server.hub.session(first.device_id)
        started = time.monotonic()
        usb_bytes = await asyncio.to_thread(write_over_usb, first.serial_url, firmware_files)
        await next_session(server, first.device_id, old, RUNNING)
        usb_s = time.monotonic() - started
    finally:
        for board in boards:
            if board.mode != "off":
                await board.stop()
        await server.close()
    boots = [boot_free_heap(b) for b in boards]
    return {
        "commands": {d: log.sent[d] for d in ids},
        "phases": phases,
        "usb": {"bytes": usb_bytes, "seconds": usb_s},
        "heartbeat_free": {
            "serving": [f for d in ids for f in beats.of(d, serving[d])],
            "update": [f for d in ids for s in updating[d] for f in beats.of(d, s)],
        },
        "boot_free": {mode: [f for b in boots for f in b[mode]] for mode in ("serving", "update")},
    }


# -- the run


def prepare(work):
    """The release (this repository's firmware under VERSION), the firmware compiled for a
    board, and the release's manifest and files as the Unix port reads them."""
    release.keygen(work / "key")
    key = public_key((work / "key.pub").read_text())
    rel = read_bundle(release.build(VERSION, str(work / "key")), [key])
    firmware_files = image.firmware_files("virtual")
    for path, data in firmware_files.items():
        target = work / "mpy" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (work / "blobs").mkdir()
    for n, data in enumerate([rel.manifest_text.encode()] + [d for _, d in rel.files]):
        (work / "blobs" / str(n)).write_bytes(data)
    return rel, key, firmware_files


def measure(units, heap):
    with tempfile.TemporaryDirectory(prefix="qrfleet-bench-ota-") as tmp:
        work = Path(tmp)
        rel, key, firmware_files = prepare(work)
        key_hex = key.hex()
        unix = updater_on_unix_port(work, rel, key_hex, heap)
        if unix is None:
            raise SystemExit(f"the download does not complete on the Unix port with {heap}")
        smallest = smallest_heap(work, rel, key_hex, heap_kib(heap))
        unix["smallest_heap_kib"] = smallest
        # At the smallest cap, what was free before the first offer is what the update needed.
        unix["needed_at_peak"] = updater_on_unix_port(work, rel, key_hex, f"{smallest}K")[
            "free_before_offer"
        ]
        timings = verify_timings(work, rel, key_hex, heap)
        timings["nacl_us"] = nacl_verify_us(rel, key)
        counts = operation_counts(rel, key)
        board = asyncio.run(over_the_air(work, rel, firmware_files, units, heap))
    per_unit = [
        {
            "bytes": sum(n for _, _, n in sent),
            "commands": len(sent),
            "chunks": sum(1 for _, kind, _ in sent if kind == "update_chunk"),
        }
        for sent in board["commands"].values()
    ]
    phases = {
        name: {
            "median_s": statistics.median(p[name] for p in board["phases"]),
            "max_s": max(p[name] for p in board["phases"]),
        }
        for name in board["phases"][0]
    }
    return {
        "units": units,
        "heap": heap,
        "release": {
            "version": rel.version,
            "files": len(rel.files),
            "file_bytes": sum(len(d) for _, d in rel.files),
            "manifest_bytes": len(rel.manifest_text.encode()),
            "bundle_bytes": len(rel.bundle),
            "chunk_bytes": chunk_size(UNIT_MAX_MESSAGE),
        },
        "over_the_air": {
            "bytes_per_unit": statistics.median(u["bytes"] for u in per_unit),
            "commands_per_unit": statistics.median(u["commands"] for u in per_unit),
            "chunks_per_unit": statistics.median(u["chunks"] for u in per_unit),
            "phases": phases,
        },
        "usb": {
            **board["usb"],
            "files": len(firmware_files) + 1,
            "file_bytes": sum(len(d) for d in firmware_files.values()),
        },
        "heap_unix_port": unix,
        "heap_virtual_board": {
            source: {
                mode: [min(values), max(values)] if values else None
                for mode, values in modes.items()
            }
            for source, modes in (
                ("heartbeat", board["heartbeat_free"]),
                ("boot", board["boot_free"]),
            )
        },
        "ed25519": {**timings, **counts, **esp32_estimate(timings, counts)},
    }


def report(figures, console):
    rel, ota, usb = figures["release"], figures["over_the_air"], figures["usb"]
    units = figures["units"]
    console.print(
        f"[bold]Firmware update over the air[/]: release {rel['version']}, {rel['files']} files, "
        f"{rel['file_bytes']:,} bytes (manifest {rel['manifest_bytes']:,}, bundle file "
        f"{rel['bundle_bytes']:,}); {units} virtual board{'s' if units > 1 else ''} pushed at "
        f"once, {figures['heap']} heap each, chunks of {rel['chunk_bytes']} bytes"
    )

    table = Table(title="1. The firmware onto one unit")
    table.add_column("")
    table.add_column("over the air (session)", justify="right")
    table.add_column("over USB (esptool, filesystem image)", justify="right")
    table.add_row(
        "bytes sent to the unit",
        f"{ota['bytes_per_unit']:,.0f}",
        f"{usb['bytes']:,}",
    )
    table.add_row(
        "for the firmware's own bytes",
        f"{rel['file_bytes']:,} ({rel['files']} files)",
        f"{usb['file_bytes']:,} ({usb['files']} files, with loader and config)",
    )
    table.add_row(
        "sent / firmware bytes",
        f"{ota['bytes_per_unit'] / rel['file_bytes']:.2f}x",
        f"{usb['bytes'] / usb['file_bytes']:.2f}x",
    )
    table.add_row(
        "messages",
        f"{ota['commands_per_unit']:.0f} commands ({ota['chunks_per_unit']:.0f} chunks)",
        "-",
    )
    table.add_row(
        "until back online, committed",
        f"{ota['phases']['total']['median_s']:.1f} s (median unit)",
        f"{usb['seconds']:.1f} s (virtual serial link)",
    )
    table.add_row("a technician at the unit", "no", "yes")
    console.print(table)

    table = Table(title=f"2. Time per unit, {units} at once, first offer to committed")
    table.add_column("phase")
    table.add_column("median s", justify="right")
    table.add_column("max s", justify="right")
    for name, times in ota["phases"].items():
        table.add_row(name, f"{times['median_s']:.2f}", f"{times['max_s']:.2f}")
    console.print(table)

    unix = figures["heap_unix_port"]
    table = Table(
        title=f"3a. Heap of the download: Updater on the Unix port, {figures['heap']} cap"
    )
    table.add_column("")
    table.add_column("bytes", justify="right")
    for label, key in (
        ("GC heap", "heap_total"),
        ("free at start", "free_at_start"),
        ("free before the first offer (Updater imported)", "free_before_offer"),
        ("lowest free right after a chunk", "lowest_free_after_chunk"),
        ("lowest free after a chunk, collected", "lowest_free_after_chunk_collected"),
        ("used at peak: before offer - lowest free", "used_at_peak"),
        ("held between chunks: before offer - lowest collected", "held_at_peak"),
        ("largest free block after the manifest check", "largest_free_block_after_manifest"),
        ("largest free block at the end", "largest_free_block_at_end"),
    ):
        table.add_row(label, f"{unix[key]:,}")
    table.add_row("smallest heap cap that completes it", f"{unix['smallest_heap_kib']}K")
    table.add_row(
        "needed at peak: free before the offer at that cap", f"{unix['needed_at_peak']:,}"
    )
    console.print(table)

    heap = figures["heap_virtual_board"]
    table = Table(title="3b. Free heap on the virtual boards, lowest to highest of all units")
    table.add_column("")
    table.add_column("serving QRs", justify="right")
    table.add_column("update mode", justify="right")

    def shown(values):
        if values is None:
            return "-"
        low, high = values
        return f"{low:,}" if low == high else f"{low:,} to {high:,}"

    table.add_row(
        "heartbeat free_heap",
        shown(heap["heartbeat"]["serving"]),
        shown(heap["heartbeat"]["update"]),
    )
    table.add_row(
        "first boot (serial log)", shown(heap["boot"]["serving"]), shown(heap["boot"]["update"])
    )
    console.print(table)

    ed = figures["ed25519"]
    table = Table(title="4. Ed25519 verify of the manifest")
    table.add_column("")
    table.add_column("firmware.ota.ed25519, Unix port", justify="right")
    table.add_column("PyNaCl (libsodium), host", justify="right")
    table.add_row(
        "one verify, median", f"{ed['verify_us'] / 1000:.1f} ms", f"{ed['nacl_us']:.0f} us"
    )
    table.add_row("ratio", f"{ed['verify_us'] / ed['nacl_us']:.0f}x", "1x")
    table.add_row("best verify, in parts:", f"{ed['verify_best_us'] / 1000:.1f} ms", "")
    table.add_row(
        f"{ed['products']:,} products mod p x {ed['product_us']:.2f} us",
        f"{ed['products_us'] / 1000:.1f} ms",
        "",
    )
    table.add_row(
        f"2 modular powers x {ed['pow_us']:.0f} us", f"{ed['powers_us'] / 1000:.1f} ms", ""
    )
    table.add_row(f"SHA-512, {ed['sha512_blocks']} blocks", f"{ed['sha512_us'] / 1000:.1f} ms", "")
    table.add_row("the rest (interpreter)", f"{ed['rest_us'] / 1000:.1f} ms", "")
    low, middle, high = ed["esp32_ms"]
    table.add_row(
        "[bold]ESP32, ESTIMATE[/]",
        f"~{middle:,} ms ({low:,}-{high:,})",
        "",
    )
    console.print(table)
    slow = ESP32_SLOWER
    console.print(
        f"ESP32 estimate, not measured: the Unix port's parts scaled by {slow[1]}x "
        f"({slow[0]}-{slow[2]}x: an ESP32 at 240 MHz against this core, interpreter-bound "
        f"MicroPython), with a product's digit work ({ed['product_digit_share']:.0%} of it "
        f"here, from a 127-bit product beside a 255-bit one) and the modular powers {DIGIT_FACTOR}x "
        "more again (16-bit big-int digits on an ESP32, 32-bit on x86-64). Likely low for "
        "SHA-512, whose intermediate values allocate more often with an ESP32's 31-bit small "
        "ints."
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.ota", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--units", type=int, default=1, help="virtual boards pushed at once")
    parser.add_argument("--heap", default=micropython.DEFAULT_HEAP, help="MicroPython heap")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.units < 1:
        parser.error("--units must be at least 1")
    figures = measure(args.units, args.heap)
    report(figures, Console())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
