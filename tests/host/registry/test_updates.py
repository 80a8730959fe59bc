"""Contract: where units' updates stand, releases and rollouts, on every store."""

import asyncio
from dataclasses import replace

import pytest

from host.registry import (
    ADMIN,
    OPERATOR,
    Actor,
    Conflict,
    Forbidden,
    InvalidInput,
    Location,
    NotFound,
    ReleaseExists,
    RolloutActive,
    open_registry,
)
from host.registry.store import IntegrityError
from tests.host.registry.conftest import Shop

BUNDLE = b'{"format": "qrfleet-release", "manifest": "...", "signature": "...", "files": {}}'
SERVER = Actor.server("s1")


async def published(shop, version="0.2.0", units=("u1", "u2", "u3")):
    await shop.open(units=units)
    await shop.registry.publish_release(version, BUNDLE, ADMIN)
    return shop


async def test_a_units_update_is_recorded_and_audited_when_its_state_changes(shop, clock):
    await shop.open()
    await shop.pair("a", "u1")
    epoch = await shop.registry.acquire_device("u1", "s1", 30)
    going = {"version": "0.2.0", "state": "downloading", "rollout_id": "r1"}

    assert await shop.registry.record_update("u1", going, epoch)
    assert await shop.registry.record_update("u1", going, epoch)
    clock.advance(3)
    # The unit's own word (its hello) names no rollout: the one recorded stays.
    assert await shop.registry.record_update(
        "u1", {"version": "0.2.0", "state": "rolled_back", "reason": "import failed"}
    )

    unit = (await shop.registry.get_device("u1")).device
    assert unit.update == {
        "version": "0.2.0",
        "state": "rolled_back",
        "reason": "import failed",
        "rollout_id": "r1",
        "at": clock.now,
    }
    entries = [e for e in await shop.registry.audit(device_id="u1") if e.action == "update"]
    assert [(e.actor, e.agent_id, e.detail) for e in entries] == [
        ("server:s1", "a", "0.2.0 downloading (rollout r1)"),
        ("server:s1", "a", "0.2.0 rolled_back (rollout r1): import failed"),
    ]


async def test_an_update_recorded_for_an_older_session_is_refused(shop):
    await shop.open()
    old = await shop.registry.acquire_device("u1", "s1", 30)
    await shop.registry.acquire_device("u1", "s2", 30)

    assert not await shop.registry.record_update(
        "u1", {"version": "0.2.0", "state": "installing"}, old
    )
    assert (await shop.registry.get_device("u1")).device.update is None


@pytest.mark.parametrize(
    "update",
    [
        {"version": "0.2.0", "state": "sleeping"},
        {"version": "../0.2", "state": "trial"},
        {"version": "0.2.0", "state": "trial", "reason": "x" * 201},
        {"version": "0.2.0", "state": "trial", "colour": "red"},
        "trial",
    ],
)
async def test_a_malformed_update_status_is_refused(shop, update):
    await shop.open()

    with pytest.raises(InvalidInput):
        await shop.registry.record_update("u1", update)


async def test_a_release_is_published_once_and_kept_byte_for_byte(shop, clock):
    await shop.open()

    first = await shop.registry.publish_release("0.2.0", BUNDLE, ADMIN)
    clock.advance(5)
    again = await shop.registry.publish_release("0.2.0", BUNDLE, ADMIN)

    assert again == first
    assert (first.version, first.size, first.published_at) == ("0.2.0", len(BUNDLE), clock.now - 5)
    assert await shop.registry.release("0.2.0") == BUNDLE
    assert await shop.registry.release("0.3.0") is None
    with pytest.raises(ReleaseExists, match="new version"):
        await shop.registry.publish_release("0.2.0", BUNDLE + b" ", ADMIN)
    with pytest.raises(Forbidden):
        await shop.registry.publish_release("0.3.0", BUNDLE, OPERATOR)
    assert await shop.registry.releases() == [first]
    entries = [e for e in await shop.registry.audit() if e.action == "publish"]
    assert [(e.actor, e.detail) for e in entries] == [("admin", f"0.2.0 ({len(BUNDLE)} bytes)")]


