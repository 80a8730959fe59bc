"""The registry's rules, written once for every store.

Each rule is a plain function `rule(tx, now, ...)` over a store `Transaction`
(see `host.registry.store`): it validates its input, reads the records it
needs, decides, writes, appends to the audit log and returns a record. The
store runs it as one atomic transaction; a refusal is an exception from
`host.registry.errors`, which rolls the whole transaction back. Rules do no
I/O of their own and draw nothing at random, so a store may run them again.

The rules that make the legacy failures impossible:

- A device has at most one owning agent. A link is insert-if-absent: linking a
  device owned by another agent is a `Conflict` and changes nothing. Only the
  owner or an admin unlinks, only an admin transfers.
- A device is reserved by at most one live transaction, and only the agent
  holding it (or an admin) completes or cancels it; otherwise it expires. A
  reservation is held by the server instance that made it, as a session is: it
  ends when that instance's presence lapses or a newer start of it joins,
  whatever its ttl (the sweeper only tidies).
- A cashier's new QR supersedes its own unfinished transaction (never another
  agent's); a request repeated with its idempotency key is not applied twice.
- Every session on a device gets a larger epoch than any before it; writes
  about a device made for a session carry its epoch and are ignored (the rule
  returns False) once a newer session exists.

Which units an agent may use, by its location's policy:

- strict: its own linked units only;
- hybrid (default): its own units first, then the location's pool;
- pool: its own units and the location's pool, in id order.

The pool is the location's unlinked units. A unit linked to an agent never
serves another agent, whatever the policy: that is what ownership means.

The wait queue is per location and first in, first out: a free unit goes to
the earliest waiting request that may use it, and a request that does not wait
never takes a unit from under one that does. Each agent holds at most a few
unfinished transactions and queue places (`Limits`).

A pairing code links only while its unit shows it: a unit reserved for a
transaction is not linked by anyone, and the reservation deletes the code (the
QR replaced the pairing screen; back home, the unit shows a new code).

Agents read units and transactions of their own location only; to an agent of
another location they do not exist.

Updates: a release is published once per version and never replaced. A rollout
takes a release to the units in its scope wave by wave, the waves fixed when it
starts; at most one rollout is running or paused at a time. Every change of a
rollout is conditional on the state and wave it was decided from, so two
instances driving the same rollout cannot both apply one step.
"""

import hashlib
import hmac
import math
import re
from dataclasses import replace

from host.registry.errors import (
    AllBusy,
    Conflict,
    DeviceOffline,
    Forbidden,
    IdempotencyMismatch,
    InvalidInput,
    NotFound,
    NotLinked,
    PairingRejected,
    QueueFull,
    QueuePlaceLimit,
    ReleaseExists,
    ReservationLimit,
    RolloutActive,
    Superseded,
    Unauthorized,
)
from host.registry.records import (
    ABORTED,
    ACTIVE,
    COMPLETED,
    FAILED,
    PAUSED,
    POLICIES,
    POOL,
    REGISTRY,
    ROLLED_BACK,
    RUNNING,
    STRICT,
    UPDATE_STATES,
    Actor,
    Agent,
    Device,
    DeviceStatus,
    Instance,
    Lease,
    Location,
    PairingCode,
    PublishedRelease,
    Reservation,
    Rollout,
    SupersededTxn,
    Ticket,
)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_VERSION = re.compile(r"[A-Za-z0-9._+-]{1,32}")  # as a release's manifest spells it
_MAX_REASON = 200
MAX_STEPS = 20
MAX_FAILURES = 10000
_MAX_NAME = 100
_SECRET_LENGTHS = (16, 256)
MAX_LEASE_S = 3600
MAX_RESERVATION_S = 3600
MAX_PAIRING_S = 86400
MAX_WAIT_S = 300
# How long a request made with an idempotency key is remembered (a cashier system retries
# within seconds; the longest transaction lasts an hour).
IDEMPOTENCY_TTL_S = 86400


# Input checks


def check_id(kind, value):
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidInput(
            f"{kind} id {value!r} is not valid; use 1 to 64 letters, digits, '.', '_', ':' "
            "or '-', starting with a letter or digit"
        )
    return value


def _check_name(kind, value):
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_NAME:
        raise InvalidInput(f"{kind} name {value!r} is not valid; give 1 to {_MAX_NAME} characters")
    return value


def _check_seconds(name, value, maximum):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= maximum:
        raise InvalidInput(
            f"{name} must be a number of seconds above 0 and at most {maximum}, got {value!r}"
        )
    return float(value)


def _check_version(version):
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise InvalidInput(
            f"release version {version!r} is not valid; use 1 to 32 letters, digits, "
            "'.', '_', '+' or '-'"
        )
    return version


def _check_policy(policy):
    if policy not in POLICIES:
        raise InvalidInput(f"policy {policy!r} is not known; use one of {', '.join(POLICIES)}")
    return policy


def _authorise(actor, agent_id, doing):
    if not (actor.is_admin or actor == Actor.agent(agent_id)):
        raise Forbidden(
            f"{actor} cannot {doing} for agent {agent_id}; use that agent's token or the admin token"
        )


# Lookups that refuse with a sentence


def get_location(tx, location_id):
    location = tx.location(check_id("location", location_id))
    if location is None:
        raise NotFound(f"location {location_id} does not exist; create it first")
    return location


