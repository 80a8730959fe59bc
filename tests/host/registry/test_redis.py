"""The Redis store itself: its URL and namespace, optimistic transactions, and a server
that goes away, all against a real valkey-server process."""

import asyncio
import json
import random
import threading
import time
from collections import Counter

import pytest
import valkey
from valkey.exceptions import ConnectionError as LostConnection

from host.registry import InvalidInput, Location, StoreUnavailable, open_registry
from host.registry import redis as redis_store
from host.registry.redis import RedisTransaction
from tests.host.registry.conftest import empty_valkey_db, replay_audit
from tests.host.registry.writer import AGENTS, UNITS, writer
from tools.valkey import free_port, running_valkey

SECRET = "secret-of-a-unit-0123456789"


@pytest.fixture
def url(valkey_server):
    return empty_valkey_db(valkey_server)


@pytest.fixture
def store_url(url):
    """The `registry` and `shop` fixtures use this Redis store only."""
    return url


def in_another_instance(url, operation):
    """Run `operation(registry)` to completion in another registry with its own connection,
    as another server instance would, while the caller waits."""

    async def run():
        async with open_registry(url) as registry:
            await operation(registry)

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    thread.join()


# URL and namespace


@pytest.mark.parametrize(
    "bad_url",
    [
        "redis://",
        "redis:///0",
        "redis://127.0.0.1/db1",
        "redis://127.0.0.1:port/0",
        "redis://127.0.0.1/0?timeout=1",
        "redis://127.0.0.1/0?prefix=a&prefix=b",
        "redis://127.0.0.1:7000,127.0.0.1:7001/0",
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/qrfleet/db1",
        "redis+sentinel://127.0.0.1:26379,/qrfleet/0",
    ],
)
def test_a_malformed_url_is_rejected_with_the_right_shape(bad_url):
    with pytest.raises(InvalidInput, match=r"use redis://HOST:PORT/DB or redis\+sentinel://"):
        open_registry(bad_url)


def test_a_sentinel_url_names_every_sentinel_the_service_and_the_primarys_credentials():
    address = redis_store.Address("redis+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2/shop/3")

    assert address.nodes == [("10.0.0.1", 26379), ("10.0.0.2", 6379)]
    assert (address.service, address.db, address.prefix) == ("shop", 3, "qrfleet:")
    assert (address.username, address.password) == (None, "s@cret")


async def test_prefixes_keep_two_registries_apart_in_one_database(url):
    async with open_registry(f"{url}?prefix=shop-a:") as a:
        async with open_registry(f"{url}?prefix=shop-b:") as b:
            await a.create_location("L1", "Main street")
            await b.create_location("L1", "Harbour road", "strict")

            assert [loc.name for loc in await a.list_locations()] == ["Main street"]
            assert [loc.name for loc in await b.list_locations()] == ["Harbour road"]


async def test_reopening_keeps_everything(url):
    async with open_registry(url) as registry:
        await registry.create_location("L1", "Main street", "strict")

    async with open_registry(url) as registry:
        assert (await registry.get_location("L1")).policy == "strict"


def test_a_store_from_a_newer_qrfleet_is_refused_with_advice(url, valkey_server):
    client = valkey.Valkey(port=valkey_server.port, db=int(url.rsplit("/", 1)[1]))
    client.set("qrfleet:schema", redis_store.SCHEMA_VERSION + 1)
    client.close()

    with pytest.raises(StoreUnavailable, match="newer than this qrfleet knows.*upgrade qrfleet"):
        open_registry(url)


async def test_a_store_before_via_is_taken_its_units_on_wi_fi(url, valkey_server):
    client = valkey.Valkey(port=valkey_server.port, db=int(url.rsplit("/", 1)[1]))
    client.set("qrfleet:schema", 4)
    # Schema 4's unit record: name .. update, without via at its end.
    record = [None, None, "0.1.0", None, None, None, None, None, "wdt", None]
    client.set("qrfleet:device:u1", json.dumps(record))
    client.set("qrfleet:device-secret:u1", SECRET)
    client.sadd("qrfleet:devices", "u1")

    async with open_registry(url) as registry:
        unit = (await registry.get_device("u1")).device
        await registry.acquire_device("u1", "s1", 30, via="bridge@till-3")

        assert (unit.reset_cause, unit.via) == ("wdt", None)
        assert (await registry.get_device("u1")).device.via == "bridge@till-3"
    assert int(client.get("qrfleet:schema")) == redis_store.SCHEMA_VERSION
    client.close()


def test_a_server_that_never_answers_is_store_unavailable_with_advice(monkeypatch):
    monkeypatch.setattr(redis_store, "RETRY_S", 0.3)
    started = time.monotonic()

    with pytest.raises(StoreUnavailable, match="cannot reach.*check that Valkey/Redis runs there"):
        open_registry(f"redis://127.0.0.1:{free_port()}/0")

    assert time.monotonic() - started < 2


# Optimistic transactions


