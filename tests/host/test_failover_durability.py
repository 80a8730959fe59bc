"""No acknowledged change is lost in a failover: real valkey-server processes (a primary, two
replicas, one Sentinel watching them), the store on a primary its replicas cannot confirm,
and three `qrfleet serve` instances with simulated units, cashiers selling and a back office
linking while the primary dies, is paused past its replacement, or a replica restarts.

One replicated set serves the whole module; each test starts with it settled (a server a test
stopped comes back as a replica of the primary of the moment)."""

import json
import signal
import threading
import time
from collections import Counter
from contextlib import ExitStack, contextmanager

import pytest
import valkey

from host.registry import Conflict, InvalidInput, StoreUnavailable, open_registry
from host.registry.records import ADMIN
from host.registry.redis import REPLICA_WAIT_S, Address
from tools.background import BackgroundLoop, wait_for
from tools.bench.durability import Linker, Shop, lost
from tools.harness.selling import Selling
from tools.valkey import ReplicatedValkey, replication_info

# With 1 s, a loaded 2-core machine saw the Sentinel declare the primary it had just promoted
# down before its first PONG (1 s after switching to it) and fail over a second time; a second
# failover may promote the stale old primary, not yet converted to a replica, which no store
# can guard against. The README's set-up uses 5 s.
DOWN_AFTER_S = 2.0
# Measured here (SIGKILL of the primary, two replicas, one Sentinel, 2 cores both kept busy by
# two other processes): every cashier served again 3.4-4.2 s after the kill; the store connects
# to the promoted replica as soon as the Sentinel advertises it, before the other follows it.
SERVED_AGAIN_S = DOWN_AFTER_S + 3
SECRET = "secret-of-a-unit-0123456789"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def valkeys(tmp_path_factory):
    with ReplicatedValkey(
        tmp_path_factory.mktemp("valkey"), replicas=2, down_after_ms=int(DOWN_AFTER_S * 1000)
    ) as replicated:
        yield replicated


@pytest.fixture(autouse=True)
def settled(valkeys):
    """Every server up, replicating the primary, seen by the Sentinel."""
    for server in valkeys.servers:
        if server.process is None:
            valkeys.rejoin(server)
    valkeys.wait_settled()


@pytest.fixture(scope="module")
def shop(valkeys, tmp_path_factory):
    with ExitStack() as stack:
        yield Shop(stack, tmp_path_factory.mktemp("shop"), valkeys.url())


@pytest.fixture(scope="module")
def linker(shop):
    return Linker(shop)


@pytest.fixture
def loop():
    """An event loop in a thread, for registries used between blocking steps."""
    background = BackgroundLoop()
    yield background
    background.close()


@pytest.fixture
def registries(loop):
    """`registries(url, shop=True)` -> a registry on `url` (with `shop`: joined as instance s1,
    with a location, agents a and b, and unit u1), closed after the test."""
    opened = []

    async def open_one(url, shop):
        registry = open_registry(url)
        opened.append(registry)
        if shop:
            await registry.join("s1", 60)
            await registry.create_location("L1", "Main street")
            for agent_id in ("a", "b"):
                await registry.create_agent(agent_id, f"Till {agent_id}", "L1")
            await registry.register_device("u1", SECRET, location_id="L1")
        return registry

    yield lambda url, shop=True: loop.run(open_one(url, shop))
    for registry in opened:
        loop.run(registry.close())


@contextmanager
def selling(shop, linker):
    """The cashiers sell and the back office links until `.stop()` or the block's end."""
    stop = threading.Event()
    linking = threading.Thread(target=linker.run, args=(stop,))
    linking.start()
    try:
        with Selling(shop.cashiers) as sales:
            yield sales
    finally:
        stop.set()
        linking.join()


def assert_nothing_lost(shop, linker):
    found = lost(shop, shop.cashiers, linker)
    assert not any(found.values()), {what: items for what, items in found.items() if items}


