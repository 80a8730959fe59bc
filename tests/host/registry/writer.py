"""One process of the concurrent-writers test: THREADS registries, TASKS writers each.

    python -m tests.host.registry.writer URL SEED THREADS TASKS OPS BUSY_TIMEOUT_MS

It prints "ready", waits for a line on stdin, then each writer does OPS random operations on the shop that the test set up
(agents a0.., units u0..): pairing and linking, unlinking, admin transfers,
reserving and releasing, and session takeovers. Refusals are part of the game;
anything else is a failure. At the end it prints one JSON line: what succeeded (counts, the
epochs this process was issued) and the failures.

A short BUSY_TIMEOUT_MS makes SQLite give up waiting for the lock early, so that
the store's own retry loop, not only SQLite's busy handler, keeps SQLITE_BUSY
from the writers.
"""

import asyncio
import json
import random
import sys
import threading
import uuid
from collections import Counter

from host.registry import ADMIN, Actor, TooMany, Unavailable, open_registry
from host.registry import sqlite as sqlite_store
from host.registry.errors import Conflict, Forbidden, NotFound, PairingRejected

AGENTS = [f"a{i}" for i in range(8)]
UNITS = [f"u{i}" for i in range(8)]
REFUSALS = (Conflict, Forbidden, NotFound, PairingRejected, TooMany, Unavailable)


async def writer(registry, rng, ops, results):
    done, epochs, failures = results["done"], results["epochs"], results["failures"]
    for _ in range(ops):
        agent_id, unit = rng.choice(AGENTS), rng.choice(UNITS)
        action = rng.choice(
            ["link", "link", "unlink", "transfer", "reserve", "reserve", "takeover"]
        )
        try:
            if action == "link":
                code = (await registry.issue_pairing_code(unit)).code
                await registry.link(agent_id, unit, code, Actor.agent(agent_id))
            elif action == "unlink":
                await registry.unlink(agent_id, unit, Actor.agent(agent_id))
            elif action == "transfer":
                await registry.transfer(unit, agent_id, ADMIN)
            elif action == "reserve":
                txn_id = uuid.uuid4().hex
                await registry.reserve_for_agent(agent_id, txn_id, ttl_s=600)
                done["reserve"] += 1
                await asyncio.sleep(0)
                action = rng.choice(["complete", "cancel"])
                await getattr(registry, action)(txn_id, Actor.agent(agent_id))
            else:
                epochs.append([unit, await registry.acquire_device(unit, "takeover", 600)])
            done[action] += 1
        except REFUSALS as refusal:
            done[f"refused {refusal.code}"] += 1
        except Exception as error:
            failures.append(f"{action}: {type(error).__name__}: {error}")


def thread_main(url, seed, tasks, ops, results):
    async def main():
        async with open_registry(url) as registry:
            await registry.join(f"writer-{seed}", 3600)
            rng = random.Random(seed)
            await asyncio.gather(
                *(writer(registry, random.Random(rng.random()), ops, results) for _ in range(tasks))
            )

    try:
        asyncio.run(main())
    except Exception as error:
        results["failures"].append(f"thread: {type(error).__name__}: {error}")


def main(url, seed, threads, tasks, ops):
    results = [{"done": Counter(), "epochs": [], "failures": []} for _ in range(threads)]
    workers = [
        threading.Thread(target=thread_main, args=(url, f"{seed}-{i}", tasks, ops, results[i]))
        for i in range(threads)
    ]
    # Start together: the test says "go" once every process is up.
    print("ready", flush=True)
    sys.stdin.readline()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(
        json.dumps(
            {
                "done": sum((r["done"] for r in results), Counter()),
                "epochs": [e for r in results for e in r["epochs"]],
                "failures": [f for r in results for f in r["failures"]],
            }
        )
    )


if __name__ == "__main__":
    url, seed, threads, tasks, ops, busy_timeout_ms = sys.argv[1:]
    sqlite_store.BUSY_TIMEOUT_MS = int(busy_timeout_ms)
    main(url, seed, int(threads), int(tasks), int(ops))
