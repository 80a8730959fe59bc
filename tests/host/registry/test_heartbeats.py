"""Contract: many heartbeats renewed in one operation, as a busy server sends them."""

SCREEN = {"screen": "status", "free_heap": 90000, "uptime_s": 60, "rssi": -50}


async def test_a_batch_renews_each_live_session_and_refuses_stale_ones(shop, clock):
    await shop.open()
    u1 = await shop.registry.acquire_device("u1", "s1", 10)
    old_u2 = await shop.registry.acquire_device("u2", "s1", 10)
    await shop.registry.acquire_device("u2", "s1", 10)
    clock.advance(8)

    renewed = await shop.registry.renew_devices(
        "s1",
        10,
        [
            ("u1", u1, {"firmware": "1.2.0", "last_screen": SCREEN}),
            ("u2", old_u2, {"last_screen": {"screen": "stale"}}),
        ],
    )
    clock.advance(8)

    assert renewed == [True, False]
    u1_now = await shop.registry.get_device("u1")
    u2_now = await shop.registry.get_device("u2")
    assert (u1_now.status, u1_now.device.firmware, u1_now.device.last_screen) == (
        "online",
        "1.2.0",
        SCREEN,
    )
    assert (u2_now.status, u2_now.device.last_screen) == ("offline", None)


async def test_a_heartbeat_records_what_the_unit_reports_with_its_renewal(shop, clock):
    await shop.open()
    epoch = await shop.registry.acquire_device("u1", "s1", 10)
    clock.advance(5)

    assert await shop.registry.renew_device("u1", "s1", epoch, 10, last_screen=SCREEN)

    unit = (await shop.registry.get_device("u1")).device
    assert (unit.last_screen, unit.last_seen) == (SCREEN, clock.now)
