"""Contract: who owns a unit, and the only ways ownership changes, on every store."""

import pytest

from host.registry import (
    ADMIN,
    Actor,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PairingRejected,
    parse_pairing_uri,
)


async def test_a_pairing_code_links_an_unowned_unit(shop):
    await shop.open()

    unit = await shop.pair("a", "u1")

    assert unit.agent_id == "a"
    assert (await shop.owners())["u1"] == "a"


async def test_the_pairing_qr_names_the_unit_and_its_code(shop):
    await shop.open()
    pairing = await shop.registry.issue_pairing_code("u1")

    assert pairing.uri == f"qrfleet://pair?device=u1&code={pairing.code}"
    assert parse_pairing_uri(pairing.uri) == ("u1", pairing.code)


@pytest.mark.parametrize(
    "text", ["https://example.com/?device=u1&code=X", "qrfleet://pair?device=u1", "u1"]
)
def test_text_that_is_not_a_pairing_qr_is_rejected_with_its_shape(text):
    with pytest.raises(InvalidInput, match=r"qrfleet://pair\?device=<id>&code=<code>"):
        parse_pairing_uri(text)


async def test_a_wrong_pairing_code_is_rejected_and_links_nothing(shop):
    await shop.open()
    await shop.registry.issue_pairing_code("u1")

    with pytest.raises(PairingRejected, match="scan the pairing QR the unit shows now"):
        await shop.registry.link("a", "u1", "WRONGCOD", Actor.agent("a"))
    assert (await shop.owners())["u1"] is None


async def test_an_expired_pairing_code_is_rejected(shop, clock):
    await shop.open()
    pairing = await shop.registry.issue_pairing_code("u1", ttl_s=60)
    clock.advance(61)

    with pytest.raises(PairingRejected):
        await shop.registry.link("a", "u1", pairing.code, Actor.agent("a"))
    assert (await shop.owners())["u1"] is None


async def test_a_pairing_code_works_once(shop):
    await shop.open()
    pairing = await shop.registry.issue_pairing_code("u1")
    await shop.registry.link("a", "u1", pairing.code, Actor.agent("a"))
    await shop.registry.unlink("a", "u1", Actor.agent("a"))

    with pytest.raises(PairingRejected):
        await shop.registry.link("b", "u1", pairing.code, Actor.agent("b"))


async def test_linking_another_agents_unit_is_a_conflict_and_changes_nothing(shop):
    await shop.open()
    await shop.pair("a", "u1")
    history = await shop.registry.audit()

    with pytest.raises(Conflict, match="its owner can unlink it, or an admin can transfer it") as e:
        await shop.registry.link("b", "u1", "ANYCODE1", Actor.agent("b"))

    assert e.value.code == "conflict"
    assert (await shop.owners())["u1"] == "a"
    assert await shop.registry.audit() == history


async def test_even_an_admin_link_does_not_take_an_owned_unit(shop):
    await shop.open()
    await shop.pair("a", "u1")

    with pytest.raises(Conflict):
        await shop.registry.link("b", "u1", None, ADMIN)
    assert (await shop.owners())["u1"] == "a"


async def test_an_admin_links_an_unowned_unit_without_a_code(shop):
    await shop.open()

    await shop.registry.link("b", "u2", None, ADMIN)

    assert (await shop.owners())["u2"] == "b"


async def test_linking_an_own_unit_again_changes_nothing(shop):
    await shop.open()
    await shop.pair("a", "u1")

    unit = await shop.registry.link("a", "u1", "ANYCODE1", Actor.agent("a"))

    assert unit.agent_id == "a"
    assert [e.action for e in await shop.registry.audit(device_id="u1")] == ["register", "link"]


async def test_an_agent_cannot_link_a_unit_for_another_agent(shop):
    await shop.open()
    pairing = await shop.registry.issue_pairing_code("u1")

    with pytest.raises(Forbidden, match="agent:b cannot link units for agent a"):
        await shop.registry.link("a", "u1", pairing.code, Actor.agent("b"))
    assert (await shop.owners())["u1"] is None


async def test_a_unit_of_another_location_cannot_be_linked(shop):
    await shop.open()
    await shop.registry.create_location("L2", "Station")
    await shop.registry.register_device("far", "secret-of-far-0123456789", location_id="L2")
    pairing = await shop.registry.issue_pairing_code("far")

    with pytest.raises(Forbidden, match="belongs to location L2"):
        await shop.registry.link("a", "far", pairing.code, Actor.agent("a"))


