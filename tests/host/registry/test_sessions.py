"""Contract: device sessions, their leases and fencing epochs, on every store."""

import pytest

from host.registry import InvalidInput, NotFound


async def test_every_session_gets_a_larger_epoch(shop):
    await shop.open()

    epochs = [await shop.registry.acquire_device("u1", f"s{i}", 30) for i in range(3)]

    assert epochs == [1, 2, 3]
    assert (await shop.registry.get_device("u1")).server_id == "s2"


async def test_the_newest_session_wins_and_the_old_one_learns_it(shop):
    await shop.open()
    old = await shop.registry.acquire_device("u1", "s1", 30)
    new = await shop.registry.acquire_device("u1", "s2", 30)

    assert await shop.registry.renew_device("u1", "s1", old, 30) is False
    assert await shop.registry.report_device("u1", old, last_screen={"qr": "stale"}) is False
    assert await shop.registry.release_device("u1", old) is False
    assert await shop.registry.holds_device("u1", old) is False

    unit = await shop.registry.get_device("u1")
    assert (unit.status, unit.server_id, unit.epoch) == ("online", "s2", new)
    assert unit.device.last_screen is None


async def test_a_session_records_what_the_unit_reports(shop, clock):
    await shop.open()
    epoch = await shop.registry.acquire_device("u1", "s1", 30)
    clock.advance(5)

    assert await shop.registry.report_device(
        "u1", epoch, firmware="1.2.0", panel={"width": 128, "height": 64}, last_screen={"qr": 1}
    )

    unit = (await shop.registry.get_device("u1")).device
    assert (unit.firmware, unit.panel, unit.last_screen) == (
        "1.2.0",
        {"width": 128, "height": 64},
        {"qr": 1},
    )
    assert unit.last_seen == clock.now


async def test_a_unit_cannot_report_unknown_fields(shop):
    await shop.open()
    epoch = await shop.registry.acquire_device("u1", "s1", 30)

    with pytest.raises(InvalidInput, match="firmware, panel and last_screen"):
        await shop.registry.report_device("u1", epoch, secret="x")


async def test_heartbeats_keep_a_unit_online_and_update_last_seen(shop, clock):
    await shop.open()
    epoch = await shop.registry.acquire_device("u1", "s1", 10)
    for _ in range(5):
        clock.advance(8)
        assert await shop.registry.renew_device("u1", "s1", epoch, 10)

    unit = await shop.registry.get_device("u1")
    assert (unit.status, unit.device.last_seen) == ("online", clock.now)


async def test_a_unit_goes_offline_when_its_lease_runs_out(shop, clock):
    await shop.open()
    epoch = await shop.registry.acquire_device("u1", "s1", 10)

    clock.advance(10)

    assert (await shop.registry.get_device("u1")).status == "offline"
    assert await shop.registry.holds_device("u1", epoch) is False
    assert await shop.registry.renew_device("u1", "s1", epoch, 10) is False


async def test_a_released_session_leaves_the_unit_offline_for_good(shop):
    await shop.open()
    epoch = await shop.registry.acquire_device("u1", "s1", 30)

    assert await shop.registry.release_device("u1", epoch)

    assert (await shop.registry.get_device("u1")).status == "offline"
    assert await shop.registry.renew_device("u1", "s1", epoch, 30) is False
    assert await shop.registry.acquire_device("u1", "s1", 30) == epoch + 1


async def test_another_server_cannot_renew_a_session_by_guessing_its_epoch(shop):
    await shop.open()
    epoch = await shop.registry.acquire_device("u1", "s1", 30)

    assert await shop.registry.renew_device("u1", "s2", epoch, 30) is False


async def test_a_session_on_an_unregistered_unit_is_not_found(shop):
    await shop.open()

    with pytest.raises(NotFound, match="provision it first"):
        await shop.registry.acquire_device("ghost", "s1", 30)


@pytest.mark.parametrize("ttl_s", [0, -1, 3601, "10", True])
async def test_a_lease_needs_a_sensible_ttl(shop, ttl_s):
    await shop.open()

    with pytest.raises(InvalidInput, match="ttl_s must be a number of seconds"):
        await shop.registry.acquire_device("u1", "s1", ttl_s)
    assert (await shop.registry.get_device("u1")).epoch is None