def get_agent(tx, agent_id):
    agent = tx.agent(check_id("agent", agent_id))
    if agent is None:
        raise NotFound(f"agent {agent_id} does not exist; an admin creates agents")
    return agent


def _device(tx, device_id, actor=None):
    device = tx.device(check_id("device", device_id))
    if device is None or not _sees(tx, actor, device.location_id):
        raise NotFound(f"unit {device_id} is not registered; provision it first")
    return device


def _sees(tx, actor, location_id):
    """An agent sees its own location only; the admin and the server itself (None) see all."""
    return actor is None or actor.kind != "agent" or tx.agent(actor.id).location_id == location_id


def _audit(tx, now, actor, action, **subject):
    tx.append_audit(now, str(actor), action, **subject)


def _audit_unit(tx, now, actor, action, device_id, detail):
    """An audit entry about a unit's session or screen, with its owner: whom it serves."""
    _audit(tx, now, actor, action, device_id=device_id, agent_id=tx.owner(device_id), detail=detail)


def _audit_txn(tx, now, actor, action, reservation, detail=None):
    """An audit entry about a transaction: its unit, its agent and its id."""
    _audit(
        tx,
        now,
        actor,
        action,
        device_id=reservation.device_id,
        agent_id=reservation.agent_id,
        txn_id=reservation.txn_id,
        detail=detail,
    )


# Locations and agents


def create_location(tx, now, actor, location_id, name, policy):
    check_id("location", location_id)
    location = Location(location_id, _check_name("location", name), _check_policy(policy))
    if tx.location(location_id) is not None:
        raise Conflict(f"location {location_id} already exists; pick another id")
    tx.put_location(location)
    _audit(tx, now, actor, "create_location", detail=f"{name} ({policy})")
    return location


def set_policy(tx, now, actor, location_id, policy):
    location = replace(get_location(tx, location_id), policy=_check_policy(policy))
    tx.put_location(location)
    _audit(tx, now, actor, "set_policy", detail=f"{location_id}: {policy}")
    return location


def create_agent(tx, now, actor, agent_id, name, location_id, token_hash):
    check_id("agent", agent_id)
    get_location(tx, location_id)
    if tx.agent(agent_id) is not None:
        raise Conflict(f"agent {agent_id} already exists; pick another id")
    agent = Agent(agent_id, _check_name("agent", name), location_id, token_hash)
    tx.put_agent(agent)
    _audit(tx, now, actor, "create_agent", agent_id=agent_id, detail=f"at {location_id}")
    return agent


def authenticate_agent(tx, token_hash):
    agent = tx.agent_by_token_hash(token_hash)
    if agent is None:
        raise Unauthorized("this token belongs to no agent; ask an admin for the agent's token")
    return agent


# Devices and their owners


def register_device(tx, now, actor, device_id, secret, name, location_id):
    """Add a unit, or update a known unit's secret, name and location (re-provisioning)."""
    check_id("device", device_id)
    lo, hi = _SECRET_LENGTHS
    # A known unit may be updated without its secret (None keeps the stored one).
    if (secret is not None or tx.device(device_id) is None) and (
        not isinstance(secret, str) or not lo <= len(secret) <= hi
    ):
        raise InvalidInput(f"a unit's secret must be a string of {lo} to {hi} characters")
    if name is not None:
        _check_name("unit", name)
    if location_id is not None:
        get_location(tx, location_id)
    device = tx.device(device_id)
    if device is None:
        device = Device(device_id, name, location_id, registered_at=now)
    else:
        owner = tx.owner(device_id)
        if owner is not None and location_id not in (None, device.location_id):
            raise Conflict(
                f"unit {device_id} is linked to agent {owner} at location {device.location_id}; "
                f"unlink it before moving it to {location_id}"
            )
        device = replace(
            device,
            name=device.name if name is None else name,
            location_id=device.location_id if location_id is None else location_id,
        )
    tx.put_device(device, secret)
    _audit(tx, now, actor, "register", device_id=device_id, detail=f"at {device.location_id}")
    return device_status(tx, now, device)


def issue_pairing_code(tx, now, device_id, code, ttl_s):
    _device(tx, device_id)
    ttl_s = _check_seconds("ttl_s", ttl_s, MAX_PAIRING_S)
    owner = tx.owner(device_id)
    if owner is not None:
        raise Conflict(
            f"unit {device_id} is linked to agent {owner}; only unlinked units get a pairing code"
        )
    pairing = PairingCode(device_id, code, now + ttl_s)
    tx.put_pairing_code(pairing)
    return pairing


def link(tx, now, actor, agent_id, device_id, code):
    """Link an unowned unit to the agent; agents prove presence with the unit's pairing code."""
    agent = get_agent(tx, agent_id)
    device = _device(tx, device_id)
    _authorise(actor, agent_id, "link units")
    owner = tx.owner(device_id)
    if owner == agent_id:
        return device_status(tx, now, device)
    if owner is not None:
        raise Conflict(
            f"unit {device_id} is linked to another agent; its owner can unlink it, "
            "or an admin can transfer it",
            device_id=device_id,
        )
    if device.location_id not in (None, agent.location_id):
        raise Forbidden(
            f"unit {device_id} belongs to location {device.location_id} and agent {agent_id} "
            f"to {agent.location_id}; an admin can re-register the unit at the agent's location"
        )
    if _reserved(tx, now, device_id) is not None:
        raise Conflict(
            f"unit {device_id} is showing the QR of a transaction in progress; link it once "
            "that sale is over and the unit shows its pairing QR again",
            device_id=device_id,
        )
    if not actor.is_admin:
        pairing = tx.pairing_code(device_id)
        if (
            pairing is None
            or not isinstance(code, str)
            or not hmac.compare_digest(pairing.code.encode(), code.encode())
            or pairing.expires_at <= now
        ):
            raise PairingRejected(device_id)
    tx.delete_pairing_code(device_id)
    tx.put_link(device_id, agent_id, now)
    if device.location_id is None:
        device = replace(device, location_id=agent.location_id)
        tx.put_device(device)
    _audit(tx, now, actor, "link", device_id=device_id, agent_id=agent_id)
    return device_status(tx, now, device)