async def test_a_record_changed_by_another_instance_mid_write_makes_the_write_run_again(url):
    async with open_registry(url) as registry:
        await registry.create_location("L1", "Main street")
        runs = []

        def rename(tx):
            location = tx.location("L1")
            runs.append(location.policy)
            if len(runs) == 1:
                in_another_instance(url, lambda other: other.set_policy("L1", "strict"))
            tx.put_location(Location("L1", "Harbour road", location.policy))

        await registry.store.write(rename)

        assert runs == ["hybrid", "strict"]
        # Neither change is lost.
        assert await registry.get_location("L1") == Location("L1", "Harbour road", "strict")


async def test_a_unit_joining_a_listing_mid_write_makes_the_write_run_again(url):
    async with open_registry(url) as registry:
        await registry.create_location("L1", "Main street")
        await registry.register_device("u1", SECRET, None, "L1")
        listed = []

        def name_after_pool(tx):
            pool = tx.pool_devices("L1")
            listed.append(pool)
            if len(listed) == 1:
                in_another_instance(
                    url, lambda other: other.register_device("u2", SECRET, None, "L1")
                )
            tx.put_location(Location("L1", f"{len(pool)} pool units", "hybrid"))

        await registry.store.write(name_after_pool)

        assert listed == [["u1"], ["u1", "u2"]]
        assert (await registry.get_location("L1")).name == "2 pool units"


async def test_a_read_sees_one_snapshot_even_when_a_write_lands_between_its_reads(url):
    async with open_registry(url) as registry:
        await registry.create_location("L1", "Main street")
        await registry.create_location("L2", "Harbour road")
        runs = []

        def both_names(tx):
            first = tx.location("L1").name
            if not runs:
                in_another_instance(url, rename_both)
            runs.append((first, tx.location("L2").name))
            return runs[-1]

        async def rename_both(other):
            await other.store.write(
                lambda tx: [
                    tx.put_location(Location("L1", "New L1", "hybrid")),
                    tx.put_location(Location("L2", "New L2", "hybrid")),
                ]
            )

        assert await registry.store.read(both_names) == ("New L1", "New L2")
        assert runs[0] == ("Main street", "New L2")  # torn: thrown away and read again


# Losing the connection (faults injected in the client: the server keeps running)


async def test_a_commit_whose_reply_is_lost_is_found_by_its_receipt_and_counts_once(
    shop, monkeypatch
):
    await shop.open()
    await shop.connect("u1", "u2", "u3")
    commit = RedisTransaction.commit
    lost = []

    def commit_then_lose_the_reply(tx, receipt=None):
        committed = commit(tx, receipt)
        if receipt is not None and not lost:
            lost.append(receipt)
            tx._conn.disconnect()
            raise LostConnection("connection reset after EXEC")
        return committed

    monkeypatch.setattr(RedisTransaction, "commit", commit_then_lose_the_reply)
    reservation = await shop.registry.reserve_for_agent("a", "t1", 60)

    # Run again without the receipt, it would have reserved u2 as well, or refused t1.
    assert lost and reservation.device_id == "u1"
    assert [e.txn_id for e in await shop.registry.audit() if e.action == "reserve"] == ["t1"]
    assert (await shop.registry.get_device("u2")).txn_id is None


async def test_a_connection_lost_before_commit_runs_the_operation_again(shop, monkeypatch):
    await shop.open()
    await shop.connect("u1", "u2", "u3")
    commit = RedisTransaction.commit
    runs = []

    def lose_the_connection_once(tx, receipt=None):
        runs.append(receipt)
        if len(runs) == 1:
            tx._conn.disconnect()
            raise LostConnection("connection reset before EXEC")
        return commit(tx, receipt)

    monkeypatch.setattr(RedisTransaction, "commit", lose_the_connection_once)
    reservation = await shop.registry.reserve_for_agent("a", "t1", 60)

    assert len(runs) == 2 and reservation.device_id == "u1"
    assert [e.txn_id for e in await shop.registry.audit() if e.action == "reserve"] == ["t1"]


async def test_audit_numbers_after_a_lost_connection_skip_past_any_a_failover_lost(
    shop, valkey_server
):
    """Entries that did not wait for a replica may vanish with a primary, and the next one
    would number new entries the same: an event client that saw the lost ones would skip
    those. After a lost connection, numbers jump past any such tail instead."""
    await shop.open()
    await shop.connect("u1")
    first = (await shop.registry.audit(limit=1))[-1].seq
    await shop.connect("u2")
    assert (await shop.registry.audit(limit=1))[-1].seq == first + 1  # no gap without a loss

    killer = valkey.Valkey(port=valkey_server.port)
    killer.client_kill_filter(_type="normal", skipme=True)  # every store connection is lost
    killer.close()
    await shop.connect("u3")

    after = await shop.registry.audit_after(first + 1)
    assert [e.device_id for e in after] == ["u3"]
    assert after[0].seq >= first + 2 + redis_store.AUDIT_SEQ_GAP