async def test_a_unit_without_a_location_takes_its_owners(shop):
    await shop.open()
    await shop.registry.register_device("fresh", "secret-of-fresh-0123456789")

    unit = await shop.pair("a", "fresh")

    assert unit.device.location_id == "L1"


async def test_a_linked_unit_gets_no_pairing_code(shop):
    await shop.open()
    await shop.pair("a", "u1")

    with pytest.raises(Conflict, match="only unlinked units get a pairing code"):
        await shop.registry.issue_pairing_code("u1")


@pytest.mark.parametrize("actor", [Actor.agent("a"), ADMIN])
async def test_a_unit_reserved_for_a_sale_is_linked_by_nobody(shop, actor):
    await shop.open("pool")
    await shop.connect("u1")
    pairing = await shop.registry.issue_pairing_code("u1")
    sale = await shop.registry.reserve_for_agent("b", "t1")

    with pytest.raises(Conflict, match="transaction in progress"):
        await shop.registry.link("a", "u1", pairing.code, actor)

    assert (await shop.owners())["u1"] is None
    assert (await shop.registry.get_device("u1")).txn_id == sale.txn_id


async def test_a_pairing_code_dies_when_a_qr_replaces_the_pairing_screen(shop):
    await shop.open("pool")
    await shop.connect("u1")
    shown_before = await shop.registry.issue_pairing_code("u1")
    await shop.registry.reserve_for_agent("b", "t1")
    await shop.registry.complete("t1", Actor.agent("b"))

    with pytest.raises(PairingRejected):
        await shop.registry.link("a", "u1", shown_before.code, Actor.agent("a"))
    assert (await shop.owners())["u1"] is None
    shown_now = await shop.registry.issue_pairing_code("u1")
    assert (await shop.registry.link("a", "u1", shown_now.code, Actor.agent("a"))).agent_id == "a"


async def test_the_owner_unlinks_its_unit(shop):
    await shop.open()
    await shop.pair("a", "u1")

    await shop.registry.unlink("a", "u1", Actor.agent("a"))

    assert (await shop.owners())["u1"] is None


async def test_an_admin_unlinks_any_unit(shop):
    await shop.open()
    await shop.pair("a", "u1")

    await shop.registry.unlink("a", "u1", ADMIN)

    assert (await shop.owners())["u1"] is None


async def test_another_agent_cannot_unlink_a_unit(shop):
    await shop.open()
    await shop.pair("a", "u1")

    with pytest.raises(Forbidden):
        await shop.registry.unlink("a", "u1", Actor.agent("b"))
    with pytest.raises(NotFound, match="unit u1 is not linked to agent b"):
        await shop.registry.unlink("b", "u1", Actor.agent("b"))
    assert (await shop.owners())["u1"] == "a"


async def test_only_an_admin_transfers_a_unit(shop):
    await shop.open()
    await shop.pair("a", "u1")

    with pytest.raises(Forbidden, match="only an admin can transfer"):
        await shop.registry.transfer("u1", "b", Actor.agent("a"))
    await shop.registry.transfer("u1", "b", ADMIN)

    assert (await shop.owners())["u1"] == "b"


async def test_a_transfer_moves_the_unit_to_the_new_owners_location(shop):
    await shop.open()
    await shop.registry.create_location("L2", "Station")
    await shop.registry.create_agent("c", "Till c", "L2")
    await shop.pair("a", "u1")

    unit = await shop.registry.transfer("u1", "c", ADMIN)

    assert (unit.agent_id, unit.device.location_id) == ("c", "L2")


async def test_every_ownership_change_is_audited_with_who_and_when(shop, clock):
    await shop.open()
    await shop.pair("a", "u1")
    clock.advance(10)
    await shop.registry.transfer("u1", "b", ADMIN)
    clock.advance(10)
    await shop.registry.unlink("b", "u1", Actor.agent("b"))

    trail = [
        (e.action, e.actor, e.agent_id, e.at - clock.now)
        for e in await shop.registry.audit(device_id="u1")
    ]

    assert trail == [
        ("register", "admin", None, -20),
        ("link", "agent:a", "a", -20),
        ("transfer", "admin", "b", -10),
        ("unlink", "agent:b", "b", 0),
    ]