def unlink(tx, now, actor, agent_id, device_id):
    get_agent(tx, agent_id)
    device = _device(tx, device_id)
    _authorise(actor, agent_id, "unlink units")
    if tx.owner(device_id) != agent_id:
        raise NotFound(f"unit {device_id} is not linked to agent {agent_id}; nothing to unlink")
    tx.delete_link(device_id)
    _audit(tx, now, actor, "unlink", device_id=device_id, agent_id=agent_id)
    return device_status(tx, now, device)


def transfer(tx, now, actor, device_id, agent_id):
    """Give a unit to another agent (admin only); the unit moves to that agent's location."""
    agent = get_agent(tx, agent_id)
    device = _device(tx, device_id)
    if not actor.is_admin:
        raise Forbidden(
            f"only an admin can transfer unit {device_id}; its owner can unlink it instead"
        )
    previous = tx.owner(device_id)
    if previous == agent_id:
        return device_status(tx, now, device)
    if previous is not None:
        tx.delete_link(device_id)
    tx.put_link(device_id, agent_id, now)
    tx.delete_pairing_code(device_id)
    if device.location_id != agent.location_id:
        device = replace(device, location_id=agent.location_id)
        tx.put_device(device)
    _audit(
        tx,
        now,
        actor,
        "transfer",
        device_id=device_id,
        agent_id=agent_id,
        detail=f"from {previous}",
    )
    return device_status(tx, now, device)


# Sessions: leases with fencing epochs


def acquire_device(tx, now, device_id, server_id, ttl_s, firmware=None, reset_cause=None, via=None):
    """Start a session on the unit for `server_id`, recording the firmware and reset cause the
    unit announced and the bridge it came through (`via`); the newest session always wins."""
    device = _device(tx, device_id)
    check_id("server", server_id)
    ttl_s = _check_seconds("ttl_s", ttl_s, MAX_LEASE_S)
    previous = tx.lease(device_id)
    epoch = 1 if previous is None else previous.epoch + 1
    tx.put_lease(Lease(device_id, server_id, epoch, now + ttl_s))
    tx.put_device(
        replace(
            device,
            last_seen=now,
            firmware=firmware or device.firmware,
            reset_cause=reset_cause,
            via=via,
        )
    )
    _audit_unit(tx, now, Actor.server(server_id), "session", device_id, f"epoch {epoch}")
    return epoch


def _holds(tx, device_id, epoch):
    lease = tx.lease(check_id("device", device_id))
    if lease is None or lease.epoch != epoch:
        return None
    return lease


def renew_device(tx, now, device_id, server_id, epoch, ttl_s, changes=None):
    """Extend the session's live lease (a heartbeat) and record what the unit reported with it
    (`changes`: firmware, panel, last_screen). A lease that lapsed or was released stays lost: the
    server acquires the unit again and gets a new epoch."""
    ttl_s = _check_seconds("ttl_s", ttl_s, MAX_LEASE_S)
    _check_report(changes or {})
    lease = _holds(tx, device_id, epoch)
    if lease is None or lease.server_id != server_id or not lease.live(now):
        return False
    tx.put_lease(replace(lease, expires_at=now + ttl_s))
    tx.put_device(replace(tx.device(device_id), last_seen=now, **(changes or {})))
    return True


def renew_devices(tx, now, server_id, ttl_s, heartbeats):
    """Many heartbeats, (device_id, epoch, changes) each, in one transaction -> [renewed?].

    A server with thousands of units commits their heartbeats together: one transaction per
    heartbeat would keep the store busy and queue QR requests behind them."""
    return [
        renew_device(tx, now, device_id, server_id, epoch, ttl_s, changes)
        for device_id, epoch, changes in heartbeats
    ]


def release_device(tx, now, device_id, epoch):
    """End the session (the unit disconnected); the unit is offline from now."""
    lease = _holds(tx, device_id, epoch)
    if lease is None:
        return False
    if lease.live(now):  # else it ended already (released, or lapsed)
        tx.put_lease(replace(lease, expires_at=now))
        _audit_unit(tx, now, Actor.server(lease.server_id), "offline", device_id, f"epoch {epoch}")
    return True


