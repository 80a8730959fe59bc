"""The registry's records: plain frozen values that rules read and stores persist.

Times are seconds since the epoch from the registry's clock. A device's secret
is not a field of `Device` on purpose: only `Registry.device_secret()` hands it
out, so no listing can leak it.
"""

import json
from dataclasses import asdict, dataclass, fields
from urllib.parse import parse_qs, urlsplit

from firmware.proto.messages import pairing_uri
from host.registry.errors import InvalidInput

STRICT = "strict"
POOL = "pool"
HYBRID = "hybrid"
POLICIES = (STRICT, POOL, HYBRID)


@dataclass(frozen=True)
class Actor:
    """Who performs an operation: `ADMIN`, `OPERATOR` (sees what the admin sees, changes
    nothing), `Actor.agent(id)`, `Actor.server(id)` or `REGISTRY`."""

    kind: str
    id: str = ""

    @classmethod
    def agent(cls, agent_id):
        return cls("agent", agent_id)

    @classmethod
    def server(cls, server_id):
        return cls("server", server_id)

    @property
    def is_admin(self):
        return self.kind == "admin"

    def __str__(self):
        return f"{self.kind}:{self.id}" if self.id else self.kind


ADMIN = Actor("admin")
OPERATOR = Actor("operator")
# The registry itself, e.g. when it expires a reservation nobody released.
REGISTRY = Actor("registry")


@dataclass(frozen=True)
class Location:
    location_id: str
    name: str
    policy: str = HYBRID


@dataclass(frozen=True)
class Agent:
    agent_id: str
    name: str
    location_id: str
    token_hash: str


@dataclass(frozen=True)
class Device:
    device_id: str
    name: str | None = None
    location_id: str | None = None
    firmware: str | None = None
    registered_at: float | None = None
    last_seen: float | None = None
    last_screen: dict | None = None
    # What the unit reports about its display, e.g. {"width": 128, "height": 64}.
    panel: dict | None = None
    # The last screen the unit drew and verified, as the server can draw it again: the screen
    # kind and what it showed (payload, version and mask of a QR; a result; a status).
    shown: dict | None = None
    # Why the unit last started ("power-on", "watchdog", ...), as it said when it connected.
    reset_cause: str | None = None
    # Where its firmware update stands: {"version", "state" (UPDATE_STATES), "reason",
    # "rollout_id", "at"}, or None if it never had one.
    update: dict | None = None
    # How its last session reached the server: "bridge@<PC host name>" for a unit on a USB
    # cable, as that bridge said of itself (informational: the unit authenticates end to end);
    # None for one on Wi-Fi.
    via: str | None = None


# A unit's update, as the server pushes it (downloading, installing) and as the unit says in its
# hello once it restarted (trial: running the version until it is committed; rolled_back: back
# on the previous version, `reason` says why). A unit in a TERMINAL state needs nothing more.
DOWNLOADING = "downloading"
INSTALLING = "installing"
TRIAL = "trial"
COMMITTED = "committed"
ROLLED_BACK = "rolled_back"
FAILED = "failed"
UPDATE_STATES = (DOWNLOADING, INSTALLING, TRIAL, COMMITTED, ROLLED_BACK, FAILED)
TERMINAL = (COMMITTED, ROLLED_BACK, FAILED)
PENDING = "pending"  # in a rollout, not started on this version yet


@dataclass(frozen=True)
class PublishedRelease:
    """A release bundle the registry keeps (its bytes come from `Registry.release`)."""

    version: str
    size: int
    sha256: str
    published_at: float


RUNNING = "running"
PAUSED = "paused"
ABORTED = "aborted"
COMPLETED = "completed"
ROLLOUT_STATES = (RUNNING, PAUSED, ABORTED, COMPLETED)
ACTIVE = (RUNNING, PAUSED)  # at most one rollout is in one of these


