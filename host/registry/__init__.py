"""The registry: which units, agents and locations exist, who owns which unit,
which server holds its connection, and which transaction has it reserved.

    registry = open_registry("sqlite:///qrfleet.db")
    epoch = await registry.acquire_device("qrf-0a1b2c", "server-1", ttl_s=15)
    await registry.join("server-1", ttl_s=3)   # this process, as an instance
    reservation = await registry.reserve_for_agent("till-1", "txn-42", ttl_s=60)
    rollout = await registry.start_rollout("0.2.0", steps=[50, 100])  # a published release

Layers, each in its own module:

- `registry`: the async interface (`Registry`), one per process and event loop;
- `rules`: the rules, written once, as functions over a store transaction;
- `store`: what a store supplies (atomic transactions over records);
- `sqlite`: the embedded store, the default;
- `records`, `errors`: the values passed around and the refusals.

Stores are picked by URL scheme from `STORES` ("name -> module:Class"); a
store's module is imported only when a URL asks for it.
"""

import importlib
import time

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
    PairingThrottled,
    QueueFull,
    QueuePlaceLimit,
    RegistryError,
    ReleaseExists,
    ReservationLimit,
    RolloutActive,
    StoreUnavailable,
    Superseded,
    TooMany,
    Unauthorized,
    Unavailable,
)
from host.registry.records import (
    ADMIN,
    HYBRID,
    OPERATOR,
    POLICIES,
    POOL,
    REGISTRY,
    STRICT,
    TERMINAL,
    UPDATE_STATES,
    Actor,
    Agent,
    AuditEntry,
    Device,
    DeviceStatus,
    IdempotentRequest,
    Instance,
    Lease,
    Limits,
    Location,
    PairingCode,
    PublishedRelease,
    Reservation,
    Rollout,
    Ticket,
    parse_pairing_uri,
)
from host.registry.registry import Registry

STORES = {
    "sqlite": "host.registry.sqlite:SqliteStore",
    "redis": "host.registry.redis:RedisStore",
    "redis+sentinel": "host.registry.redis:RedisStore",
}


def store_class(url):
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in STORES:
        raise InvalidInput(
            f"{url!r} names no known store; use one of: "
            + ", ".join(f"{name}://..." for name in STORES)
        )
    module, name = STORES[scheme].split(":")
    return getattr(importlib.import_module(module), name)


def open_registry(url, clock=time.time, **options):
    """Open the store at `url` (creating its schema) and wrap it in a `Registry`.

    Blocks while the store connects and migrates: call it at startup. `options`
    go to `Registry` (limits, poll_s).
    """
    return Registry(store_class(url).open(url), clock=clock, **options)


__all__ = [
    "ADMIN",
    "HYBRID",
    "OPERATOR",
    "POLICIES",
    "POOL",
    "REGISTRY",
    "STORES",
    "STRICT",
    "TERMINAL",
    "UPDATE_STATES",
    "Actor",
    "Agent",
    "AllBusy",
    "AuditEntry",
    "Conflict",
    "Device",
    "DeviceOffline",
    "DeviceStatus",
    "Forbidden",
    "IdempotencyMismatch",
    "IdempotentRequest",
    "Instance",
    "InvalidInput",
    "Lease",
    "Limits",
    "Location",
    "NotFound",
    "NotLinked",
    "PairingCode",
    "PairingRejected",
    "PairingThrottled",
    "PublishedRelease",
    "QueueFull",
    "QueuePlaceLimit",
    "Registry",
    "RegistryError",
    "ReleaseExists",
    "Reservation",
    "ReservationLimit",
    "Rollout",
    "RolloutActive",
    "StoreUnavailable",
    "Superseded",
    "Ticket",
    "TooMany",
    "Unauthorized",
    "Unavailable",
    "open_registry",
    "parse_pairing_uri",
]