def record_screen(tx, now, device_id, epoch, shown, txn_id=None):
    """Record the screen the unit drew and verified in the session with `epoch`: `shown` (a
    dict, `Device.shown`), audited as `shown` for a transaction's QR, else `screen` -> False
    if a newer session holds the unit (what this one saw is stale)."""
    lease = _holds(tx, device_id, epoch)
    if lease is None:
        return False
    kind = shown.get("screen") if isinstance(shown, dict) else None
    if not isinstance(kind, str):
        raise InvalidInput("a recorded screen must be a dict with its 'screen' kind")
    tx.put_device(replace(tx.device(device_id), shown={**shown, "at": now}))
    actor = Actor.server(lease.server_id)
    if txn_id is None:
        _audit_unit(tx, now, actor, "screen", device_id, kind)
    else:
        reservation = tx.reservation(check_id("transaction", txn_id))
        agent_id = reservation.agent_id if reservation else tx.owner(device_id)
        _audit(
            tx,
            now,
            actor,
            "shown",
            device_id=device_id,
            agent_id=agent_id,
            txn_id=txn_id,
            detail=kind,
        )
    return True


def _check_report(changes):
    unknown = set(changes) - {"firmware", "panel", "last_screen"}
    if unknown:
        raise InvalidInput(
            f"cannot report {', '.join(sorted(unknown))}; a unit reports "
            "firmware, panel and last_screen"
        )


def holds_device(tx, now, device_id, epoch, txn_id=None):
    """True while the session with `epoch` is the unit's newest and its lease is live, and,
    with `txn_id`, while that transaction still holds the unit."""
    lease = _holds(tx, device_id, epoch)
    if lease is None or not lease.live(now):
        return False
    return txn_id is None or getattr(_reserved(tx, now, device_id), "txn_id", None) == txn_id


# Instances: presence with an epoch per start


def join_instance(tx, now, server_id, ttl_s):
    """Start `server_id` -> its epoch, larger than any before: whatever an earlier start of
    it held (its reservations) ends now."""
    check_id("server", server_id)
    ttl_s = _check_seconds("ttl_s", ttl_s, MAX_LEASE_S)
    previous = tx.instance(server_id)
    epoch = 1 if previous is None else previous.epoch + 1
    tx.put_instance(Instance(server_id, epoch, now + ttl_s))
    _audit(tx, now, Actor.server(server_id), "start", detail=f"epoch {epoch}")
    return epoch


def renew_instance(tx, now, server_id, epoch, ttl_s, units):
    """Extend the presence of this start of the instance -> False once it lapsed or a newer
    start replaced it: what it held is gone, and it must join again."""
    ttl_s = _check_seconds("ttl_s", ttl_s, MAX_LEASE_S)
    instance = tx.instance(check_id("server", server_id))
    if instance is None or instance.epoch != epoch or not instance.live(now):
        return False
    tx.put_instance(replace(instance, expires_at=now + ttl_s, units=units))
    return True


def leave_instance(tx, now, server_id, epoch):
    """The instance stops: what it holds ends now."""
    instance = tx.instance(check_id("server", server_id))
    if instance is None or instance.epoch != epoch:
        return False
    tx.put_instance(replace(instance, expires_at=min(instance.expires_at, now)))
    return True


def live_instances(tx, now):
    return [i for i in tx.instances() if i.live(now)]


def instance_alive(tx, now, server_id):
    instance = tx.instance(check_id("server", server_id))
    return instance is not None and instance.live(now)


# Reservations and the wait queue


def _candidates(tx, agent, policy):
    """(device_id, owned) in the order the policy prefers them."""
    own = [(d, True) for d in tx.linked_devices(agent.agent_id)]
    if policy == STRICT:
        return own
    pool = [(d, False) for d in tx.pool_devices(agent.location_id)]
    if policy == POOL:
        return sorted(own + pool)
    return own + pool


def _online(tx, now, device_id):
    lease = tx.lease(device_id)
    return lease is not None and lease.live(now)


def _live_queue(tx, now, location_id):
    queue = []
    for ticket in tx.tickets(location_id):
        if ticket.expires_at > now:
            queue.append(ticket)
        else:
            tx.delete_ticket(ticket.ticket_id)
    return queue


def _holder_gone(tx, now, reservation):
    """Has the instance start that holds the reservation stopped or lapsed?"""
    holder = tx.instance(reservation.server_id)
    return holder is None or holder.epoch != reservation.epoch or not holder.live(now)


def _live(tx, now, reservation):
    return reservation.live(now) and not _holder_gone(tx, now, reservation)


def _reserved(tx, now, device_id):
    """The live reservation of the unit, or None."""
    held = tx.reservation_of(device_id)
    return held if held is not None and _live(tx, now, held) else None


def _expire(tx, now, reservation):
    """End a reservation that is no longer live: `expire` at its ttl, `release` when its
    instance went first."""
    tx.delete_reservation(reservation.txn_id)
    lapsed = not reservation.live(now)
    detail = None if lapsed else f"{reservation.server_id} epoch {reservation.epoch} gone"
    _audit_txn(tx, now, REGISTRY, "expire" if lapsed else "release", reservation, detail)


def _supersede(tx, now, reservation, txn_id):
    tx.delete_reservation(reservation.txn_id)
    tx.put_superseded(SupersededTxn(reservation.txn_id, txn_id, reservation.expires_at))
    _audit_txn(
        tx, now, Actor.agent(reservation.agent_id), "superseded", reservation, f"by {txn_id}"
    )


# Requests with an idempotency key


def _known_request(tx, now, request):
    """The stored request with the key of `request` (an IdempotentRequest), or None; the same
    key with another request is a Conflict."""
    known = tx.idempotent_request(request.caller, request.key)
    if known is None or known.expires_at <= now:
        return None
    if not hmac.compare_digest(known.fingerprint, request.fingerprint):
        raise IdempotencyMismatch(request.key)
    return known