@dataclass(frozen=True)
class Rollout:
    """A release going out to units wave by wave. `waves` (tuples of device ids, fixed at the
    start) begin with the canary wave; units of waves up to `wave` get the release. `accepted`:
    failed units the admin resumed past, which no longer count against `abort_after_failures`."""

    rollout_id: str
    version: str
    location_id: str | None
    steps: tuple
    abort_after_failures: int
    waves: tuple
    wave: int = 0
    state: str = RUNNING
    reason: str | None = None
    accepted: tuple = ()
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def active(self):
        return self.state in ACTIVE

    @property
    def units(self):
        return [d for wave in self.waves for d in wave]

    def unit_state(self, device):
        """Where `device` (a Device) stands in this rollout: an UPDATE_STATES value, or PENDING.
        A failure or rollback of this version in an earlier rollout is tried again."""
        update = device.update or {}
        if update.get("version") == self.version:
            state = update.get("state")
            if state in (FAILED, ROLLED_BACK) and update.get("rollout_id") != self.rollout_id:
                return PENDING
            return state
        return COMMITTED if device.firmware == self.version else PENDING

    def to_json(self):
        """The record as one JSON text, as both stores keep it."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text):
        doc = json.loads(text)
        doc = {f.name: doc[f.name] for f in fields(cls) if f.name in doc}
        doc["steps"] = tuple(doc["steps"])
        doc["waves"] = tuple(tuple(wave) for wave in doc["waves"])
        doc["accepted"] = tuple(doc.get("accepted", ()))
        return cls(**doc)


@dataclass(frozen=True)
class Lease:
    """A server's hold on a unit's connection; `epoch` grows with every new session."""

    device_id: str
    server_id: str
    epoch: int
    expires_at: float

    def live(self, now):
        return self.expires_at > now


@dataclass(frozen=True)
class Instance:
    """A server instance's presence: `epoch` grows with every start of `server_id`; whatever
    the instance was granted ends when this expires or a newer start replaces it."""

    server_id: str
    epoch: int
    expires_at: float
    units: int = 0  # sessions it holds, as last renewed

    def live(self, now):
        return self.expires_at > now


@dataclass(frozen=True)
class PairingCode:
    device_id: str
    code: str
    expires_at: float

    @property
    def uri(self):
        """What the unit's pairing QR encodes."""
        return pairing_uri(self.device_id, self.code)


def parse_pairing_uri(uri):
    """`qrfleet://pair?device=D&code=C` -> (D, C), as scanned from a unit's screen."""
    parts = urlsplit(uri)
    query = parse_qs(parts.query)
    device, code = query.get("device", []), query.get("code", [])
    if parts.scheme != "qrfleet" or parts.netloc != "pair" or len(device) != 1 or len(code) != 1:
        raise InvalidInput(
            f"{uri!r} is not a pairing QR; expected qrfleet://pair?device=<id>&code=<code> "
            "as shown by an unlinked unit"
        )
    return device[0], code[0]


@dataclass(frozen=True)
class Reservation:
    """A unit held for one transaction; `server_id`/`epoch` name the instance (and its start)
    that holds it: it ends with that instance, or at `expires_at`, whichever comes first."""

    txn_id: str
    device_id: str
    agent_id: str
    server_id: str
    epoch: int
    created_at: float
    expires_at: float

    def live(self, now):
        return self.expires_at > now


@dataclass(frozen=True)
class Limits:
    """What requests may hold at once: places in each location's wait queue, and per agent,
    unfinished transactions and queue places, so one cashier cannot hold every pool unit
    (for up to an hour each) nor fill the queue; per caller, the idempotency keys remembered
    (past it, the caller's oldest key is forgotten)."""

    queue: int = 64
    reservations_per_agent: int = 2
    queue_places_per_agent: int = 2
    idempotency_keys_per_caller: int = 1000


@dataclass(frozen=True)
class IdempotentRequest:
    """A request made with an `Idempotency-Key`: what it asked (`fingerprint`), the
    transaction it is about, and once it succeeded, its answer (`status`, `response`).
    `caller` is who sent it ("agent:till-1", "admin"): each caller has keys of its own."""

    caller: str
    key: str
    fingerprint: str
    txn_id: str
    created_at: float = 0.0  # both set by the rule that stores it
    expires_at: float = 0.0
    status: int | None = None
    response: dict | None = None

    @property
    def answered(self):
        return self.status is not None


@dataclass(frozen=True)
class SupersededTxn:
    """A transaction replaced by its agent's next one (`by_txn_id`), remembered until it
    would have expired, so that completing or cancelling it says what happened."""

    txn_id: str
    by_txn_id: str
    expires_at: float


@dataclass(frozen=True)
class Ticket:
    """A request waiting in its location's FIFO queue for a free unit."""

    ticket_id: str
    location_id: str
    agent_id: str
    expires_at: float


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    action: str
    device_id: str | None = None
    agent_id: str | None = None
    txn_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class DeviceStatus:
    """What listings show about a unit: the device, its owner, its session and its reservation."""

    device: Device
    status: str  # "online" while a server holds a live lease on it, else "offline"
    agent_id: str | None
    server_id: str | None
    epoch: int | None
    txn_id: str | None

    @property
    def device_id(self):
        return self.device.device_id

    def as_dict(self):
        """One flat mapping, as listings show a unit (times in seconds since the epoch)."""
        return {**asdict(self.device), **{k: v for k, v in asdict(self).items() if k != "device"}}