async def test_a_rollout_starts_with_one_canary_per_location_then_its_steps(shop):
    await published(shop, units=[f"u{n}" for n in range(1, 10)])
    await shop.registry.create_location("L2", "Side street")
    for device_id in ("v1", "v2"):
        await shop.registry.register_device(device_id, "secret-0123456789abcdef", location_id="L2")

    rollout = await shop.registry.start_rollout("0.2.0", steps=[50, 100])

    assert rollout.waves == (
        ("u1", "v1"),
        ("u2", "u3", "u4", "u5", "u6"),
        ("u7", "u8", "u9", "v2"),
    )
    assert (rollout.state, rollout.wave, rollout.abort_after_failures) == ("running", 0, 1)
    assert await shop.registry.rollout(rollout.rollout_id) == rollout
    assert await shop.registry.rollouts() == [rollout]


async def test_a_rollout_at_a_location_takes_its_units_only(shop):
    await published(shop)
    await shop.registry.create_location("L2", "Side street")
    await shop.registry.register_device("v1", "secret-0123456789abcdef", location_id="L2")

    rollout = await shop.registry.start_rollout("0.2.0", location_id="L2")

    assert rollout.waves == (("v1",),)


async def test_a_rollout_needs_a_published_release_units_and_sound_steps(shop):
    await published(shop)
    await shop.registry.create_location("L2", "Empty street")

    with pytest.raises(NotFound, match="release 0.3.0 is not published"):
        await shop.registry.start_rollout("0.3.0")
    with pytest.raises(NotFound, match="no unit is registered at location L2"):
        await shop.registry.start_rollout("0.2.0", location_id="L2")
    for steps in ([], [50], [50, 30, 100], [0, 100], [True], "100"):
        with pytest.raises(InvalidInput, match="steps"):
            await shop.registry.start_rollout("0.2.0", steps=steps)
    with pytest.raises(InvalidInput, match="abort_after_failures"):
        await shop.registry.start_rollout("0.2.0", abort_after_failures=0)
    with pytest.raises(Forbidden):
        await shop.registry.start_rollout("0.2.0", actor=OPERATOR)
    assert await shop.registry.rollouts() == []


async def test_one_rollout_runs_at_a_time(shop, clock):
    await published(shop)
    first = await shop.registry.start_rollout("0.2.0")

    with pytest.raises(RolloutActive, match=f"rollout {first.rollout_id} of release 0.2.0"):
        await shop.registry.start_rollout("0.2.0")
    await shop.registry.pause_rollout(first.rollout_id, ADMIN)
    with pytest.raises(RolloutActive):
        await shop.registry.start_rollout("0.2.0")
    await shop.registry.abort_rollout(first.rollout_id, ADMIN, "wrong build")
    clock.advance(60)

    second = await shop.registry.start_rollout("0.2.0")
    assert [r.rollout_id for r in await shop.registry.rollouts()] == [
        second.rollout_id,
        first.rollout_id,
    ]


async def test_a_rollout_moves_on_only_from_the_state_it_was_decided_in(shop):
    await published(shop, units=("u1", "u2"))
    rollout = await shop.registry.start_rollout("0.2.0")
    decided_in = ("running", 0)

    moved = await shop.registry.set_rollout(rollout.rollout_id, decided_in, SERVER, wave=1)

    assert moved.wave == 1
    assert await shop.registry.set_rollout(rollout.rollout_id, decided_in, SERVER, wave=1) is None
    done = await shop.registry.set_rollout(
        rollout.rollout_id, ("running", 1), SERVER, state="completed"
    )
    assert (done.state, done.wave) == ("completed", 1)
    entries = [e for e in await shop.registry.audit() if e.action.endswith("_rollout")]
    assert [(e.action, e.actor, e.detail) for e in entries] == [
        ("start_rollout", "admin", f"{rollout.rollout_id}: 0.2.0 running, wave 1 of 2"),
        ("advance_rollout", "server:s1", f"{rollout.rollout_id}: 0.2.0 running, wave 2 of 2"),
        ("complete_rollout", "server:s1", f"{rollout.rollout_id}: 0.2.0 completed, wave 2 of 2"),
    ]