def _remember(tx, request, limits):
    """Store a new request, forgetting the caller's oldest past its cap."""
    excess = tx.count_idempotent_requests(request.caller) + 1 - limits.idempotency_keys_per_caller
    for old in tx.oldest_idempotent_requests(request.caller, max(0, excess)):
        tx.delete_idempotent_request(old.caller, old.key)
    tx.put_idempotent_request(request)


def idempotent_answer(tx, now, request):
    """The answer already given to this request (same caller, key and fingerprint), or None."""
    known = _known_request(tx, now, request)
    return known if known is not None and known.answered else None


def answer_request(tx, now, request, status, response):
    """Record the answer to a request made with a key, if it is still remembered."""
    known = tx.idempotent_request(request.caller, request.key)
    if known is not None and known.fingerprint == request.fingerprint and not known.answered:
        tx.put_idempotent_request(replace(known, status=status, response=response))


def reserve(
    tx,
    now,
    agent_id,
    txn_id,
    ttl_s,
    ticket_id,
    wait_s,
    limits,
    instance,
    request=None,
    supersede=True,
):
    """Reserve a unit for the agent's transaction, by its location's policy, held by
    `instance` = (server_id, epoch), the start of the server instance that asks.

    Returns the `Reservation` when a unit is free for this request now. Otherwise a
    request that may wait gets its `Ticket` in the location's queue: a first call
    with `ticket_id` and `wait_s > 0` joins the queue, later calls with the same
    `ticket_id` (and `wait_s=0`) keep their place until the ticket expires. Any
    other outcome is a refusal: NotLinked, DeviceOffline, AllBusy, QueueFull, or past
    the agent's `limits` ReservationLimit or QueuePlaceLimit.

    With `supersede`, the agent's own unfinished transactions end (`superseded`) and their
    units may serve this one: a cashier's new QR replaces the one it left unfinished.

    With `request` (an `IdempotentRequest` naming `txn_id`), a request already made with
    its key is not made again: an answered one returns its stored `IdempotentRequest`, an
    unanswered one (its attempt died or the caller gave up on it) goes on under its own
    transaction, whose reservation this instance takes over, or makes again if its holder
    is gone.
    """
    check_id("transaction", txn_id)
    ttl_s = _check_seconds("ttl_s", ttl_s, MAX_RESERVATION_S)
    if wait_s:
        _check_seconds("wait_s", wait_s, MAX_WAIT_S)
    agent = get_agent(tx, agent_id)
    location = tx.location(agent.location_id)
    server_id, epoch = instance
    if request is not None:
        known = _known_request(tx, now, request)
        if known is not None:
            if known.answered:
                return known
            txn_id = known.txn_id
            held = tx.reservation(txn_id)
            if held is not None and _live(tx, now, held):
                return _take_over(tx, now, held, server_id, epoch)
            if held is not None:
                _expire(tx, now, held)
            _refuse_superseded(tx, now, txn_id)
            request = None  # remembered already
        else:
            request = replace(
                request, txn_id=txn_id, created_at=now, expires_at=now + IDEMPOTENCY_TTL_S
            )
    if tx.reservation(txn_id) is not None:
        raise Conflict(f"transaction {txn_id} already exists; use a new transaction id")
    candidates = _candidates(tx, agent, location.policy)
    if not candidates:
        raise NotLinked(agent_id, location.location_id, location.policy)
    # Counted over the units the agent may use, which it reads anyway: a count over every
    # reservation would make all concurrent reservations conflict in a shared store.
    mine = {}  # device_id -> the agent's own live reservation of it
    for device_id, _ in candidates:
        held = _reserved(tx, now, device_id)
        if held is not None and held.agent_id == agent_id:
            mine[device_id] = held
    # Superseding, a unit the agent's unfinished transaction holds is taken first: the new
    # QR replaces that one, and the agent holds no more units than before.
    replaceable = supersede and any(_online(tx, now, d) for d in mine)
    if len(mine) >= limits.reservations_per_agent and not replaceable:
        raise ReservationLimit(agent_id, limits.reservations_per_agent)
    if replaceable:
        candidates = sorted(candidates, key=lambda c: c[0] not in mine)

    queue = _live_queue(tx, now, location.location_id)
    position = next((i for i, t in enumerate(queue) if t.ticket_id == ticket_id), None)
    ahead = queue if position is None else queue[:position]
    # Requests ahead in line get first pick: of the pool if anyone waits, of our
    # own units if we ourselves have an earlier request waiting. A unit our own
    # transaction holds is ours already.
    own_ahead = any(t.agent_id == agent_id for t in ahead)
    online, last_seen = 0, None
    for device_id, owned in candidates:
        lease = tx.lease(device_id)
        if lease is None or not lease.live(now):
            seen = tx.device(device_id).last_seen
            if seen is not None and (last_seen is None or seen > last_seen):
                last_seen = seen
            continue
        online += 1
        held = tx.reservation_of(device_id)
        if replaceable and device_id in mine:
            _supersede(tx, now, mine[device_id], txn_id)
        elif held is not None and _live(tx, now, held):
            continue
        elif own_ahead or (ahead and not owned):
            continue
        elif held is not None:
            _expire(tx, now, held)
        if position is not None:
            tx.delete_ticket(ticket_id)
        reservation = Reservation(txn_id, device_id, agent_id, server_id, epoch, now, now + ttl_s)
        tx.put_reservation(reservation)
        if request is not None:
            _remember(tx, request, limits)
        if not owned:
            tx.delete_pairing_code(device_id)  # the QR replaces the pairing screen
        _audit_txn(tx, now, Actor.agent(agent_id), "reserve", reservation, f"for {ttl_s:g}s")
        return reservation

    if position is not None:
        return queue[position]
    if online:
        refusal = AllBusy(agent_id, busy=online, waiting=len(ahead))
    else:
        refusal = DeviceOffline(agent_id, [d for d, _ in candidates], since=last_seen)
    if ticket_id is None or not wait_s:
        raise refusal
    if sum(t.agent_id == agent_id for t in queue) >= limits.queue_places_per_agent:
        raise QueuePlaceLimit(agent_id, limits.queue_places_per_agent)
    if len(queue) >= limits.queue:
        raise QueueFull(location.location_id, limits.queue)
    ticket = Ticket(ticket_id, location.location_id, agent_id, now + wait_s)
    tx.push_ticket(ticket)
    return ticket


