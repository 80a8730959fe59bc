"""The registry's async interface: what the server, the HTTP API and the CLI call.

Every method is one atomic store operation running a rule from
`host.registry.rules` (where the rules are explained), except
`reserve_for_agent(..., wait_s=...)`, which waits in its location's queue
between attempts. The registry draws the random things (agent tokens, pairing
codes, queue tickets) and reads the clock inside the store's transaction, so
expiry follows commit order. Pass `clock` to move time in tests.

Agent tokens are random, returned once by `create_agent` and stored as their
SHA-256. A registry object belongs to one event loop.
"""

import asyncio
import hashlib
import secrets
import time
import uuid

from host.registry import rules
from host.registry.records import (
    ABORTED,
    ADMIN,
    HYBRID,
    PAUSED,
    RUNNING,
    Limits,
    Reservation,
    Ticket,
)

DEFAULT_LIMITS = Limits()

# No 0/O or 1/I: a cashier may have to type a code shown on a small screen.
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_CODE_LENGTH = 8


def hash_token(token):
    return hashlib.sha256(token.encode()).hexdigest()


class Registry:
    def __init__(self, store, clock=time.time, limits=DEFAULT_LIMITS, poll_s=0.1):
        """`limits` bounds each location's wait queue and what each agent holds; waiting
        requests try again when this registry frees a unit, and every `poll_s` for frees
        made elsewhere."""
        self.store = store
        self._clock = clock
        self.limits = limits
        self._poll_s = poll_s
        self._changed = asyncio.Event()
        self.instance = None  # (server_id, epoch) once this process joined

    async def join(self, server_id, ttl_s):
        """Start this process as instance `server_id` -> its epoch, larger than any before.
        What an earlier start of it held ends now; what this one is granted ends unless
        `renew` is called within every `ttl_s`."""
        epoch = await self._write_and_wake(rules.join_instance, server_id, ttl_s)
        self.instance = (server_id, epoch)
        return epoch

    async def renew(self, ttl_s, units=0):
        """Keep this instance present -> False once its presence lapsed or a newer start
        replaced it: what it held has ended, and it must join again."""
        return await self._write(rules.renew_instance, *self.instance, ttl_s, units)

    async def leave(self):
        """This instance stops: what it holds ends now."""
        await self._write_and_wake(rules.leave_instance, *self.instance)

    async def instances(self):
        """The instances present now -> [Instance]."""
        return await self._read(rules.live_instances)

    async def instance_alive(self, server_id):
        return await self._read(rules.instance_alive, server_id)

    async def close(self):
        await self.store.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.close()

    def _write(self, rule, *args):
        return self.store.write(lambda tx: rule(tx, self._clock(), *args))

    def _read(self, rule, *args):
        return self.store.read(lambda tx: rule(tx, self._clock(), *args))

    def _wake(self):
        """Tell waiting requests that a unit may have become free."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _write_and_wake(self, rule, *args):
        result = await self._write(rule, *args)
        self._wake()
        return result

    # Locations and agents (admin operations)

    async def create_location(self, location_id, name, policy=HYBRID):
        return await self._write(rules.create_location, ADMIN, location_id, name, policy)

    async def set_policy(self, location_id, policy):
        return await self._write_and_wake(rules.set_policy, ADMIN, location_id, policy)

    async def get_location(self, location_id):
        return await self.store.read(lambda tx: rules.get_location(tx, location_id))

    async def list_locations(self):
        return await self.store.read(lambda tx: tx.locations())

    async def create_agent(self, agent_id, name, location_id):
        """-> (Agent, token). The token is shown this once; only its hash is kept."""
        token = secrets.token_urlsafe(32)
        agent = await self._write(
            rules.create_agent, ADMIN, agent_id, name, location_id, hash_token(token)
        )
        return agent, token

    async def authenticate_agent(self, token):
        """The agent whose token this is, or Unauthorized."""
        token_hash = hash_token(token) if isinstance(token, str) else ""
        return await self.store.read(lambda tx: rules.authenticate_agent(tx, token_hash))

    async def get_agent(self, agent_id):
        return await self.store.read(lambda tx: rules.get_agent(tx, agent_id))

    async def list_agents(self, location_id=None):
        return await self.store.read(lambda tx: tx.agents(location_id))

    # Devices and links

    async def register_device(self, device_id, secret, name=None, location_id=None):
        """Add a unit (admin; provisioning), or update a known one's secret, name, location
        (secret=None keeps a known unit's secret)."""
        return await self._write_and_wake(
            rules.register_device, ADMIN, device_id, secret, name, location_id
        )

    async def get_device(self, device_id, actor=None):
        """The unit's status; with `actor`, as that caller may see it (an agent of another
        location gets NotFound)."""
        return await self._read(rules.get_device, device_id, actor)

    async def list_devices(self, location_id=None):
        return await self._read(rules.list_devices, location_id)

    async def device_secret(self, device_id):
        """The unit's secret, to check its challenge response; nothing else returns it."""
        return await self.store.read(lambda tx: rules.device_secret(tx, device_id))

    async def issue_pairing_code(self, device_id, ttl_s=600):
        """A one-time code for an unlinked unit to show; a new code replaces the old one."""
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_LENGTH))
        return await self._write(rules.issue_pairing_code, device_id, code, ttl_s)

    async def link(self, agent_id, device_id, code, actor):
        """Link an unowned unit to the agent; `code` is its pairing code (an admin may omit it).
        A unit owned by another agent raises Conflict."""
        return await self._write(rules.link, actor, agent_id, device_id, code)

    async def unlink(self, agent_id, device_id, actor):
        return await self._write_and_wake(rules.unlink, actor, agent_id, device_id)

    async def transfer(self, device_id, agent_id, actor):
        return await self._write_and_wake(rules.transfer, actor, device_id, agent_id)

    # Sessions

    async def acquire_device(
        self, device_id, server_id, ttl_s, firmware=None, reset_cause=None, via=None
    ):
        """Start a session on the unit -> its epoch, larger than any before; the unit is online.
        `firmware` and `reset_cause`: what the unit said of itself when it connected; `via`: the
        bridge it came through ("bridge@<host>", Device.via), None on Wi-Fi."""
        return await self._write_and_wake(
            rules.acquire_device, device_id, server_id, ttl_s, firmware, reset_cause, via
        )

    async def renew_device(self, device_id, server_id, epoch, ttl_s, **changes):
        """Heartbeat: extend the lease and record `changes` (firmware, panel, last_screen) -> False if a
        newer session took the unit over."""
        return await self._write(rules.renew_device, device_id, server_id, epoch, ttl_s, changes)

    async def renew_devices(self, server_id, ttl_s, heartbeats):
        """Many heartbeats, (device_id, epoch, changes) each, in one operation -> [renewed?]."""
        return await self._write(rules.renew_devices, server_id, ttl_s, heartbeats)

    async def record_screen(self, device_id, epoch, shown, txn_id=None):
        """The screen the unit verified drawing in session `epoch` (`Device.shown`) -> False if
        a newer session holds the unit. Audited: `shown` for a transaction's QR, else `screen`."""
        return await self._write(rules.record_screen, device_id, epoch, shown, txn_id)

    async def release_device(self, device_id, epoch):
        """The session ended -> False if it was no longer the unit's newest."""
        return await self._write(rules.release_device, device_id, epoch)

    async def holds_device(self, device_id, epoch, txn_id=None):
        """Is this session still the unit's newest, with a live lease (and, with `txn_id`,
        that transaction still the unit's)? Ask before side effects."""
        return await self._read(rules.holds_device, device_id, epoch, txn_id)

    async def record_update(self, device_id, update, epoch=None):
        """Where the unit's update stands (`Device.update`: version, state, reason, rollout_id),
        from the session `epoch` when given -> False if a newer session holds the unit.
        Audited as `update` when its version or state changes."""
        return await self._write(rules.record_update, device_id, update, epoch)

    # Releases and rollouts

    async def publish_release(self, version, bundle, actor):
        """Keep a release bundle (bytes, checked against the release keys by the caller)
        -> PublishedRelease; the same bundle again changes nothing, other bytes under a
        published version are ReleaseExists."""
        return await self._write(rules.publish_release, actor, version, bundle)

    async def release(self, version):
        """The bundle of release `version` (bytes), or None."""
        return await self.store.read(lambda tx: tx.release(version))

    async def releases(self):
        """[PublishedRelease], by version."""
        return await self.store.read(lambda tx: tx.releases())

    async def start_rollout(
        self, version, location_id=None, steps=(100,), abort_after_failures=1, actor=ADMIN
    ):
        """Take release `version` to the units at `location_id` (None: all), a canary wave
        first, then `steps` (growing percentages of the others) -> Rollout. Refused while
        another rollout is running or paused (RolloutActive)."""
        rollout_id = uuid.uuid4().hex[:12]
        return await self._write(
            rules.start_rollout,
            actor,
            rollout_id,
            version,
            location_id,
            steps,
            abort_after_failures,
        )

    async def rollout(self, rollout_id):
        return await self.store.read(lambda tx: rules.get_rollout(tx, rollout_id))

    async def rollouts(self):
        """Every rollout, the newest first."""
        return await self.store.read(rules.list_rollouts)

    async def set_rollout(self, rollout_id, expected, actor, state=None, wave=None, reason=None):
        """Move a rollout on, decided while it was in (state, wave) `expected` -> the new
        Rollout, or None if it moved meanwhile (another instance or the admin was first)."""
        return await self._write(
            rules.set_rollout, actor, rollout_id, expected, state, wave, reason
        )

    async def pause_rollout(self, rollout_id, actor, reason=None):
        return await self._write(rules.change_rollout, actor, rollout_id, PAUSED, reason)

    async def resume_rollout(self, rollout_id, actor):
        """Go on, past the units that failed so far."""
        return await self._write(rules.change_rollout, actor, rollout_id, RUNNING)

    async def abort_rollout(self, rollout_id, actor, reason=None):
        return await self._write(rules.change_rollout, actor, rollout_id, ABORTED, reason)

    # Reservations

    async def reserve_for_agent(
        self, agent_id, txn_id, ttl_s=30.0, wait_s=0.0, request=None, supersede=True
    ):
        """Reserve a unit for the agent's transaction, held by this instance (`join` first)
        -> Reservation, or a refusal (NotLinked, DeviceOffline, AllBusy, QueueFull, ...).

        With `wait_s`, a request that finds no free unit waits its turn in the
        location's queue for up to `wait_s`. A reservation granted while the
        caller was cancelled is not lost track of: it expires after `ttl_s`, or
        sooner with this instance. With `supersede`, the agent's own unfinished
        transactions are replaced. With `request` (an `IdempotentRequest` for `txn_id`),
        a request made before with its key returns its stored `IdempotentRequest` if it
        was answered, else goes on as its first transaction (see `rules.reserve`).
        """
        if self.instance is None:
            raise RuntimeError("join() the registry as an instance before reserving")
        ticket_id = uuid.uuid4().hex if wait_s else None
        head = (agent_id, txn_id, ttl_s, ticket_id)
        tail = (self.limits, self.instance, request, supersede)
        if ticket_id is None:
            return await self._write(rules.reserve, *head, 0, *tail)
        result = None
        changed = self._changed
        try:
            result = await self._write(rules.reserve, *head, wait_s, *tail)
            while isinstance(result, Ticket):
                try:
                    await asyncio.wait_for(changed.wait(), self._poll_s)
                except asyncio.TimeoutError:
                    pass
                changed = self._changed
                result = await self._write(rules.reserve, *head, 0, *tail)
        finally:
            if not isinstance(result, Reservation):
                await asyncio.shield(self._leave_queue(ticket_id))
        # Our ticket left the line: whoever was behind it may be served now.
        self._wake()
        return result

    async def waiting(self, location_id):
        """The requests waiting in the location's queue -> [Ticket], first in line first."""
        return await self._read(rules.waiting, location_id)

    async def occupancy(self):
        """{location_id: (live reservations, places waiting in its queue)}, in one read."""
        return await self._read(rules.occupancy)

    async def _leave_queue(self, ticket_id):
        await self.store.write(lambda tx: rules.leave_queue(tx, ticket_id))
        self._wake()

    async def complete(self, txn_id, actor, request=None, response=None):
        """The payment went through; release the unit. Only the holding agent (or an admin).
        With `request` (an `IdempotentRequest`), `response` is remembered as its answer, and
        a retry gets that `IdempotentRequest` back instead."""
        return await self._write_and_wake(
            rules.finish, actor, txn_id, "complete", request, response, self.limits
        )

    async def cancel(self, txn_id, actor, request=None, response=None):
        return await self._write_and_wake(
            rules.finish, actor, txn_id, "cancel", request, response, self.limits
        )

    async def idempotent_answer(self, request):
        """The answer remembered for this request (`IdempotentRequest`), or None; the same
        key with another request raises IdempotencyMismatch. An answer found is read again
        as a write that changes nothing, which a replicated store confirms before it is given
        again (host/registry/redis.py): it may not have outlived a failover yet."""
        if await self._read(rules.idempotent_answer, request) is None:
            return None
        return await self._write(rules.idempotent_answer, request)

    async def answer_request(self, request, status, response):
        """Remember the answer to a request made with a key."""
        await self._write(rules.answer_request, request, status, response)

    async def get_reservation(self, txn_id, actor=None):
        """The live transaction; with `actor`, as that caller may see it (as get_device)."""
        return await self._read(rules.get_reservation, txn_id, actor)

    # Upkeep and history

    async def sweep(self):
        """Expire what nobody released -> counts; correctness never depends on it."""
        return await self._write_and_wake(rules.sweep)

    async def audit(self, device_id=None, agent_id=None, limit=100):
        """Who linked, unlinked, transferred and reserved what, when: newest `limit`, oldest first."""
        return await self.store.read(lambda tx: tx.audit(device_id, agent_id, limit))

    async def audit_after(self, seq, limit=500):
        """Entries after `seq` in the order they were made, at most `limit` (the event stream,
        host/events.py, resumes from here)."""
        return await self.store.read(lambda tx: tx.audit_after(seq, limit))
