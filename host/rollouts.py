"""Rollouts: a release taken to the units wave by wave (docs/updates.md).

The registry keeps each rollout (host.registry: `Rollout`, its waves fixed when it starts) and
where each unit's update stands (`Device.update`). What follows from them is a plain function,
`assess`: each unit's state in the rollout, how each wave is doing, and the one step to take
now, if any:

- pause, once the failed and rolled-back units of the current wave reach the rollout's
  `abort_after_failures` (units the admin resumed past do not count): the reason names them;
- advance, once every unit of the current wave is done (committed, rolled back or failed);
- complete, once that is the last wave.

`RolloutDriver` is the I/O, one per server instance: every ROLLOUT_TICK_S it assesses the
running rollout and applies the step conditionally (`Registry.set_rollout`: of two instances
deciding the same step, one applies it), then pushes the release to the units of the waves
reached so far that this instance holds, at most MAX_PUSHES at once, each only while no
transaction holds its unit. A push records `downloading`, then `installing` once the unit
took the switch, or `failed` with the unit's reason; the unit itself reports `trial`,
`committed` or `rolled_back` when it comes back (host/server.py records them).
"""

import asyncio
from collections import Counter
from dataclasses import dataclass

from host import updates
from host.registry import TERMINAL, Actor, RegistryError
from host.registry.records import (
    COMPLETED,
    DOWNLOADING,
    FAILED,
    INSTALLING,
    PAUSED,
    PENDING,
    ROLLED_BACK,
    RUNNING,
)
from host.releases import ReleaseError, read_bundle

ROLLOUT_TICK_S = 1.0
MAX_PUSHES = 4  # per instance
_NAMED_IN_REASON = 5  # failed units a pause's reason names one by one

ADVANCE = "advance"
PAUSE = "pause"
COMPLETE = "complete"
# Units in these states get the release (again): a push resumes where the unit stands.
_TO_PUSH = (PENDING, DOWNLOADING, INSTALLING)


@dataclass(frozen=True)
class Assessment:
    """`states`: device id -> its state in the rollout (host.registry UPDATE_STATES, or
    "pending"); `waves`: per wave, a Counter of its units' states; `step`: ADVANCE, PAUSE,
    COMPLETE or None, with `reason` for a pause."""

    states: dict
    waves: list
    step: str | None = None
    reason: str | None = None

    def to_push(self, rollout):
        """The units of the waves reached that still need the release, in wave order."""
        if rollout.state != RUNNING or self.step is not None:
            return []
        reached = [d for wave in rollout.waves[: rollout.wave + 1] for d in wave]
        return [d for d in reached if self.states[d] in _TO_PUSH]


def assess(rollout, devices):
    """Where `rollout` (host.registry.Rollout) stands, from `devices` ({device_id: Device},
    its units among them)."""
    states = {d: rollout.unit_state(devices[d]) for d in rollout.units}
    waves = [Counter(states[d] for d in wave) for wave in rollout.waves]
    if rollout.state != RUNNING:
        return Assessment(states, waves)
    current = rollout.waves[rollout.wave]
    failed = [
        d for d in current if states[d] in (FAILED, ROLLED_BACK) and d not in rollout.accepted
    ]
    if len(failed) >= rollout.abort_after_failures:
        return Assessment(states, waves, PAUSE, _pause_reason(rollout, failed, devices))
    if all(states[d] in TERMINAL for d in current):
        last = rollout.wave == len(rollout.waves) - 1
        return Assessment(states, waves, COMPLETE if last else ADVANCE)
    return Assessment(states, waves)


def _pause_reason(rollout, failed, devices):
    named = []
    for device_id in failed[:_NAMED_IN_REASON]:
        update = devices[device_id].update or {}
        what = "rolled back" if update.get("state") == ROLLED_BACK else "failed"
        reason = update.get("reason")
        named.append(f"{device_id} {what}" + (f" ({reason})" if reason else ""))
    more = len(failed) - len(named)
    return (
        f"{len(failed)} unit(s) of wave {rollout.wave + 1} did not take {rollout.version}, "
        f"the threshold is {rollout.abort_after_failures}: "
        + "; ".join(named)
        + (f"; and {more} more" if more > 0 else "")
    )