def _take_over(tx, now, held, server_id, epoch):
    """A retry carries on its transaction here: the reservation moves to this instance."""
    tx.delete_reservation(held.txn_id)
    reservation = replace(held, server_id=server_id, epoch=epoch)
    tx.put_reservation(reservation)
    _audit_txn(
        tx, now, Actor.agent(held.agent_id), "retry", held, f"from {held.server_id} to {server_id}"
    )
    return reservation


def _refuse_superseded(tx, now, txn_id):
    superseded = tx.superseded(txn_id)
    if superseded is not None and superseded.expires_at > now:
        raise Superseded(txn_id, superseded.by_txn_id)


def waiting(tx, now, location_id):
    """The live tickets of the location's queue, first in line first."""
    get_location(tx, location_id)
    return [t for t in tx.tickets(location_id) if t.expires_at > now]


def leave_queue(tx, ticket_id):
    tx.delete_ticket(ticket_id)


def finish(tx, now, actor, txn_id, outcome, request=None, response=None, limits=None):
    """Complete or cancel a transaction, releasing its unit; only its holder may.

    With `request` (an `IdempotentRequest`), the answer `response` is remembered with the
    change, so a retry with its key gets the stored `IdempotentRequest` back and changes
    nothing."""
    check_id("transaction", txn_id)
    if request is not None:
        known = _known_request(tx, now, request)
        if known is not None:
            return known
    reservation = tx.reservation(txn_id)
    if reservation is None or not _sees(tx, actor, tx.agent(reservation.agent_id).location_id):
        _refuse_superseded(tx, now, txn_id)
        raise NotFound(
            f"transaction {txn_id} is unknown or already finished; start a new transaction"
        )
    if not reservation.live(now):
        raise NotFound(
            f"transaction {txn_id} expired and released its unit; start a new transaction"
        )
    if _holder_gone(tx, now, reservation):
        raise NotFound(
            f"transaction {txn_id} ended with server {reservation.server_id}, which held it "
            "and stopped; start a new transaction"
        )
    _authorise(actor, reservation.agent_id, f"{outcome} transaction {txn_id}")
    tx.delete_reservation(txn_id)
    _audit_txn(tx, now, actor, outcome, reservation)
    if request is not None:
        answered = replace(
            request,
            created_at=now,
            expires_at=now + IDEMPOTENCY_TTL_S,
            status=200,
            response=response,
        )
        _remember(tx, answered, limits)
    return reservation


def sweep(tx, now):
    """Drop what ended: reservations past their ttl or whose instance is gone (audited),
    queue tickets, pairing codes, idempotency keys and superseded transactions."""
    ended = [r for r in tx.reservations() if not _live(tx, now, r)]
    for reservation in ended:
        _expire(tx, now, reservation)
    tickets = [t for t in tx.tickets() if t.expires_at <= now]
    for ticket in tickets:
        tx.delete_ticket(ticket.ticket_id)
    return {
        "reservations": len(ended),
        "tickets": len(tickets),
        "pairing_codes": tx.delete_expired_pairing_codes(now),
        "idempotency_keys": tx.delete_expired_idempotent_requests(now),
        "superseded": tx.delete_expired_superseded(now),
    }


# Updates: where each unit's update stands, releases, rollouts


def _check_update(update):
    """An update status as `Device.update` keeps it, less the time -> (version, state, reason,
    rollout_id)."""
    if not isinstance(update, dict) or set(update) - {"version", "state", "reason", "rollout_id"}:
        raise InvalidInput(
            "an update status must be a dict of version, state, reason and rollout_id"
        )
    state, reason, rollout_id = update.get("state"), update.get("reason"), update.get("rollout_id")
    if state not in UPDATE_STATES:
        raise InvalidInput(
            f"update state {state!r} is not known; use one of {', '.join(UPDATE_STATES)}"
        )
    if reason is not None and (not isinstance(reason, str) or len(reason) > _MAX_REASON):
        raise InvalidInput(f"an update's reason must be a string of at most {_MAX_REASON}")
    if rollout_id is not None:
        check_id("rollout", rollout_id)
    return _check_version(update.get("version")), state, reason, rollout_id


