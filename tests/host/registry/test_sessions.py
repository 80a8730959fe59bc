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
    assert await shop.registry.record_screen("u1", old, {"screen": "status"}) is False
    assert await shop.registry.release_device("u1", old) is False
    assert await shop.registry.holds_device("u1", old) is False

    unit = await shop.registry.get_device("u1")
    assert (unit.status, unit.server_id, unit.epoch) == ("online", "s2", new)
    assert unit.device.last_screen is None


async def test_a_heartbeat_records_what_the_unit_reports(shop, clock):
    await shop.open()
    epoch = await shop.registry.acquire_device("u1", "s1", 30)
    clock.advance(5)

    assert await shop.registry.renew_device(
        "u1",
        "s1",
        epoch,
        30,
        firmware="1.2.0",
        panel={"width": 128, "height": 64},
        last_screen={"qr": 1},
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
        await shop.registry.renew_device("u1", "s1", epoch, 30, secret="x")


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


async def test_a_session_records_the_firmware_and_reset_cause_the_unit_announced(shop):
    await shop.open()
    await shop.registry.acquire_device("u1", "s1", 30, firmware="1.3.0", reset_cause="watchdog")
    await shop.registry.acquire_device("u1", "s2", 30, reset_cause="power-on")

    unit = (await shop.registry.get_device("u1")).device
    # A unit that did not say its firmware keeps the one known; the reset is this start's.
    assert (unit.firmware, unit.reset_cause) == ("1.3.0", "power-on")


async def test_a_session_records_the_bridge_it_came_through_and_a_wi_fi_one_none(shop):
    await shop.open()
    await shop.registry.acquire_device("u1", "s1", 30, reset_cause="power-on", via="bridge@till-3")

    (tethered,) = [s for s in await shop.registry.list_devices() if s.device_id == "u1"]
    assert (tethered.device.via, tethered.device.reset_cause) == ("bridge@till-3", "power-on")
    await shop.registry.acquire_device("u1", "s2", 30)  # the same unit, back on Wi-Fi
    assert (await shop.registry.get_device("u1")).device.via is None


async def test_a_verified_screen_is_recorded_and_audited_only_by_the_newest_session(shop, clock):
    await shop.open()
    await shop.pair("a", "u1")
    old = await shop.registry.acquire_device("u1", "s1", 30)
    new = await shop.registry.acquire_device("u1", "s2", 30)
    clock.advance(2)
    payment = {"screen": "payment", "payload": "PAY 1", "ecc": "M", "version": 1, "mask": 3}

    assert await shop.registry.record_screen("u1", old, {"screen": "status"}) is False
    assert await shop.registry.record_screen("u1", new, {"screen": "status", "state": "ready"})
    assert await shop.registry.record_screen("u1", new, payment, txn_id="t1")

    unit = (await shop.registry.get_device("u1")).device
    assert unit.shown == {**payment, "at": clock.now}
    entries = [e for e in await shop.registry.audit(device_id="u1") if e.actor == "server:s2"]
    assert [(e.action, e.agent_id, e.txn_id, e.detail) for e in entries] == [
        ("session", "a", None, "epoch 2"),
        ("screen", "a", None, "status"),
        ("shown", "a", "t1", "payment"),
    ]
    with pytest.raises(InvalidInput, match="'screen' kind"):
        await shop.registry.record_screen("u1", new, {"payload": "no kind"})


async def test_a_session_that_ends_is_audited_as_offline_once(shop):
    await shop.open()
    await shop.pair("b", "u2")
    epoch = await shop.registry.acquire_device("u2", "s1", 30)

    assert await shop.registry.release_device("u2", epoch)
    await shop.registry.release_device("u2", epoch)

    offline = [e for e in await shop.registry.audit(device_id="u2") if e.action == "offline"]
    assert [(e.actor, e.agent_id, e.detail) for e in offline] == [("server:s1", "b", "epoch 1")]


async def test_the_audit_log_reads_on_after_any_entry_in_order(shop):
    await shop.open()
    everything = await shop.registry.audit(limit=1000)
    middle = everything[len(everything) // 2].seq

    after = await shop.registry.audit_after(middle, limit=3)

    assert after == [e for e in everything if e.seq > middle][:3]
    assert await shop.registry.audit_after(everything[-1].seq) == []
