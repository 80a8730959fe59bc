"""The SQLite store itself: its file, its schema version, and waiting out locks."""

import asyncio
import os
import sqlite3
import stat
import threading
import time

import pytest

from host.registry import InvalidInput, StoreUnavailable, open_registry
from host.registry import sqlite as sqlite_store


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "registry.db"


@pytest.fixture
def url(db_path):
    return f"sqlite:///{db_path}"


def hold_write_lock(db_path, seconds):
    """Another process's long write transaction, played by a thread with its own connection."""
    locked = threading.Event()

    def hold():
        db = sqlite3.connect(db_path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(seconds)
        db.execute("ROLLBACK")
        db.close()

    thread = threading.Thread(target=hold)
    thread.start()
    locked.wait()
    return thread


async def test_a_new_database_gets_the_schema_wal_and_private_permissions(url, db_path):
    async with open_registry(url):
        db = sqlite3.connect(db_path)
        assert db.execute("PRAGMA user_version").fetchone()[0] == sqlite_store.SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()

    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600


def test_a_database_in_a_missing_directory_is_refused_with_advice(tmp_path):
    with pytest.raises(StoreUnavailable, match="check the path and its permissions"):
        open_registry(f"sqlite:///{tmp_path / 'missing' / 'registry.db'}")


async def test_reopening_keeps_everything(url):
    async with open_registry(url) as registry:
        await registry.create_location("L1", "Main street", "strict")

    async with open_registry(url) as registry:
        assert (await registry.get_location("L1")).policy == "strict"


def test_a_database_from_a_newer_qrfleet_is_refused_with_advice(url, db_path):
    db = sqlite3.connect(db_path)
    db.execute(f"PRAGMA user_version = {sqlite_store.SCHEMA_VERSION + 1}")
    db.close()

    with pytest.raises(StoreUnavailable, match="newer than this qrfleet knows.*upgrade qrfleet"):
        open_registry(url)


@pytest.mark.parametrize(
    "url", ["sqlite://registry.db", "sqlite:///", "postgres://db/qrfleet", "x"]
)
def test_a_url_naming_no_store_is_rejected_with_the_right_shape(url):
    with pytest.raises(InvalidInput, match=r"sqlite://"):
        open_registry(url)


async def test_a_lock_held_past_busy_timeout_is_waited_out_not_reported(url, db_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_MS", 20)
    async with open_registry(url) as registry:
        holder = hold_write_lock(db_path, 0.5)
        started = time.monotonic()

        await registry.create_location("L1", "Main street")

        assert time.monotonic() - started >= 0.4
        holder.join()
        assert (await registry.get_location("L1")).name == "Main street"


async def test_a_lock_held_past_the_retry_budget_is_store_unavailable(url, db_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_MS", 20)
    monkeypatch.setattr(sqlite_store, "RETRY_S", 0.2)
    async with open_registry(url) as registry:
        holder = hold_write_lock(db_path, 1.0)

        with pytest.raises(StoreUnavailable, match="stayed locked for 0.2 s") as refusal:
            await registry.create_location("L1", "Main street")

        assert refusal.value.code == "store_unavailable"
        holder.join()
        assert await registry.list_locations() == []


def test_the_schema_itself_forbids_a_second_owner(url, db_path):
    asyncio.run(open_registry(url).close())
    db = sqlite3.connect(db_path)
    db.executescript(
        "INSERT INTO locations VALUES ('L1', 'Main', 'hybrid');"
        "INSERT INTO agents VALUES ('a', 'A', 'L1', 'h1'), ('b', 'B', 'L1', 'h2');"
        "INSERT INTO devices (device_id, secret) VALUES ('u1', 's');"
        "INSERT INTO links VALUES ('u1', 'a', 0);"
    )

    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO links VALUES ('u1', 'b', 0)")
    db.close()


def database_of_schema(db_path, version, unit_row):
    """A database as schema `version` left it, with one unit (`unit_row`: an INSERT)."""
    db = sqlite3.connect(db_path)
    for statements in sqlite_store.MIGRATIONS[:version]:
        for statement in statements:
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {version}")
    db.execute(unit_row)
    db.commit()
    db.close()


async def test_a_database_of_an_older_schema_is_migrated_keeping_its_units(url, db_path):
    database_of_schema(
        db_path, 3, "INSERT INTO devices (device_id, secret, firmware) VALUES ('u1', 's', '0.1.0')"
    )

    async with open_registry(url) as registry:
        unit = (await registry.get_device("u1")).device
        await registry.record_update("u1", {"version": "0.2.0", "state": "trial"})

        assert (unit.firmware, unit.update) == ("0.1.0", None)
        assert (await registry.get_device("u1")).device.update["state"] == "trial"


async def test_a_database_before_via_is_migrated_its_units_on_wi_fi(url, db_path):
    database_of_schema(
        db_path, 4, "INSERT INTO devices (device_id, secret, reset_cause) VALUES ('u1', 's', 'wdt')"
    )

    async with open_registry(url) as registry:
        unit = (await registry.get_device("u1")).device
        await registry.acquire_device("u1", "s1", 30, via="bridge@till-3")

        assert (unit.reset_cause, unit.via) == ("wdt", None)
        assert (await registry.get_device("u1")).device.via == "bridge@till-3"