def record_update(tx, now, device_id, update, epoch=None):
    """Record where the unit's update stands (`Device.update`), from the session with `epoch`
    when given -> False if a newer session holds the unit. A status that leaves out its rollout
    keeps the one recorded for the same version (the unit itself knows no rollout). Audited as
    `update` when the version or the state changes."""
    version, state, reason, rollout_id = _check_update(update)
    device = _device(tx, device_id)
    lease = tx.lease(device_id)
    if epoch is not None and _holds(tx, device_id, epoch) is None:
        return False
    known = device.update or {}
    if rollout_id is None and known.get("version") == version:
        rollout_id = known.get("rollout_id")
    recorded = {
        "version": version,
        "state": state,
        "reason": reason,
        "rollout_id": rollout_id,
        "at": now,
    }
    tx.put_device(replace(device, update=recorded))
    if (known.get("version"), known.get("state")) != (version, state):
        actor = REGISTRY if lease is None else Actor.server(lease.server_id)
        detail = f"{version} {state}" + (f" (rollout {rollout_id})" if rollout_id else "")
        _audit_unit(tx, now, actor, "update", device_id, detail + (f": {reason}" if reason else ""))
    return True


def _published(tx, version):
    return next((r for r in tx.releases() if r.version == version), None)


def publish_release(tx, now, actor, version, bundle):
    """Keep a release's bundle (bytes of UTF-8 JSON, checked by the caller against the release
    keys) -> PublishedRelease. The same bundle again is the same release; other bytes under a
    published version are ReleaseExists."""
    if not actor.is_admin:
        raise Forbidden("only an admin publishes releases")
    _check_version(version)
    if not isinstance(bundle, bytes) or not bundle:
        raise InvalidInput("a release bundle must be the bytes of a .qfw file")
    try:
        bundle.decode()
    except UnicodeDecodeError:
        raise InvalidInput(
            "a release bundle must be UTF-8 JSON, as qrfleet release builds"
        ) from None
    known = tx.release(version)
    if known is not None:
        if known != bundle:
            raise ReleaseExists(version)
        return _published(tx, version)
    release = PublishedRelease(version, len(bundle), hashlib.sha256(bundle).hexdigest(), now)
    tx.put_release(release, bundle)
    _audit(tx, now, actor, "publish", detail=f"{version} ({len(bundle)} bytes)")
    return release


def _check_steps(steps):
    """Cumulative percentages of the units after the canary wave, e.g. [25, 50, 100]."""
    if (
        not isinstance(steps, (list, tuple))
        or not 0 < len(steps) <= MAX_STEPS
        or any(isinstance(p, bool) or not isinstance(p, int) for p in steps)
        or any(not 0 < p <= 100 for p in steps)
        or list(steps) != sorted(set(steps))
        or steps[-1] != 100
    ):
        raise InvalidInput(
            f"steps must be 1 to {MAX_STEPS} growing percentages of the units, ending at 100, "
            f"e.g. [10, 50, 100]; got {steps!r}"
        )
    return tuple(steps)


def plan_waves(devices, steps):
    """The waves of a rollout over `devices`: first the canary wave, the first unit (by id) of
    each location; then, for each step, the units up to that percentage of the others."""
    ids = sorted(devices, key=lambda d: d.device_id)
    canary, locations = [], set()
    for device in ids:
        if device.location_id not in locations:
            locations.add(device.location_id)
            canary.append(device.device_id)
    rest = [d.device_id for d in ids if d.device_id not in canary]
    waves, done = [tuple(canary)], 0
    for percent in steps:
        upto = math.ceil(len(rest) * percent / 100)
        if upto > done:
            waves.append(tuple(rest[done:upto]))
            done = upto
    return tuple(waves)


def _rollout_detail(rollout):
    detail = (
        f"{rollout.rollout_id}: {rollout.version} {rollout.state}, wave {rollout.wave + 1} "
        f"of {len(rollout.waves)}"
    )
    return detail + (f": {rollout.reason}" if rollout.reason else "")


def start_rollout(tx, now, actor, rollout_id, version, location_id, steps, abort_after_failures):
    """Start taking release `version` to the units at `location_id` (None: every unit) ->
    Rollout. Refused while another rollout is running or paused (RolloutActive)."""
    if not actor.is_admin:
        raise Forbidden("only an admin starts rollouts")
    check_id("rollout", rollout_id)
    _check_version(version)
    steps = _check_steps(steps)
    if (
        isinstance(abort_after_failures, bool)
        or not isinstance(abort_after_failures, int)
        or not 0 < abort_after_failures <= MAX_FAILURES
    ):
        raise InvalidInput(
            f"abort_after_failures must be a whole number from 1 to {MAX_FAILURES}: the failed "
            "units in a wave that pause the rollout"
        )
    if _published(tx, version) is None:
        raise NotFound(f"release {version} is not published; publish its bundle first")
    if location_id is not None:
        get_location(tx, location_id)
    active = next((r for r in tx.rollouts() if r.active), None)
    if active is not None:
        raise RolloutActive(active.rollout_id, active.version, active.state)
    if tx.rollout(rollout_id) is not None:
        raise Conflict(f"rollout {rollout_id} already exists; use another id")
    devices = tx.devices(location_id)
    if not devices:
        where = "anywhere" if location_id is None else f"at location {location_id}"
        raise NotFound(f"no unit is registered {where}; there is nothing to update")
    rollout = Rollout(
        rollout_id,
        version,
        location_id,
        steps,
        abort_after_failures,
        plan_waves(devices, steps),
        created_at=now,
        updated_at=now,
    )
    tx.put_rollout(rollout)
    _audit(tx, now, actor, "start_rollout", detail=_rollout_detail(rollout))
    return rollout