def client(server, db=0):
    return valkey.Valkey(port=server.port, db=db, decode_responses=True, socket_timeout=5)


def stored(server, db, key):
    """A registry record as `server` holds it (its JSON array), or None."""
    with client(server, db) as c:
        value = c.get(f"qrfleet:{key}")
    return None if value is None else json.loads(value)


@contextmanager
def paused(servers):
    for server in servers:
        server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for server in servers:
            server.process.send_signal(signal.SIGCONT)


@contextmanager
def unguarded(primary):
    """The primary takes writes whatever its replicas (min-replicas-to-write 0): the store's
    wait alone stands between a caller and a change no replica has."""
    with client(primary) as c:
        c.config_set("min-replicas-to-write", 0)
    try:
        yield
    finally:
        if primary.process is not None:
            with client(primary) as c:
                c.config_set("min-replicas-to-write", primary.min_replicas)


def answer(loop, linking):
    """The agent a link left its unit with, or why it was refused."""
    try:
        return loop.run(linking).agent_id
    except StoreUnavailable:
        return "unavailable"
    except Conflict:
        return "conflict"


# The store


def test_changes_wait_for_one_replica_behind_sentinel_and_for_none_on_a_plain_url():
    assert Address("redis+sentinel://127.0.0.1:26379/shop/0").min_replicas == 1
    assert Address("redis://127.0.0.1:6379/0").min_replicas == 0
    assert Address("redis+sentinel://h:26379/shop/0?min_replicas=2&prefix=p:").min_replicas == 2
    assert Address("redis://127.0.0.1:6379/0?min_replicas=1").min_replicas == 1
    with pytest.raises(InvalidInput, match="&min_replicas=N"):
        Address("redis+sentinel://127.0.0.1:26379/shop/0?min_replicas=one")


def test_a_change_no_replica_confirms_in_time_is_refused_saying_it_may_stand(
    valkeys, loop, registries
):
    primary = valkeys.serving()
    replicas = [s for s in valkeys.servers if s is not primary]
    registry = registries(valkeys.url(db=1))
    epoch = loop.run(registry.acquire_device("u1", "s1", 30))

    with unguarded(primary), paused(replicas):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as refused:
            loop.run(registry.link("a", "u1", None, ADMIN))
        waited = time.monotonic() - started
        started = time.monotonic()
        renewed = loop.run(registry.renew_device("u1", "s1", epoch, 30))
        renewed_in = time.monotonic() - started
        on_primary = stored(primary, 1, "link:u1")

    assert "may or may not stand" in str(refused.value)
    assert "retry with the same Idempotency-Key" in str(refused.value)
    assert REPLICA_WAIT_S <= waited < REPLICA_WAIT_S + 0.5
    # A heartbeat may be lost (it is renewed within a second): it does not wait.
    assert renewed and renewed_in < REPLICA_WAIT_S / 2
    # The link stood on the primary; once a replica has it, asking again confirms it.
    assert on_primary[0] == "a"
    assert loop.run(registry.link("a", "u1", None, ADMIN)).agent_id == "a"


def test_an_epoch_is_handed_out_only_once_a_replica_has_it_so_epochs_grow_across_a_failover(
    valkeys, loop, registries
):
    primary = valkeys.serving()
    replicas = [s for s in valkeys.servers if s is not primary]
    registry = registries(valkeys.url(db=2))
    handed_out = [loop.run(registry.acquire_device("u1", "s1", 30)) for _ in range(3)]

    with unguarded(primary), paused(replicas):
        with client(primary) as c:  # what the primary takes from now on reaches no replica
            c.client_kill_filter(_type="slave")
        with pytest.raises(StoreUnavailable, match="may or may not stand"):
            loop.run(registry.acquire_device("u1", "s1", 30))
        only_on_primary = stored(primary, 2, "lease:u1")[1]
        primary.stop(kill=True)
    # A replica is promoted without that epoch; the store follows it within its retry budget.
    after = loop.run(registry.acquire_device("u1", "s1", 30))

    assert handed_out == [1, 2, 3]
    assert only_on_primary == 4
    assert after > max(handed_out)
    # Handed out again: the caller of the first was refused, so nobody holds it.
    assert after == only_on_primary


