"""Every way a registry operation can refuse, as one exception tree.

    RegistryError                   code                HTTP status
    ├── InvalidInput                invalid             400
    ├── Unauthorized                unauthorized        401
    ├── Forbidden                   forbidden           403
    │   └── PairingRejected         pairing_rejected    403
    ├── NotFound                    not_found           404
    ├── Conflict                    conflict            409
    │   ├── Superseded              superseded          409
    │   ├── IdempotencyMismatch     idempotency_key_reused 409
    │   ├── ReleaseExists           release_exists      409
    │   └── RolloutActive           rollout_active      409
    ├── TooMany                     too_many            429 (a cap per agent or unit; retry later)
    │   ├── ReservationLimit        reservation_limit   429
    │   ├── QueuePlaceLimit         queue_place_limit   429
    │   └── PairingThrottled        pairing_throttled   429
    ├── Unavailable                 unavailable         503 (no unit can take the agent's QR now)
    │   ├── NotLinked               not_linked          409 (the agent must link a unit first)
    │   ├── DeviceOffline           device_offline      503
    │   ├── AllBusy                 all_busy            503
    │   └── QueueFull               queue_full          503
    └── StoreUnavailable            store_unavailable   503

Code branches on the class; HTTP clients get `code`, `message` and `status`. `message` is a
sentence an integrator can act on; the facts it was built from are attributes and are also
collected in `facts` (JSON values, times as ISO 8601) for JSON bodies. A refusal is raised
inside the store's transaction, which is then rolled back: a refused operation changes nothing.
"""

from datetime import datetime, timezone


def format_time(t):
    """Seconds since the epoch as ISO 8601 UTC, the way messages and JSON show time."""
    if t is None:
        return None
    return (
        datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


class RegistryError(Exception):
    code = "registry_error"
    status = 500

    def __init__(self, message, **facts):
        super().__init__(message)
        self.message = message
        self.facts = facts
        for name, value in facts.items():
            setattr(self, name, value)


class InvalidInput(RegistryError):
    code = "invalid"
    status = 400


class Unauthorized(RegistryError):
    code = "unauthorized"
    status = 401


class Forbidden(RegistryError):
    code = "forbidden"
    status = 403


class PairingRejected(Forbidden):
    code = "pairing_rejected"

    def __init__(self, device_id):
        super().__init__(
            f"the pairing code for unit {device_id} is wrong or expired; "
            "scan the pairing QR the unit shows now",
            device_id=device_id,
        )


class NotFound(RegistryError):
    code = "not_found"
    status = 404


class Conflict(RegistryError):
    code = "conflict"
    status = 409


class Superseded(Conflict):
    code = "superseded"

    def __init__(self, txn_id, by_txn_id):
        super().__init__(
            f"transaction {txn_id} was replaced by the agent's next QR, transaction "
            f"{by_txn_id}; complete or cancel that one",
            txn_id=txn_id,
            by_txn_id=by_txn_id,
        )


class IdempotencyMismatch(Conflict):
    code = "idempotency_key_reused"

    def __init__(self, key):
        super().__init__(
            f"Idempotency-Key {key!r} was used for another request; a retry must repeat its "
            "request exactly, and a new request needs a new key",
            key=key,
        )


class ReleaseExists(Conflict):
    code = "release_exists"

    def __init__(self, version):
        super().__init__(
            f"release {version} is already published with other contents; a release is never "
            "replaced: build the change as a new version",
            version=version,
        )


class RolloutActive(Conflict):
    code = "rollout_active"

    def __init__(self, rollout_id, version, state):
        super().__init__(
            f"rollout {rollout_id} of release {version} is {state}; one rollout runs at a "
            "time: let it complete, or abort it first",
            rollout_id=rollout_id,
            version=version,
            state=state,
        )


class TooMany(RegistryError):
    """A cap that keeps one agent (or one unit's guessers) from crowding out the others."""

    code = "too_many"
    status = 429


class ReservationLimit(TooMany):
    code = "reservation_limit"

    def __init__(self, agent_id, limit):
        super().__init__(
            f"agent {agent_id} already holds {limit} unfinished transaction(s), its limit; "
            "complete or cancel one first",
            agent_id=agent_id,
            limit=limit,
        )


class QueuePlaceLimit(TooMany):
    code = "queue_place_limit"

    def __init__(self, agent_id, limit):
        super().__init__(
            f"agent {agent_id} already has {limit} request(s) waiting for a unit, its limit; "
            "retry once one of them is served",
            agent_id=agent_id,
            limit=limit,
        )


class PairingThrottled(TooMany):
    code = "pairing_throttled"

    def __init__(self, about, retry_after_s):
        """`about`: whose guesses, e.g. "from agent till-1" or "for unit qrf-0a1b2c"."""
        super().__init__(
            f"too many wrong pairing codes {about}; try again in {retry_after_s:.0f} s, "
            "scanning the pairing QR the unit shows",
            retry_after_s=round(retry_after_s),
        )


class Unavailable(RegistryError):
    """No unit can show this agent's QR right now; the subclass says why."""

    code = "unavailable"
    status = 503


class NotLinked(Unavailable):
    code = "not_linked"
    status = 409

    def __init__(self, agent_id, location_id, policy):
        if policy == "strict":
            advice = (
                f"location {location_id} is strict, so only the agent's own units show its QRs; "
                "link one by scanning its pairing QR"
            )
        else:
            advice = (
                f"location {location_id} has no unlinked pool unit either; "
                "link a unit to the agent or register one at the location"
            )
        super().__init__(
            f"agent {agent_id} has no linked unit and {advice}",
            agent_id=agent_id,
            location_id=location_id,
            policy=policy,
        )


class DeviceOffline(Unavailable):
    code = "device_offline"

    def __init__(self, agent_id, device_ids, since):
        """`since` is the last time any of `device_ids` was seen (None: never connected)."""
        seen = format_time(since)
        if len(device_ids) == 1:
            message = (
                f"unit {device_ids[0]}, the one unit agent {agent_id} can use, is offline "
                + ("and has never connected" if since is None else f"since {seen}")
                + "; check the unit's power and network"
            )
        else:
            message = (
                f"all {len(device_ids)} units agent {agent_id} can use are offline"
                + (
                    " and none has ever connected"
                    if since is None
                    else f", the last seen at {seen}"
                )
                + "; check the units' power and network"
            )
        super().__init__(
            message,
            agent_id=agent_id,
            device_ids=list(device_ids),
            since=seen,
        )
        self.since = since  # code compares times; the facts (JSON) spell it as ISO 8601


class AllBusy(Unavailable):
    code = "all_busy"

    def __init__(self, agent_id, busy, waiting):
        units = "the one unit it can use is" if busy == 1 else f"all {busy} units it can use are"
        super().__init__(
            f"agent {agent_id} cannot get a unit: {units} busy with other transactions "
            f"and {waiting} request(s) are waiting ahead; retry, or pass wait_s to wait in line",
            agent_id=agent_id,
            busy=busy,
            waiting=waiting,
        )


class QueueFull(Unavailable):
    code = "queue_full"

    def __init__(self, location_id, limit):
        super().__init__(
            f"the wait queue of location {location_id} is full ({limit} requests); "
            "retry in a moment without wait_s, or later",
            location_id=location_id,
            limit=limit,
        )


class StoreUnavailable(RegistryError):
    code = "store_unavailable"
    status = 503
