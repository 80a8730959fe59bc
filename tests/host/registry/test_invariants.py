"""Contract: the store itself refuses a write that breaks an invariant, on every store.

The rules never attempt one; these tests write through a `Transaction` directly, as a
wrong rule would, and find `IntegrityError` and the whole write undone.
"""

import pytest

from host.registry import Agent, Lease, Location, Reservation
from host.registry.store import IntegrityError


async def assert_refused(registry, breaking):
    """`breaking(tx)`, after an innocent change in the same write, raises IntegrityError
    and neither change is kept."""

    def write(tx):
        tx.put_location(Location("L1", "Renamed by the refused write", "strict"))
        breaking(tx)

    history = await registry.audit()

    with pytest.raises(IntegrityError):
        await registry.store.write(write)

    assert await registry.get_location("L1") == Location("L1", "Main street", "hybrid")
    assert await registry.audit() == history


async def reserved(shop):
    await shop.open()
    await shop.connect("u1", "u2")
    await shop.pair("a", "u1")
    return await shop.registry.reserve_for_agent("a", "t1", 60)


def reservations(registry):
    return registry.store.read(lambda tx: tx.reservations())


async def test_an_owned_unit_cannot_get_a_second_owner(shop):
    await shop.open()
    await shop.pair("a", "u1")

    await assert_refused(shop.registry, lambda tx: tx.put_link("u1", "b", 0.0))

    assert (await shop.owners())["u1"] == "a"


async def test_a_reserved_unit_cannot_be_reserved_again(shop, clock):
    reservation = await reserved(shop)
    second = Reservation("t2", "u1", "b", "s1", shop.epochs["u1"], clock.now, clock.now + 60)

    await assert_refused(shop.registry, lambda tx: tx.put_reservation(second))

    assert await reservations(shop.registry) == [reservation]


async def test_a_transaction_cannot_reserve_a_second_unit(shop, clock):
    reservation = await reserved(shop)
    second = Reservation("t1", "u2", "a", "s1", shop.epochs["u2"], clock.now, clock.now + 60)

    await assert_refused(shop.registry, lambda tx: tx.put_reservation(second))

    assert await reservations(shop.registry) == [reservation]


async def test_an_epoch_never_goes_back(shop, clock):
    await shop.open()
    await shop.connect("u1", server_id="s1")
    await shop.connect("u1", server_id="s2")
    older = Lease("u1", "s1", shop.epochs["u1"] - 1, clock.now + 60)

    await assert_refused(shop.registry, lambda tx: tx.put_lease(older))

    unit = await shop.registry.get_device("u1")
    assert (unit.server_id, unit.epoch) == ("s2", 2)


async def test_two_agents_cannot_share_a_token_hash(shop):
    await shop.open()
    token_hash = (await shop.registry.get_agent("a")).token_hash
    impostor = Agent("c", "Till c", "L1", token_hash)

    await assert_refused(shop.registry, lambda tx: tx.put_agent(impostor))

    assert [agent.agent_id for agent in await shop.registry.list_agents()] == ["a", "b"]