class RolloutDriver:
    """Drives the running rollout from one server instance (`start`, stopped with the
    server's tasks)."""

    def __init__(self, server):
        self.server = server
        self.actor = Actor.server(server.server_id)
        self._releases = {}  # version -> host.releases.Release, read once per instance
        self._pushing = set()  # device ids being pushed from here
        # device id -> the session epoch whose push ended (switched, or failed): the unit
        # restarts into a new session before anything more is sent to it.
        self._pushed = {}

    def start(self):
        self.server.tasks.spawn(self._run())

    async def _run(self):
        while True:
            await asyncio.sleep(ROLLOUT_TICK_S)
            try:
                await self.tick()
            except (RegistryError, ReleaseError) as e:
                self.server.log.warning("rollout_tick_failed", reason=str(e))
            except Exception:  # noqa: BLE001 - a bug in one tick must not stop every rollout
                self.server.log.exception("rollout_tick_failed")

    async def tick(self):
        """Assess the running rollout, apply its step, push to the units held here."""
        registry = self.server.registry
        running = [r for r in await registry.rollouts() if r.state == RUNNING]
        for rollout in running:
            # Every unit, not the rollout's location's: one moved since the start is still in it.
            statuses = {s.device_id: s for s in await registry.list_devices()}
            assessment = assess(rollout, {d: s.device for d, s in statuses.items()})
            if assessment.step is not None:
                rollout = await self._step(rollout, assessment)
                if rollout is None or rollout.state != RUNNING:
                    continue
                # The next wave starts now, not a tick later.
                assessment = assess(rollout, {d: s.device for d, s in statuses.items()})
            units = [
                d
                for d in assessment.to_push(rollout)
                if d not in self._pushing and statuses[d].txn_id is None
            ]
            if units:
                release = await self._release(rollout.version)
                for device_id in units:
                    self._push(rollout, release, statuses[device_id].device)

    async def _step(self, rollout, assessment):
        changes = {
            ADVANCE: {"wave": rollout.wave + 1},
            PAUSE: {"state": PAUSED, "reason": assessment.reason},
            COMPLETE: {"state": COMPLETED},
        }[assessment.step]
        moved = await self.server.registry.set_rollout(
            rollout.rollout_id, (rollout.state, rollout.wave), self.actor, **changes
        )
        if moved is not None:
            self.server.log.info(
                "rollout_" + assessment.step,
                rollout_id=rollout.rollout_id,
                version=rollout.version,
                wave=moved.wave + 1,
                reason=moved.reason,
            )
        return moved

    async def _release(self, version):
        release = self._releases.get(version)
        if release is None:
            bundle = await self.server.registry.release(version)
            if bundle is None:
                raise ReleaseError(f"release {version} is not published")
            release = read_bundle(bundle, keys=self.server.release_keys)
            self._releases[version] = release
        return release

    def _push(self, rollout, release, device):
        """Start pushing to the unit (a Device) if this instance holds it, a push slot is free,
        its session had no push yet, and what its hello said of this version is recorded (the
        unit came back from it: host/server.py records that as the session starts)."""
        device_id = device.device_id
        session = self.server.hub.session(device_id)
        if (
            session is None
            or len(self._pushing) >= MAX_PUSHES
            or self._pushed.get(device_id) == session.epoch
            or session.fw == release.version
        ):
            return
        hello = session.update or {}
        recorded_at = (device.update or {}).get("at") or 0
        if hello.get("version") == release.version and recorded_at < session.connected_at:
            return
        self._pushing.add(device_id)
        task = self.server.tasks.spawn(self._pushed_to(rollout, release, session))
        if task is None:  # the server is closing
            self._pushing.discard(device_id)

    async def _pushed_to(self, rollout, release, session):
        device_id, registry = session.device_id, self.server.registry

        async def record(state, reason=None):
            update = {"version": release.version, "state": state, "reason": reason}
            return await registry.record_update(
                device_id, {**update, "rollout_id": rollout.rollout_id}, session.epoch
            )

        async def idle():
            return (await registry.get_device(device_id)).txn_id is None

        try:
            if not await record(DOWNLOADING):
                return  # a newer session holds the unit
            state = await updates.push(session, release, idle)
            self._pushed[device_id] = session.epoch
            if state == INSTALLING:  # else it restarts into update mode: its next session
                await record(INSTALLING)
        except updates.UnitBusy as e:  # nothing wrong: a later tick tries again
            self.server.log.info("update_postponed", device_id=device_id, reason=str(e))
        except updates.UpdateFailed as e:
            if session.closed:  # dropped mid-push: its next session resumes the download
                self.server.log.info("update_interrupted", device_id=device_id, reason=str(e))
                return
            self._pushed[device_id] = session.epoch
            self.server.log.warning("update_failed", device_id=device_id, reason=str(e))
            await record(FAILED, str(e)[:200])
        except RegistryError as e:
            self.server.log.warning("update_not_recorded", device_id=device_id, reason=str(e))
        finally:
            self._pushing.discard(device_id)