def get_rollout(tx, rollout_id):
    rollout = tx.rollout(check_id("rollout", rollout_id))
    if rollout is None:
        raise NotFound(f"rollout {rollout_id} does not exist")
    return rollout


def list_rollouts(tx):
    """Every rollout, the newest first."""
    return sorted(tx.rollouts(), key=lambda r: (r.created_at, r.rollout_id), reverse=True)


# The audit action of a rollout entering each state.
_ROLLOUT_ACTIONS = {
    RUNNING: "resume_rollout",
    PAUSED: "pause_rollout",
    ABORTED: "abort_rollout",
    COMPLETED: "complete_rollout",
}


def _put_rollout(tx, now, actor, before, after):
    after = replace(after, updated_at=now)
    tx.put_rollout(after)
    action = _ROLLOUT_ACTIONS[after.state] if after.state != before.state else "advance_rollout"
    _audit(tx, now, actor, action, detail=_rollout_detail(after))
    return after


def set_rollout(tx, now, actor, rollout_id, expected, state=None, wave=None, reason=None):
    """Move the rollout on, as decided from it being in (state, wave) `expected` -> the new
    Rollout, or None (changing nothing) if it is no longer there: another instance, or the
    admin, moved it first."""
    rollout = get_rollout(tx, rollout_id)
    if (rollout.state, rollout.wave) != tuple(expected):
        return None
    if state is not None and state not in _ROLLOUT_ACTIONS:
        raise InvalidInput(f"rollout state {state!r} is not known")
    if wave is not None and not 0 <= wave < len(rollout.waves):
        raise InvalidInput(f"rollout {rollout_id} has no wave {wave}")
    after = replace(
        rollout,
        state=rollout.state if state is None else state,
        wave=rollout.wave if wave is None else wave,
        reason=reason,
    )
    return _put_rollout(tx, now, actor, rollout, after)


# What an admin may do to a rollout: new state -> (the states it may come from, the verb).
_ADMIN_CHANGES = {
    PAUSED: ((RUNNING,), "paused"),
    RUNNING: ((PAUSED,), "resumed"),
    ABORTED: (ACTIVE, "aborted"),
}


def change_rollout(tx, now, actor, rollout_id, state, reason=None):
    """Pause, resume or abort a rollout (admin). Resuming goes on past the units that failed
    or rolled back so far: they no longer count against `abort_after_failures`."""
    if not actor.is_admin:
        raise Forbidden("only an admin pauses, resumes or aborts rollouts")
    rollout = get_rollout(tx, rollout_id)
    allowed, verb = _ADMIN_CHANGES[state]
    if rollout.state not in allowed:
        raise Conflict(
            f"rollout {rollout_id} is {rollout.state}; only a {' or '.join(allowed)} rollout "
            f"can be {verb}",
            rollout_id=rollout_id,
            state=rollout.state,
        )
    accepted = rollout.accepted
    if state == RUNNING:
        reached = [d for wave in rollout.waves[: rollout.wave + 1] for d in wave]
        failing = [
            d
            for d in reached
            if d not in accepted and rollout.unit_state(tx.device(d)) in (FAILED, ROLLED_BACK)
        ]
        accepted = accepted + tuple(failing)
    after = replace(rollout, state=state, reason=reason, accepted=accepted)
    return _put_rollout(tx, now, actor, rollout, after)


# Read models


def device_status(tx, now, device):
    lease = tx.lease(device.device_id)
    online = lease is not None and lease.live(now)
    reservation = _reserved(tx, now, device.device_id)
    return DeviceStatus(
        device=device,
        status="online" if online else "offline",
        agent_id=tx.owner(device.device_id),
        server_id=lease.server_id if online else None,
        epoch=lease.epoch if lease is not None else None,
        txn_id=None if reservation is None else reservation.txn_id,
    )


def get_device(tx, now, device_id, actor):
    return device_status(tx, now, _device(tx, device_id, actor))


def list_devices(tx, now, location_id):
    if location_id is not None:
        get_location(tx, location_id)
    return [device_status(tx, now, d) for d in tx.devices(location_id)]


def device_secret(tx, device_id):
    _device(tx, device_id)
    return tx.device_secret(device_id)


def get_reservation(tx, now, txn_id, actor):
    reservation = tx.reservation(check_id("transaction", txn_id))
    if reservation is None:
        _refuse_superseded(tx, now, txn_id)
    if (
        reservation is None
        or not _live(tx, now, reservation)
        or not _sees(tx, actor, tx.agent(reservation.agent_id).location_id)
    ):
        raise NotFound(f"transaction {txn_id} is unknown, finished or expired")
    return reservation


def occupancy(tx, now):
    """{location_id: (live reservations, live places in its wait queue)} of every location, for
    the server's metrics: a read of the records in use, not of every unit."""
    counts = {location.location_id: (0, 0) for location in tx.locations()}
    for r in tx.reservations():
        if _live(tx, now, r):
            agent = tx.agent(r.agent_id)
            location = agent.location_id if agent else None
            held, waiting = counts.get(location, (0, 0))
            counts[location] = (held + 1, waiting)
    for t in tx.tickets():
        if t.expires_at > now:
            held, waiting = counts.get(t.location_id, (0, 0))
            counts[t.location_id] = (held, waiting + 1)
    return counts
