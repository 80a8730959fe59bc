"""The registry's rules under random interleavings of what agents, admins and servers do.

Hypothesis drives links, unlinks, transfers, sessions, reservations, releases,
disconnects and the passing of time against one store, through two registries
with a connection each (as two server instances would share the store), and
checks every answer against a small model of the rules. After each step the store must agree with
the model; at the end the audit log, replayed, must tell the same story: no unit
ever had two owners, none changed hands without its owner's or an admin's
unlink or an admin's transfer, and none was reserved twice.
"""

import asyncio
import itertools
import sqlite3

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from host.registry import (
    ADMIN,
    Actor,
    AllBusy,
    Conflict,
    DeviceOffline,
    Forbidden,
    NotFound,
    NotLinked,
    PairingRejected,
    RegistryError,
    Reservation,
    ReservationLimit,
    open_registry,
)
from host.registry.sqlite import path_from_url
from tests.host.registry.conftest import FakeClock, replay_audit

AGENTS = ("a", "b", "c")
UNITS = ("u1", "u2", "u3", "u4")
SERVERS = ("s1", "s2")
INSTANCES = 2
LEASE_S = 60
WHO = st.sampled_from(["self", "other", "admin"])


class RegistryMachine(RuleBasedStateMachine):
    txns = Bundle("txns")

    def __init__(self, url):
        super().__init__()
        self.url = url
        self.clock = FakeClock()
        self.loop = asyncio.new_event_loop()
        self.instances = [open_registry(url, clock=self.clock) for _ in range(INSTANCES)]
        self.registry = self.instances[0]
        self.run(self._open_shop())
        self.policy = "hybrid"
        self.owner = dict.fromkeys(UNITS)
        self.leases = {}  # unit -> [server_id, epoch, expires_at]
        self.held = {}  # txn_id -> (unit, agent_id, expires_at)
        self.txn_ids = itertools.count()

    async def _open_shop(self):
        for n, registry in enumerate(self.instances):
            await registry.join(f"api-{n}", 3600)
        await self.registry.create_location("L1", "Main street")
        for agent_id in AGENTS:
            await self.registry.create_agent(agent_id, f"Till {agent_id}", "L1")
        for unit in UNITS:
            await self.registry.register_device(unit, f"secret-of-{unit}-0123456789", None, "L1")

    def run(self, operation):
        return self.loop.run_until_complete(operation)

    def attempt(self, operation):
        """The operation's result, or the class of the refusal it raised."""
        try:
            return self.run(operation)
        except RegistryError as refusal:
            return type(refusal)

    def actor(self, agent_id, who):
        if who == "admin":
            return ADMIN
        if who == "other":
            return Actor.agent(AGENTS[(AGENTS.index(agent_id) + 1) % len(AGENTS)])
        return Actor.agent(agent_id)

    def online(self, unit):
        lease = self.leases.get(unit)
        return lease is not None and lease[2] > self.clock.now

    def holder(self, unit):
        for txn_id, (held_unit, _, expires_at) in self.held.items():
            if held_unit == unit and expires_at > self.clock.now:
                return txn_id
        return None

    @rule(instance=st.sampled_from(range(INSTANCES)))
    def requests_land_on_another_instance(self, instance):
        self.registry = self.instances[instance]

    @initialize()
    def units_connect(self):
        for unit in UNITS:
            self.connect(unit, "s1")

    # Ownership

    @rule(
        agent_id=st.sampled_from(AGENTS),
        unit=st.sampled_from(UNITS),
        who=WHO,
        right_code=st.booleans(),
    )
    def link(self, agent_id, unit, who, right_code):
        owner = self.owner[unit]
        code = "NOTTHIS1"
        if owner is None:
            issued = self.run(self.registry.issue_pairing_code(unit)).code
            code = issued if right_code else code
        outcome = self.attempt(self.registry.link(agent_id, unit, code, self.actor(agent_id, who)))

        if who == "other":
            assert outcome is Forbidden
        elif owner not in (None, agent_id):
            assert outcome is Conflict
        elif owner is None and self.holder(unit) is not None:
            assert outcome is Conflict  # never linked in the middle of a sale
        elif owner is None and who == "self" and not right_code:
            assert outcome is PairingRejected
        else:
            assert outcome.agent_id == agent_id
            self.owner[unit] = agent_id

    @rule(agent_id=st.sampled_from(AGENTS), unit=st.sampled_from(UNITS), who=WHO)
    def unlink(self, agent_id, unit, who):
        outcome = self.attempt(self.registry.unlink(agent_id, unit, self.actor(agent_id, who)))

        if who == "other":
            assert outcome is Forbidden
        elif self.owner[unit] != agent_id:
            assert outcome is NotFound
        else:
            assert outcome.agent_id is None
            self.owner[unit] = None

    @rule(agent_id=st.sampled_from(AGENTS), unit=st.sampled_from(UNITS), by_admin=st.booleans())
    def transfer(self, agent_id, unit, by_admin):
        actor = ADMIN if by_admin else Actor.agent(agent_id)
        outcome = self.attempt(self.registry.transfer(unit, agent_id, actor))

        if by_admin:
            assert outcome.agent_id == agent_id
            self.owner[unit] = agent_id
        else:
            assert outcome is Forbidden

    @rule(policy=st.sampled_from(["strict", "pool", "hybrid"]))
    def set_policy(self, policy):
        self.run(self.registry.set_policy("L1", policy))
        self.policy = policy

    # Sessions

    @rule(unit=st.sampled_from(UNITS), server_id=st.sampled_from(SERVERS))
    def connect(self, unit, server_id):
        epoch = self.run(self.registry.acquire_device(unit, server_id, LEASE_S))

        previous = self.leases.get(unit, [None, 0, 0])[1]
        assert epoch == previous + 1
        self.leases[unit] = [server_id, epoch, self.clock.now + LEASE_S]

    @rule(unit=st.sampled_from(UNITS))
    def heartbeat(self, unit):
        server_id, epoch, _ = self.leases.get(unit, ["s1", 0, 0])
        renewed = self.run(self.registry.renew_device(unit, server_id, epoch, LEASE_S))

        assert renewed == self.online(unit)
        if renewed:
            self.leases[unit][2] = self.clock.now + LEASE_S

    @rule(unit=st.sampled_from(UNITS), stale=st.booleans())
    def disconnect(self, unit, stale):
        epoch = self.leases.get(unit, [None, 0, 0])[1] - stale
        released = self.run(self.registry.release_device(unit, epoch))

        assert released == (unit in self.leases and not stale)
        if released:
            self.leases[unit][2] = min(self.leases[unit][2], self.clock.now)

    @rule(unit=st.sampled_from(UNITS))
    def stale_session_writes(self, unit):
        epoch = self.leases.get(unit, [None, 0, 0])[1] - 1
        written = self.run(self.registry.record_screen(unit, epoch, {"screen": "status"}))

        assert written is False

    # Reservations

    def candidates(self, agent_id):
        own = [u for u in UNITS if self.owner[u] == agent_id]
        pool = [u for u in UNITS if self.owner[u] is None]
        return {"strict": own, "hybrid": own + pool, "pool": sorted(own + pool)}[self.policy]

    @rule(target=txns, agent_id=st.sampled_from(AGENTS), ttl_s=st.sampled_from([5, 30]))
    def reserve(self, agent_id, ttl_s):
        txn_id = f"t{next(self.txn_ids)}"
        outcome = self.attempt(
            self.registry.reserve_for_agent(agent_id, txn_id, ttl_s, supersede=False)
        )

        candidates = self.candidates(agent_id)
        online = [u for u in candidates if self.online(u)]
        free = [u for u in online if self.holder(u) is None]
        holding = [
            u for u in candidates if self.holder(u) and self.held[self.holder(u)][1] == agent_id
        ]
        if not candidates:
            assert outcome is NotLinked
        elif len(holding) >= self.registry.limits.reservations_per_agent:
            assert outcome is ReservationLimit
        elif not online:
            assert outcome is DeviceOffline
        elif not free:
            assert outcome is AllBusy
        else:
            assert isinstance(outcome, Reservation)
            assert outcome.device_id == free[0]
            assert (outcome.server_id, outcome.epoch) == self.registry.instance
            self.held[txn_id] = (free[0], agent_id, self.clock.now + ttl_s)
            return txn_id
        return multiple()

    @rule(txn_id=txns, who=WHO, outcome=st.sampled_from(["complete", "cancel"]))
    def finish(self, txn_id, who, outcome):
        unit, agent_id, expires_at = self.held[txn_id]
        finish = self.registry.complete if outcome == "complete" else self.registry.cancel
        result = self.attempt(finish(txn_id, self.actor(agent_id, who)))

        if expires_at <= self.clock.now:
            assert result is NotFound
        elif who == "other":
            assert result is Forbidden
        else:
            assert result.device_id == unit
            self.held[txn_id] = (unit, agent_id, float("-inf"))  # finished: gone for good

    # Time

    @rule(seconds=st.sampled_from([1, 5, 20, 70]))
    def time_passes(self, seconds):
        self.clock.advance(seconds)
        for registry in self.instances:  # every instance stays present
            assert self.run(registry.renew(3600))

    @rule()
    def sweep(self):
        self.run(self.registry.sweep())

    @invariant()
    def the_store_agrees_with_the_model(self):
        for unit in self.run(self.registry.list_devices()):
            assert unit.agent_id == self.owner[unit.device_id]
            assert unit.txn_id == self.holder(unit.device_id)
            assert unit.status == ("online" if self.online(unit.device_id) else "offline")

    def teardown(self):
        try:
            self.audit_log_tells_the_same_story()
            if self.url.startswith("sqlite:"):
                db = sqlite3.connect(path_from_url(self.url))
                assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                db.close()
        finally:
            for registry in self.instances:
                self.run(registry.close())
            self.loop.close()

    def audit_log_tells_the_same_story(self):
        entries = self.run(self.registry.audit(limit=1_000_000))
        owners, reserved = replay_audit(entries, UNITS)
        assert owners == self.owner
        for unit in UNITS:
            if self.holder(unit) is not None:
                assert reserved[unit] == self.holder(unit)


def test_the_rules_hold_under_random_interleavings(new_store_url):
    run_state_machine_as_test(
        lambda: RegistryMachine(new_store_url()),
        settings=settings(
            max_examples=100,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
