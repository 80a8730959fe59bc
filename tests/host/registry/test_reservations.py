"""Contract: picking and reserving a unit for an agent's QR, and every refusal, on every store."""

import asyncio

import pytest

from host.registry import (
    ADMIN,
    Actor,
    AllBusy,
    Conflict,
    DeviceOffline,
    Forbidden,
    InvalidInput,
    Limits,
    NotFound,
    NotLinked,
    QueueFull,
    QueuePlaceLimit,
    ReservationLimit,
    open_registry,
)
from host.registry.errors import format_time
from tests.host.registry.conftest import Shop


async def until(check, *args, timeout=5.0):
    """Let the other tasks run until `await check(*args)` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check(*args):
        assert loop.time() < deadline, f"{check.__name__}{args} stayed false for {timeout} s"
        await asyncio.sleep(0.005)


async def queue_is(registry, length):
    return len(await registry.waiting("L1")) == length


async def has_served(served, count):
    return len(served) >= count


# Picking a unit by policy


async def test_strict_serves_the_agents_own_unit(shop):
    await shop.open("strict")
    await shop.pair("a", "u2")
    await shop.connect("u1", "u2", "u3")

    reservation = await shop.registry.reserve_for_agent("a", "t1")

    assert (reservation.device_id, reservation.agent_id) == ("u2", "a")


async def test_strict_never_falls_back_to_the_pool(shop):
    await shop.open("strict")
    await shop.connect("u1", "u2", "u3")

    with pytest.raises(NotLinked, match="location L1 is strict") as refusal:
        await shop.registry.reserve_for_agent("a", "t1")

    assert refusal.value.code == "not_linked"
    assert "link one by scanning its pairing QR" in refusal.value.message


async def test_hybrid_prefers_the_own_unit_and_falls_back_to_the_pool(shop):
    await shop.open("hybrid")
    await shop.pair("a", "u3")
    await shop.connect("u1", "u2", "u3")

    first = await shop.registry.reserve_for_agent("a", "t1", supersede=False)
    second = await shop.registry.reserve_for_agent("a", "t2", supersede=False)

    assert (first.device_id, second.device_id) == ("u3", "u1")


async def test_pool_serves_any_free_unit_of_the_location(shop):
    await shop.open("pool")
    await shop.connect("u1", "u2", "u3")

    units = [
        (await shop.registry.reserve_for_agent(agent, f"t{i}", supersede=False)).device_id
        for i, agent in enumerate("aba")
    ]

    assert units == ["u1", "u2", "u3"]


@pytest.mark.parametrize("policy", ["strict", "pool", "hybrid"])
async def test_no_policy_takes_a_unit_linked_to_another_agent(store_url, clock, policy):
    async with open_registry(store_url, clock=clock, limits=Limits(reservations_per_agent=9)) as r:
        shop = await Shop(r).open(policy)
        await shop.pair("b", "u1")
        await shop.connect("u1", "u2", "u3")

        taken = []
        with pytest.raises((AllBusy, NotLinked)):
            for i in range(4):
                taken.append((await r.reserve_for_agent("a", f"t{i}", supersede=False)).device_id)

        assert taken == ([] if policy == "strict" else ["u2", "u3"])
        assert (await shop.owners())["u1"] == "b"


async def test_an_agent_without_any_unit_to_use_is_told_how_to_get_one(shop):
    await shop.open("hybrid", units=())

    with pytest.raises(NotLinked, match="no unlinked pool unit either"):
        await shop.registry.reserve_for_agent("a", "t1")


async def test_an_offline_own_unit_is_reported_with_the_time_it_was_last_seen(shop, clock):
    await shop.open("strict")
    await shop.pair("a", "u1")
    await shop.connect("u1", ttl_s=10)
    last_seen = clock.now
    clock.advance(60)

    with pytest.raises(DeviceOffline) as refusal:
        await shop.registry.reserve_for_agent("a", "t1")

    assert refusal.value.code == "device_offline"
    assert (refusal.value.device_ids, refusal.value.since) == (["u1"], last_seen)
    assert f"is offline since {format_time(last_seen)}" in refusal.value.message


async def test_a_unit_that_never_connected_is_reported_as_such(shop):
    await shop.open("strict")
    await shop.pair("a", "u1")

    with pytest.raises(DeviceOffline, match="has never connected"):
        await shop.registry.reserve_for_agent("a", "t1")


async def test_hybrid_uses_the_pool_while_the_own_unit_is_offline(shop):
    await shop.open("hybrid")
    await shop.pair("a", "u1")
    await shop.connect("u2")

    assert (await shop.registry.reserve_for_agent("a", "t1")).device_id == "u2"


async def test_a_reservation_names_the_instance_that_holds_it(shop):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1", server_id="s7")

    reservation = await shop.registry.reserve_for_agent("a", "t1")

    assert (reservation.server_id, reservation.epoch) == shop.registry.instance
    assert (await shop.registry.get_device("u1")).txn_id == "t1"


# Holding and releasing


async def test_a_unit_is_never_reserved_twice(shop):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1")
    await shop.registry.reserve_for_agent("a", "t1")

    with pytest.raises(AllBusy) as refusal:
        await shop.registry.reserve_for_agent("b", "t2")

    assert refusal.value.code == "all_busy"
    assert (refusal.value.busy, refusal.value.waiting) == (1, 0)
    assert "pass wait_s to wait in line" in refusal.value.message


async def test_completing_releases_the_unit_for_the_next_transaction(shop):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1")
    await shop.registry.reserve_for_agent("a", "t1")

    await shop.registry.complete("t1", Actor.agent("a"))

    assert (await shop.registry.reserve_for_agent("b", "t2")).device_id == "u1"


async def test_only_the_holding_agent_or_an_admin_releases_a_transaction(shop):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1")
    await shop.registry.reserve_for_agent("a", "t1")

    with pytest.raises(Forbidden, match="agent:b cannot complete transaction t1"):
        await shop.registry.complete("t1", Actor.agent("b"))
    assert (await shop.registry.get_reservation("t1")).agent_id == "a"

    await shop.registry.cancel("t1", ADMIN)
    with pytest.raises(NotFound):
        await shop.registry.get_reservation("t1")


async def test_a_finished_transaction_cannot_be_finished_again(shop):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1")
    await shop.registry.reserve_for_agent("a", "t1")
    await shop.registry.complete("t1", Actor.agent("a"))

    with pytest.raises(NotFound, match="unknown or already finished"):
        await shop.registry.cancel("t1", Actor.agent("a"))


async def test_a_reservation_expires_after_its_ttl(shop, clock):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1", ttl_s=600)
    await shop.registry.reserve_for_agent("a", "t1", ttl_s=20)
    clock.advance(20)

    with pytest.raises(NotFound, match="expired and released its unit"):
        await shop.registry.complete("t1", Actor.agent("a"))
    assert (await shop.registry.reserve_for_agent("b", "t2")).device_id == "u1"
    assert [(e.action, e.txn_id) for e in await shop.registry.audit(device_id="u1")][-3:] == [
        ("reserve", "t1"),
        ("expire", "t1"),
        ("reserve", "t2"),
    ]


async def test_sweeping_expires_what_nobody_released(shop, clock):
    await shop.open("pool", units=("u1", "u2"))
    await shop.connect("u1", ttl_s=600)
    await shop.registry.reserve_for_agent("a", "t1", ttl_s=20)
    await shop.registry.issue_pairing_code("u2", ttl_s=60)
    clock.advance(60)

    swept = await shop.registry.sweep()

    assert (swept["reservations"], swept["tickets"], swept["pairing_codes"]) == (1, 0, 1)
    assert (await shop.registry.get_device("u1")).txn_id is None
    assert (await shop.registry.audit())[-1].action == "expire"


async def test_a_transaction_id_is_used_once(shop):
    await shop.open("pool")
    await shop.connect("u1", "u2")
    await shop.registry.reserve_for_agent("a", "t1")

    with pytest.raises(Conflict, match="use a new transaction id"):
        await shop.registry.reserve_for_agent("a", "t1")


@pytest.mark.parametrize("ttl_s, wait_s", [(0, 0), (3601, 0), (30, -1), (30, 301)])
async def test_a_reservation_needs_sensible_times(shop, ttl_s, wait_s):
    await shop.open("pool")
    await shop.connect("u1")

    with pytest.raises(InvalidInput, match="must be a number of seconds"):
        await shop.registry.reserve_for_agent("a", "t1", ttl_s=ttl_s, wait_s=wait_s)
    assert (await shop.registry.get_device("u1")).txn_id is None


async def test_every_reservation_is_audited_with_who_and_when(shop, clock):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1")
    await shop.registry.reserve_for_agent("a", "t1")
    clock.advance(3)
    await shop.registry.cancel("t1", Actor.agent("a"))

    trail = [(e.action, e.actor, e.txn_id, e.at) for e in await shop.registry.audit(agent_id="a")]

    assert trail[-2:] == [
        ("reserve", "agent:a", "t1", clock.now - 3),
        ("cancel", "agent:a", "t1", clock.now),
    ]


# The wait queue


async def test_waiting_requests_are_served_in_arrival_order(shop):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1")
    registry = shop.registry
    await registry.reserve_for_agent("a", "t0", supersede=False)
    served = []

    async def wait_for_unit(agent_id, txn_id):
        await registry.reserve_for_agent(agent_id, txn_id, wait_s=60, supersede=False)
        served.append(txn_id)

    waiters = []
    for agent_id, txn_id in (("b", "t1"), ("a", "t2"), ("b", "t3")):
        waiters.append(asyncio.create_task(wait_for_unit(agent_id, txn_id)))
        await until(queue_is, registry, len(waiters))

    for holder, txn_id in (("a", "t0"), ("b", "t1"), ("a", "t2")):
        await registry.complete(txn_id, Actor.agent(holder))
        await until(has_served, served, len(served) + 1)
    await asyncio.gather(*waiters)

    assert served == ["t1", "t2", "t3"]
    assert await registry.waiting("L1") == []


async def test_a_request_that_does_not_wait_does_not_jump_the_queue(shop):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1")
    registry = shop.registry
    await registry.reserve_for_agent("a", "t0")
    waiter = asyncio.create_task(registry.reserve_for_agent("b", "t1", wait_s=60))
    await until(queue_is, registry, 1)

    await registry.complete("t0", Actor.agent("a"))
    with pytest.raises(AllBusy):
        await registry.reserve_for_agent("a", "t2")

    # Whether b was served before or after a asked, the freed unit is b's.
    assert (await waiter).device_id == "u1"


async def test_a_waiting_request_gives_up_after_wait_s_and_leaves_the_queue(shop, clock):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1", ttl_s=600)
    registry = shop.registry
    await registry.reserve_for_agent("a", "t0", ttl_s=600)
    waiter = asyncio.create_task(registry.reserve_for_agent("b", "t1", wait_s=30))
    await until(queue_is, registry, 1)

    clock.advance(30)

    with pytest.raises(AllBusy):
        await waiter
    assert await registry.waiting("L1") == []


async def test_a_waiting_request_is_served_when_a_unit_comes_online(shop):
    await shop.open("strict", units=("u1",))
    await shop.pair("a", "u1")
    registry = shop.registry
    waiter = asyncio.create_task(registry.reserve_for_agent("a", "t1", wait_s=30))
    await until(queue_is, registry, 1)

    await shop.connect("u1")

    assert (await waiter).device_id == "u1"


async def test_a_full_queue_refuses_at_once(store_url, clock):
    async with open_registry(
        store_url, clock=clock, limits=Limits(queue=1), poll_s=0.01
    ) as registry:
        shop = await Shop(registry).open("pool", units=("u1",))
        await shop.connect("u1")
        await registry.reserve_for_agent("a", "t0", supersede=False)
        waiter = asyncio.create_task(
            registry.reserve_for_agent("b", "t1", wait_s=30, supersede=False)
        )
        await until(queue_is, registry, 1)

        with pytest.raises(QueueFull, match=r"queue of location L1 is full \(1 requests\)") as e:
            await registry.reserve_for_agent("a", "t2", wait_s=30, supersede=False)

        assert e.value.code == "queue_full"
        waiter.cancel()


async def test_a_cancelled_waiting_request_leaves_the_queue(shop):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1")
    registry = shop.registry
    await registry.reserve_for_agent("a", "t0")
    waiter = asyncio.create_task(registry.reserve_for_agent("b", "t1", wait_s=60))
    await until(queue_is, registry, 1)

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    await until(queue_is, registry, 0)
    await registry.complete("t0", Actor.agent("a"))
    assert (await registry.reserve_for_agent("a", "t2")).device_id == "u1"


async def test_a_unit_freed_through_another_registry_reaches_a_waiting_request(
    shop, store_url, clock
):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1")
    await shop.registry.reserve_for_agent("a", "t0")
    waiter = asyncio.create_task(shop.registry.reserve_for_agent("b", "t1", wait_s=60))
    await until(queue_is, shop.registry, 1)

    async with open_registry(store_url, clock=clock) as other_server:
        await other_server.complete("t0", Actor.agent("a"))

    assert (await waiter).device_id == "u1"


async def test_an_agent_holds_at_most_its_limit_of_units_and_the_others_still_get_one(shop):
    await shop.open("pool", units=("u1", "u2", "u3", "u4"))
    await shop.connect("u1", "u2", "u3", "u4")
    limit = shop.registry.limits.reservations_per_agent
    for i in range(limit):
        await shop.registry.reserve_for_agent("a", f"a{i}", ttl_s=3600, supersede=False)

    with pytest.raises(ReservationLimit, match=f"already holds {limit} unfinished") as e:
        await shop.registry.reserve_for_agent(
            "a", "one-more", ttl_s=3600, wait_s=30, supersede=False
        )

    assert (e.value.code, e.value.status) == ("reservation_limit", 429)
    assert await shop.registry.waiting("L1") == []  # refused, not queued
    assert (
        await shop.registry.reserve_for_agent("b", "b0", supersede=False)
    ).device_id == f"u{limit + 1}"
    await shop.registry.complete("a0", Actor.agent("a"))
    assert await shop.registry.reserve_for_agent("a", "after-one-ended", supersede=False)


async def test_an_agent_takes_at_most_its_limit_of_places_in_the_queue(shop):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1")
    await shop.registry.reserve_for_agent("b", "t0", supersede=False)
    limit = shop.registry.limits.queue_places_per_agent
    waiters = [
        asyncio.create_task(
            shop.registry.reserve_for_agent("a", f"w{i}", wait_s=30, supersede=False)
        )
        for i in range(limit)
    ]
    await until(queue_is, shop.registry, limit)

    with pytest.raises(QueuePlaceLimit, match=f"already has {limit} request"):
        await shop.registry.reserve_for_agent("a", "one-more", wait_s=30, supersede=False)

    other = asyncio.create_task(
        shop.registry.reserve_for_agent("b", "t1", wait_s=30, supersede=False)
    )
    await until(queue_is, shop.registry, limit + 1)  # another agent still gets in line
    for task in (*waiters, other):
        task.cancel()
    await asyncio.gather(*waiters, other, return_exceptions=True)


async def test_an_agent_of_another_location_finds_no_unit_or_transaction_there(shop):
    await shop.open("pool")
    await shop.connect("u1")
    await shop.registry.create_location("L2", "High street")
    await shop.registry.create_agent("z", "Till z", "L2")
    sale = await shop.registry.reserve_for_agent("a", "t1")
    stranger = Actor.agent("z")

    for read in (
        shop.registry.get_device("u1", stranger),
        shop.registry.get_reservation(sale.txn_id, stranger),
        shop.registry.cancel(sale.txn_id, stranger),
    ):
        with pytest.raises(NotFound) as e:
            await read
        assert "a" not in e.value.facts.values() and "L1" not in e.value.message

    with pytest.raises(NotFound) as unknown:
        await shop.registry.get_device("u9", stranger)
    with pytest.raises(NotFound) as hidden:
        await shop.registry.get_device("u1", stranger)
    assert str(hidden.value).replace("u1", "u9") == str(unknown.value)
    assert (await shop.registry.get_device("u1", Actor.agent("b"))).txn_id == sale.txn_id
    assert (await shop.registry.get_reservation(sale.txn_id, Actor.agent("b"))).agent_id == "a"


async def test_occupancy_counts_live_reservations_and_waiting_requests_per_location(shop, clock):
    await shop.open("pool", units=("u1",))
    await shop.connect("u1", ttl_s=600)
    registry = shop.registry
    await registry.create_location("L2", "High street")
    await registry.reserve_for_agent("a", "t0", ttl_s=60)
    waiter = asyncio.create_task(registry.reserve_for_agent("b", "t1", wait_s=30))
    await until(queue_is, registry, 1)

    assert await registry.occupancy() == {"L1": (1, 1), "L2": (0, 0)}

    clock.advance(30)  # b gives up, then a's sale expires
    with pytest.raises(AllBusy):
        await waiter
    clock.advance(31)
    assert await registry.occupancy() == {"L1": (0, 0), "L2": (0, 0)}