async def test_two_instances_advancing_one_rollout_apply_it_once(new_store_url, clock):
    url = new_store_url()
    shop = await published(Shop(open_registry(url, clock=clock)), units=("u1", "u2", "u3"))
    rollout = await shop.registry.start_rollout("0.2.0", steps=[50, 100])
    other = open_registry(url, clock=clock)
    try:
        results = await asyncio.gather(
            *(
                registry.set_rollout(rollout.rollout_id, ("running", 0), SERVER, wave=1)
                for registry in (shop.registry, other)
            )
        )
    finally:
        await other.close()
        await shop.registry.close()

    assert sorted(r is None for r in results) == [False, True]


async def test_the_admin_pauses_resumes_and_aborts_a_rollout(shop):
    await published(shop)
    rollout_id = (await shop.registry.start_rollout("0.2.0")).rollout_id

    paused = await shop.registry.pause_rollout(rollout_id, ADMIN, "shop is busy")
    with pytest.raises(Conflict, match="only a running rollout can be paused"):
        await shop.registry.pause_rollout(rollout_id, ADMIN)
    resumed = await shop.registry.resume_rollout(rollout_id, ADMIN)
    aborted = await shop.registry.abort_rollout(rollout_id, ADMIN)
    with pytest.raises(Conflict, match="is aborted"):
        await shop.registry.resume_rollout(rollout_id, ADMIN)
    with pytest.raises(Forbidden):
        await shop.registry.abort_rollout(rollout_id, OPERATOR)
    with pytest.raises(NotFound):
        await shop.registry.pause_rollout("r-unknown", ADMIN)

    assert [(r.state, r.reason) for r in (paused, resumed, aborted)] == [
        ("paused", "shop is busy"),
        ("running", None),
        ("aborted", None),
    ]
    actions = [e.action for e in await shop.registry.audit() if e.action.endswith("_rollout")]
    assert actions == ["start_rollout", "pause_rollout", "resume_rollout", "abort_rollout"]


async def test_resuming_goes_on_past_the_units_that_failed_so_far(shop):
    await published(shop)
    rollout = await shop.registry.start_rollout("0.2.0")
    failed = {"version": "0.2.0", "state": "failed", "rollout_id": rollout.rollout_id}
    await shop.registry.record_update("u1", failed)
    await shop.registry.set_rollout(
        rollout.rollout_id, ("running", 0), SERVER, state="paused", reason="u1 failed"
    )

    resumed = await shop.registry.resume_rollout(rollout.rollout_id, ADMIN)

    assert resumed.accepted == ("u1",)


async def test_a_units_state_in_a_rollout_follows_its_update_and_firmware(shop):
    await published(shop)
    rollout = await shop.registry.start_rollout("0.2.0")
    device = (await shop.registry.get_device("u1")).device
    earlier = {"version": "0.2.0", "state": "failed", "rollout_id": "r-earlier"}
    mine = {**earlier, "rollout_id": rollout.rollout_id}

    assert rollout.unit_state(device) == "pending"
    assert rollout.unit_state(replace(device, firmware="0.2.0")) == "committed"
    assert rollout.unit_state(replace(device, update={**mine, "state": "trial"})) == "trial"
    assert rollout.unit_state(replace(device, update=mine)) == "failed"
    assert rollout.unit_state(replace(device, update=earlier)) == "pending"


async def test_the_store_refuses_a_second_active_rollout_and_a_replaced_release(shop):
    await published(shop)
    rollout = await shop.registry.start_rollout("0.2.0")
    release = (await shop.registry.releases())[0]

    def write(tx, breaking):
        tx.put_location(Location("L1", "Renamed by the refused write", "strict"))
        breaking(tx)

    for breaking in (
        lambda tx: tx.put_rollout(replace(rollout, rollout_id="r-second")),
        lambda tx: tx.put_release(release, BUNDLE + b" "),
    ):
        with pytest.raises(IntegrityError):
            await shop.registry.store.write(lambda tx, b=breaking: write(tx, b))

    assert (await shop.registry.get_location("L1")).policy == "hybrid"
    assert await shop.registry.release("0.2.0") == BUNDLE
    assert await shop.registry.rollouts() == [rollout]
