"""Fixtures for the registry tests: every store kind, and a clock the test moves.

`async def` tests run in a fresh event loop each (this directory needs no
asyncio plugin).
"""

import asyncio
import inspect
import itertools

import pytest
import valkey

from host.registry import Actor, open_registry
from tools.valkey import running_valkey

# Some Tuesday in 2027, so that times in messages look real.
START = 1_800_000_000.0
# Instances in these tests stay present as long as the clock allows, unless a test says not.
INSTANCE_TTL_S = 3600


class FakeClock:
    def __init__(self):
        self.now = START

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        names = pyfuncitem._fixtureinfo.argnames
        asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
        return True
    return None


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory):
    """One real valkey-server for the session, keeping nothing on disk."""
    log_path = tmp_path_factory.mktemp("valkey") / "valkey.log"
    with running_valkey(log_path=log_path) as server:
        yield server


# The server's default number of databases.
VALKEY_DATABASES = 16
_valkey_dbs = itertools.count()


def empty_valkey_db(server):
    """The URL of the server's next database, emptied now: databases are used in turn, so
    one test may hold up to VALKEY_DATABASES stores at once."""
    db = next(_valkey_dbs) % VALKEY_DATABASES
    client = valkey.Valkey(port=server.port, db=db)
    client.flushdb()
    client.close()
    return server.url(db)


@pytest.fixture(params=["sqlite", "redis"])
def new_store_url(request, tmp_path):
    """`new_store_url()` -> the URL of another empty store, of each kind in turn.

    A new store kind joins every contract test by being added here."""
    made = itertools.count()
    if request.param == "sqlite":
        return lambda: f"sqlite:///{tmp_path / f'registry-{next(made)}.db'}"
    if request.param == "redis":
        server = request.getfixturevalue("valkey_server")
        return lambda: empty_valkey_db(server)
    raise ValueError(request.param)


@pytest.fixture
def store_url(new_store_url):
    return new_store_url()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def registry(store_url, clock):
    registry = open_registry(store_url, clock=clock, poll_s=0.01)
    yield registry
    asyncio.run(registry.close())


class Shop:
    """A location with two agents, `a` and `b`, and registered units; sessions on demand."""

    def __init__(self, registry, location_id="L1"):
        self.registry = registry
        self.location_id = location_id
        self.epochs = {}

    async def open(self, policy="hybrid", units=("u1", "u2", "u3")):
        await self.registry.join("api", INSTANCE_TTL_S)
        await self.registry.create_location(self.location_id, "Main street", policy)
        for agent_id in ("a", "b"):
            await self.registry.create_agent(agent_id, f"Till {agent_id}", self.location_id)
        for device_id in units:
            await self.registry.register_device(
                device_id, f"secret-of-{device_id}-0123456789", location_id=self.location_id
            )
        return self

    async def pair(self, agent_id, device_id):
        code = await self.registry.issue_pairing_code(device_id)
        return await self.registry.link(agent_id, device_id, code.code, Actor.agent(agent_id))

    async def connect(self, *device_ids, server_id="s1", ttl_s=30):
        for device_id in device_ids:
            self.epochs[device_id] = await self.registry.acquire_device(device_id, server_id, ttl_s)

    async def owners(self):
        return {d.device_id: d.agent_id for d in await self.registry.list_devices()}


def replay_audit(entries, units):
    """Replay the audit log, asserting each ownership and reservation change was allowed
    when it happened -> (owner by unit, live transaction by unit) at the end."""
    owners, reserved = dict.fromkeys(units), dict.fromkeys(units)
    for entry in entries:
        unit = entry.device_id
        if entry.action == "link":
            assert owners[unit] is None, entry
            assert entry.actor in (f"agent:{entry.agent_id}", "admin"), entry
            owners[unit] = entry.agent_id
        elif entry.action == "unlink":
            assert owners[unit] == entry.agent_id, entry
            assert entry.actor in (f"agent:{entry.agent_id}", "admin"), entry
            owners[unit] = None
        elif entry.action == "transfer":
            assert entry.actor == "admin", entry
            owners[unit] = entry.agent_id
        elif entry.action == "reserve":
            assert reserved[unit] is None, entry
            reserved[unit] = entry.txn_id
        elif entry.action in ("complete", "cancel", "expire", "release", "superseded"):
            assert reserved[unit] == entry.txn_id, entry
            reserved[unit] = None
    return owners, reserved


@pytest.fixture
def shop(registry):
    return Shop(registry)