def test_a_primary_paused_past_its_replacement_acknowledges_nothing_that_is_then_lost(
    valkeys, shop, linker, loop, registries
):
    stale = valkeys.serving()
    first = registries(valkeys.url(db=3))
    second = registries(valkeys.url(db=3), shop=False)  # both connected to this primary now

    with selling(shop, linker) as sales:
        time.sleep(1)
        with unguarded(stale):
            stale.process.send_signal(signal.SIGSTOP)
            wait_for(lambda: valkeys.advertised_port() != stale.port, 10, "a replica promoted")
            stale.process.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            # Still connected to the old primary, which takes the link. Either no replica
            # confirms it (refused), or the one that does is about to follow the new primary,
            # which the Sentinel names: the store links there instead.
            first_answer = answer(loop, first.link("a", "u1", None, ADMIN))
            on_stale = stored(stale, 3, "link:u1")
        wait_for(
            lambda: replication_info(stale.port)["connected_slaves"] == 0, 5, "replicas to leave it"
        )
        # Guarded again and without replicas, it refuses writes (NOREPLICAS). That u1 is a's
        # is its view only: the store confirms a refusal too, and asks the new primary.
        second_answer = answer(loop, second.link("b", "u1", None, ADMIN))
        time.sleep(1)
        results = sales.stop()
    on_promoted = stored(valkeys.wait_settled(replicas=False), 3, "link:u1")
    valkeys.rejoin(stale)  # as the Sentinel would, about 10 s after it answers again
    refused = sum((s.refused_after(resumed) for s in results), Counter())
    print(
        f"the old primary's link: {first_answer}; the new one's: {second_answer}; the "
        f"cashiers' refusals after SIGCONT: {dict(refused)}"
    )

    assert on_stale[0] == "a"  # the old primary took the link after it was replaced
    assert first_answer in ("unavailable", "a")
    assert on_promoted[0] == ("a" if first_answer == "a" else "b")
    assert second_answer == ("conflict" if first_answer == "a" else "b")
    assert stored(stale, 3, "link:u1") == on_promoted  # what only it held is gone
    assert_nothing_lost(shop, linker)


# Selling through three instances


def test_the_primary_killed_while_cashiers_sell_loses_nothing_acknowledged(valkeys, shop, linker):
    with selling(shop, linker) as sales:
        time.sleep(2)
        killed = time.monotonic()
        valkeys.serving().stop(kill=True)
        time.sleep(SERVED_AGAIN_S + 1)
        results = sales.stop()
    valkeys.wait_settled()
    back = {s.agent_id: s.first_qr_after(killed) for s in results}
    back = {a: None if t is None else round(t - killed, 2) for a, t in back.items()}
    refused = sum((s.refused_after(killed) for s in results), Counter())
    print(f"after SIGKILL of the primary: each cashier served again in {back} s")
    print(f"refusals after the kill: {dict(refused)}")

    assert all(t is not None and t < SERVED_AGAIN_S for t in back.values()), back
    assert_nothing_lost(shop, linker)


def test_selling_goes_on_while_a_replica_restarts(valkeys, shop, linker):
    replica = next(s for s in valkeys.servers if s is not valkeys.serving())
    with selling(shop, linker) as sales:
        time.sleep(1)
        began = time.monotonic()
        valkeys.rejoin(replica)  # stopped, started again, copied from the primary
        restarted_in = time.monotonic() - began
        time.sleep(1)
        ended = time.monotonic()
        results = sales.stop()

    gaps = [s.longest_gap(began, ended) for s in results]
    print(f"replica back in {restarted_in:.2f} s; longest gap without a QR {max(gaps):.2f} s")
    assert not any(s.refused_after(began) for s in results)
    assert max(gaps) < 1.0
    assert_nothing_lost(shop, linker)
