"""32 writers at once on one store, in separate processes, threads and tasks.

4 processes x 2 threads (each with its own registry and connection) x 4
asyncio tasks fight over the same 8 units: pairing and linking, unlinking,
transfers, reservations, session takeovers. No writer may see a store error
(SQLITE_BUSY included), every change must be one the rules allow at the moment
it happened, and nothing a writer was told succeeded may be missing.
"""

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from host.registry import open_registry
from host.registry import sqlite as sqlite_store
from host.registry.sqlite import path_from_url
from tests.host.registry.conftest import replay_audit
from tests.host.registry.writer import AGENTS, UNITS

REPO = Path(__file__).resolve().parents[3]
THREADS, TASKS, OPS = 2, 4, 100
# One process per entry: two as configured, two leaning on the store's retry loop.
BUSY_TIMEOUTS_MS = (sqlite_store.BUSY_TIMEOUT_MS, sqlite_store.BUSY_TIMEOUT_MS, 1, 1)


async def open_shop(url):
    async with open_registry(url) as registry:
        await registry.create_location("L1", "Main street")
        for agent_id in AGENTS:
            await registry.create_agent(agent_id, f"Till {agent_id}", "L1")
        for unit in UNITS:
            await registry.register_device(unit, f"secret-of-{unit}-0123456789", None, "L1")
            await registry.acquire_device(unit, "s0", 600)


async def final_state(url):
    async with open_registry(url) as registry:
        return await registry.list_devices(), await registry.audit(limit=1_000_000)


def run_writers(url):
    command = [sys.executable, "-m", "tests.host.registry.writer", url]
    writers = [
        subprocess.Popen(
            [*command, str(seed), str(THREADS), str(TASKS), str(OPS), str(busy_timeout_ms)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed, busy_timeout_ms in enumerate(BUSY_TIMEOUTS_MS)
    ]
    for writer in writers:
        assert writer.stdout.readline() == "ready\n", writer.stderr.read()
    started = time.monotonic()
    reports = []
    for writer in writers:
        out, err = writer.communicate("go\n", timeout=120)
        assert writer.returncode == 0, err
        reports.append(json.loads(out))
    return reports, time.monotonic() - started


def test_32_concurrent_writers_keep_every_rule_and_never_see_busy(store_url):
    url = store_url
    asyncio.run(open_shop(url))

    reports, seconds = run_writers(url)

    assert [f for r in reports for f in r["failures"]] == []
    done = sum((Counter(r["done"]) for r in reports), Counter())
    units, audit = asyncio.run(final_state(url))
    owners, reserved = replay_audit(audit, UNITS)
    assert owners == {unit.device_id: unit.agent_id for unit in units}
    assert reserved == dict.fromkeys(UNITS)
    actions = Counter(entry.action for entry in audit)
    for action in ("unlink", "reserve", "complete", "cancel"):
        assert done[action] == actions[action], action
    # A link may find its unit already transferred to its agent: a success without a change.
    assert 0 < actions["link"] <= done["link"]
    assert done["reserve"] > 0 and done["refused conflict"] > 0

    # Every session got its own epoch: 1 for the first, then one more per takeover.
    epochs = {unit: [1] for unit in UNITS}
    for unit, epoch in (e for r in reports for e in r["epochs"]):
        epochs[unit].append(epoch)
    assert {u: sorted(e) for u, e in epochs.items()} == {
        u: list(range(1, len(e) + 1)) for u, e in epochs.items()
    }
    assert {unit.device_id: unit.epoch for unit in units} == {u: len(e) for u, e in epochs.items()}

    if url.startswith("sqlite:"):
        db = sqlite3.connect(path_from_url(url))
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.close()
    operations = sum(done.values())
    print(f"\n{operations} operations by 32 writers in {seconds:.2f} s: {dict(done)}")
