"""Contract: locations, agents and units as an admin sets them up, on every store."""

import hashlib

import pytest

from host.registry import (
    Conflict,
    InvalidInput,
    NotFound,
    Unauthorized,
)


async def test_a_location_is_hybrid_unless_told_otherwise(registry):
    location = await registry.create_location("L1", "Main street")

    assert location.policy == "hybrid"
    assert await registry.get_location("L1") == location


async def test_an_unknown_policy_is_rejected_naming_the_known_ones(registry):
    with pytest.raises(InvalidInput, match="strict, pool, hybrid"):
        await registry.create_location("L1", "Main street", "first-come")

    assert await registry.list_locations() == []


async def test_creating_a_location_twice_is_a_conflict(registry):
    await registry.create_location("L1", "Main street", "strict")

    with pytest.raises(Conflict):
        await registry.create_location("L1", "Other name", "pool")
    assert (await registry.get_location("L1")).policy == "strict"


async def test_a_policy_can_be_changed(registry):
    await registry.create_location("L1", "Main street")

    await registry.set_policy("L1", "pool")

    assert (await registry.get_location("L1")).policy == "pool"


async def test_an_agent_needs_an_existing_location(registry):
    with pytest.raises(NotFound, match="location L9 does not exist; create it first"):
        await registry.create_agent("a", "Till a", "L9")


async def test_an_agent_token_authenticates_that_agent_and_is_stored_hashed(registry):
    await registry.create_location("L1", "Main street")
    agent, token = await registry.create_agent("a", "Till a", "L1")

    assert (await registry.authenticate_agent(token)).agent_id == "a"
    assert agent.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(await registry.list_agents())


@pytest.mark.parametrize("token", ["", "not-a-token", None])
async def test_a_bad_token_is_unauthorized(registry, token):
    await registry.create_location("L1", "Main street")
    await registry.create_agent("a", "Till a", "L1")

    with pytest.raises(Unauthorized, match="ask an admin"):
        await registry.authenticate_agent(token)


async def test_creating_an_agent_twice_is_a_conflict_and_keeps_the_first_token(registry):
    await registry.create_location("L1", "Main street")
    _, token = await registry.create_agent("a", "Till a", "L1")

    with pytest.raises(Conflict):
        await registry.create_agent("a", "Till a again", "L1")
    assert (await registry.authenticate_agent(token)).name == "Till a"


@pytest.mark.parametrize("bad_id", ["", "has space", "-leading-dash", "x" * 65, 7, "ünï"])
async def test_a_bad_id_is_rejected_with_the_rule_for_ids(registry, bad_id):
    with pytest.raises(InvalidInput, match="1 to 64 letters, digits"):
        await registry.create_location(bad_id, "Main street")


async def test_listing_units_never_shows_their_secrets(shop):
    await shop.open()
    registry = shop.registry

    listing = repr(await registry.list_devices()) + repr(await registry.get_device("u1"))

    assert "secret-of" not in listing
    assert await registry.device_secret("u1") == "secret-of-u1-0123456789"


async def test_a_short_secret_is_rejected(registry):
    with pytest.raises(InvalidInput, match="16 to 256 characters"):
        await registry.register_device("u1", "short")

    assert await registry.list_devices() == []


async def test_reregistering_a_unit_replaces_its_secret_and_keeps_its_owner(shop):
    await shop.open()
    await shop.pair("a", "u1")

    await shop.registry.register_device("u1", "a-brand-new-secret-0123", name="Counter 1")

    assert await shop.registry.device_secret("u1") == "a-brand-new-secret-0123"
    unit = await shop.registry.get_device("u1")
    assert (unit.agent_id, unit.device.name, unit.device.location_id) == ("a", "Counter 1", "L1")


async def test_a_linked_unit_cannot_be_moved_to_another_location(shop):
    await shop.open()
    await shop.registry.create_location("L2", "Station")
    await shop.pair("a", "u1")

    with pytest.raises(Conflict, match="unlink it before moving it to L2"):
        await shop.registry.register_device("u1", "a-brand-new-secret-0123", location_id="L2")
    assert await shop.registry.device_secret("u1") == "secret-of-u1-0123456789"


async def test_an_unknown_unit_is_not_found_with_advice(registry):
    with pytest.raises(NotFound, match="unit ghost is not registered; provision it first"):
        await registry.get_device("ghost")


async def test_a_unit_listing_carries_the_fields_the_api_shows(shop, clock):
    await shop.open()
    await shop.pair("a", "u1")
    await shop.connect("u1", server_id="s9")

    unit = (await shop.registry.get_device("u1")).as_dict()

    assert {
        k: unit[k] for k in ("device_id", "status", "agent_id", "location_id", "server_id")
    } == {
        "device_id": "u1",
        "status": "online",
        "agent_id": "a",
        "location_id": "L1",
        "server_id": "s9",
    }
    assert unit["last_seen"] == clock.now
    assert not any("secret" in str(value) for value in unit.values())