# A real server that restarts or stays away


def assert_nothing_half_applied(port, prefix="qrfleet:"):
    """Every record and the indexes that point at it agree, key by key."""
    client = valkey.Valkey(port=port, decode_responses=True)
    try:
        txns = set(client.smembers(f"{prefix}reservations"))
        for key in client.scan_iter(f"{prefix}reserved:*"):
            value = client.get(key)
            txn_id = json.loads(value)[0]
            assert txn_id in txns, key
            assert client.get(f"{prefix}reservation:{txn_id}") == value, key
        assert len(txns) == len(list(client.scan_iter(f"{prefix}reservation:*")))
        linked = {}
        for key in client.scan_iter(f"{prefix}link:*"):
            linked[key.split(":", 2)[2]] = json.loads(client.get(key))[0]
        for agent_id in AGENTS:
            members = set(client.smembers(f"{prefix}links:{agent_id}"))
            assert members == {d for d, a in linked.items() if a == agent_id}, agent_id
        assert client.llen(f"{prefix}queue") == len(list(client.scan_iter(f"{prefix}ticket:*")))
    finally:
        client.close()


async def open_shop(registry):
    await registry.create_location("L1", "Main street")
    for agent_id in AGENTS:
        await registry.create_agent(agent_id, f"Till {agent_id}", "L1")
    for unit in UNITS:
        await registry.register_device(unit, SECRET, None, "L1")
        await registry.acquire_device(unit, "s0", 600)


async def traffic(registries, stop, results):
    """Two instances, four writers each, random operations until `stop` is set."""

    async def one_writer(registry, rng):
        while not stop.is_set():
            await writer(registry, rng, 1, results)

    await asyncio.gather(
        *(
            one_writer(r, random.Random(f"{i}-{n}"))
            for i, r in enumerate(registries)
            for n in range(4)
        )
    )


@pytest.fixture
def durable_valkey(tmp_path):
    """A server of its own that journals every write before answering, so a restart keeps
    all it acknowledged."""
    with running_valkey(tmp_path / "valkey", log_path=tmp_path / "valkey.log") as server:
        yield server


async def test_a_server_restart_mid_traffic_loses_nothing_and_applies_nothing_twice(
    durable_valkey,
):
    url = durable_valkey.url()
    results = {"done": Counter(), "epochs": [], "failures": []}
    async with open_registry(url) as one, open_registry(url) as two:
        await one.join("one", 3600)
        await two.join("two", 3600)
        await open_shop(one)
        stop = asyncio.Event()
        running = asyncio.ensure_future(traffic([one, two], stop, results))
        await asyncio.sleep(0.5)
        before = sum(results["done"].values())

        await asyncio.to_thread(durable_valkey.restart, kill=True, down_s=0.5)
        after_restart = sum(results["done"].values())
        await asyncio.sleep(0.5)
        stop.set()
        await running

        after = sum(results["done"].values())
        assert before > 0 and after > after_restart
        # Every in-flight operation waited the restart out and completed.
        assert results["failures"] == []
        units, audit = await one.list_devices(), await one.audit(limit=1_000_000)

    assert_nothing_half_applied(durable_valkey.port)
    owners, reserved = replay_audit(audit, UNITS)
    assert owners == {unit.device_id: unit.agent_id for unit in units}
    assert reserved == {unit.device_id: unit.txn_id for unit in units}
    actions = Counter(entry.action for entry in audit)
    done = results["done"]
    for action in ("unlink", "reserve", "complete", "cancel"):
        assert done[action] == actions[action], action
    # Every epoch issued once: 1 at the shop's opening, then one more per takeover.
    epochs = sorted(tuple(e) for e in results["epochs"])
    assert len(epochs) == len(set(epochs))
    for unit in units:
        issued = [epoch for u, epoch in epochs if u == unit.device_id]
        assert issued == list(range(2, len(issued) + 2))
        assert unit.epoch == len(issued) + 1


async def test_an_outage_past_the_retry_budget_is_store_unavailable_then_the_store_recovers(
    durable_valkey, monkeypatch
):
    monkeypatch.setattr(redis_store, "RETRY_S", 1.0)
    async with open_registry(durable_valkey.url()) as registry:
        await registry.create_location("L1", "Main street")
        durable_valkey.stop(kill=True)
        started = time.monotonic()

        outcomes = await asyncio.gather(
            registry.create_location("L2", "Harbour road"),
            registry.set_policy("L1", "strict"),
            registry.list_locations(),
            return_exceptions=True,
        )

        assert [type(o) for o in outcomes] == [StoreUnavailable] * 3
        assert "cannot reach the registry store" in outcomes[0].message
        # Queued behind the first, the others did not each wait a whole budget again.
        assert time.monotonic() - started < 2.5
        durable_valkey.start()
        assert await registry.list_locations() == [Location("L1", "Main street", "hybrid")]
        await registry.create_location("L2", "Harbour road")
        assert (await registry.get_location("L2")).name == "Harbour road"
