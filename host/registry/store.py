"""What a store supplies to the registry: atomic transactions over records, no rules.

The registry's rules (`host.registry.rules`) are plain functions of a
`Transaction`: they read records, decide, and write records. A `Store` runs such
a function atomically, as one transaction, off the event loop:

- `write(fn)` runs `fn(tx)` so that it sees and changes a consistent state and
  nobody else's write interleaves with it. If the store detects a conflict it
  may run `fn` again, so `fn` must have no effect outside `tx` (the registry
  draws ids, tokens and codes before it calls the store). An exception raised
  by `fn` rolls the transaction back and reaches the caller.
  Within `fn`, reads see the transaction's own earlier writes.
- `read(fn)` runs `fn(tx)` on a consistent snapshot; `fn` must not write.

A store never lets a transient "busy"/"locked" condition reach the caller: it
waits and retries with `Backoff`, and raises `StoreUnavailable` only when the
backend stays unreachable past its retry budget, counted from the call.

A store also enforces the invariants the rules rely on, whatever a rule might
do: a write that would give an owned device a second owner, reserve a device
or a transaction twice, move a device's or an instance's epoch back, give two
agents one token hash, replace a release's bundle or make a second rollout
active raises `IntegrityError` (a rule is wrong, not the input), and the
transaction changes nothing.

Stores are chosen by URL scheme in `host.registry.STORES`; each subclasses
`Store`, which owns the worker thread, and supplies a `Transaction` with the
methods below. A listing method returns records in a stable order (ids
ascending, queue in arrival order).
"""

import abc
import asyncio
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor


class IntegrityError(RuntimeError):
    """A write would break a store invariant (a second owner, a second reservation, an epoch
    going back, a token hash shared by two agents, a release replaced, a second active
    rollout): a rule is wrong, not the input."""


class Backoff:
    """Pauses between attempts: doubling from `first_s` up to `cap_s`, each jittered to
    0.5-1.5 times its length so that retrying processes drift apart, until `deadline`
    (a `time.monotonic()` value). With `retries` (a Counter, e.g. `Store.retries`), each
    pause is counted under `reason`."""

    def __init__(self, deadline, first_s, cap_s, retries=None, reason=None):
        self._deadline = deadline
        self._pause = first_s
        self._cap_s = cap_s
        self._retries = retries
        self._reason = reason

    def wait(self):
        """Sleep before the next attempt -> False, at once, if the pause would end past the
        deadline."""
        pause = self._pause * random.uniform(0.5, 1.5)
        if time.monotonic() + pause >= self._deadline:
            return False
        time.sleep(pause)
        self._pause = min(self._pause * 2, self._cap_s)
        if self._retries is not None:
            self._retries[self._reason] += 1
        return True


class Transaction(abc.ABC):
    # Locations
    @abc.abstractmethod
    def location(self, location_id): ...
    @abc.abstractmethod
    def locations(self): ...
    @abc.abstractmethod
    def put_location(self, location): ...

    # Agents
    @abc.abstractmethod
    def agent(self, agent_id): ...
    @abc.abstractmethod
    def agent_by_token_hash(self, token_hash): ...
    @abc.abstractmethod
    def agents(self, location_id=None): ...
    @abc.abstractmethod
    def put_agent(self, agent): ...

    # Devices; `secret=None` keeps the stored secret
    @abc.abstractmethod
    def device(self, device_id): ...
    @abc.abstractmethod
    def devices(self, location_id=None): ...
    @abc.abstractmethod
    def device_secret(self, device_id): ...
    @abc.abstractmethod
    def put_device(self, device, secret=None): ...

    # Links: at most one owning agent per device
    @abc.abstractmethod
    def owner(self, device_id): ...
    @abc.abstractmethod
    def linked_devices(self, agent_id): ...
    @abc.abstractmethod
    def pool_devices(self, location_id):
        """Ids of the devices at the location that are linked to no agent."""

    @abc.abstractmethod
    def put_link(self, device_id, agent_id, at): ...
    @abc.abstractmethod
    def delete_link(self, device_id): ...

    # Pairing codes: at most one per device
    @abc.abstractmethod
    def pairing_code(self, device_id): ...
    @abc.abstractmethod
    def put_pairing_code(self, pairing_code): ...
    @abc.abstractmethod
    def delete_pairing_code(self, device_id): ...
    @abc.abstractmethod
    def delete_expired_pairing_codes(self, now):
        """Delete codes with `expires_at <= now`; return how many."""

    # Device leases (kept after expiry: the epoch must never go back)
    @abc.abstractmethod
    def lease(self, device_id): ...
    @abc.abstractmethod
    def put_lease(self, lease): ...

    # Instances (kept after expiry: the epoch must never go back)
    @abc.abstractmethod
    def instance(self, server_id): ...
    @abc.abstractmethod
    def instances(self): ...
    @abc.abstractmethod
    def put_instance(self, instance): ...

    # Reservations: at most one per device
    @abc.abstractmethod
    def reservation(self, txn_id): ...
    @abc.abstractmethod
    def reservation_of(self, device_id): ...
    @abc.abstractmethod
    def reservations(self): ...
    @abc.abstractmethod
    def put_reservation(self, reservation): ...
    @abc.abstractmethod
    def delete_reservation(self, txn_id): ...

    # Superseded transactions, remembered until they would have expired
    @abc.abstractmethod
    def superseded(self, txn_id): ...
    @abc.abstractmethod
    def put_superseded(self, superseded): ...
    @abc.abstractmethod
    def delete_expired_superseded(self, now):
        """Delete those with `expires_at <= now`; return how many."""

    # Requests made with an idempotency key, one per (caller, key)
    @abc.abstractmethod
    def idempotent_request(self, caller, key): ...
    @abc.abstractmethod
    def oldest_idempotent_requests(self, caller, limit):
        """The caller's `limit` oldest requests, oldest first."""

    @abc.abstractmethod
    def count_idempotent_requests(self, caller): ...
    @abc.abstractmethod
    def put_idempotent_request(self, request): ...
    @abc.abstractmethod
    def delete_idempotent_request(self, caller, key): ...
    @abc.abstractmethod
    def delete_expired_idempotent_requests(self, now):
        """Delete requests with `expires_at <= now`; return how many."""

    # Wait queue, per location, first in first out
    @abc.abstractmethod
    def tickets(self, location_id=None): ...
    @abc.abstractmethod
    def push_ticket(self, ticket): ...
    @abc.abstractmethod
    def delete_ticket(self, ticket_id): ...

    # Releases: bundle bytes by version, never replaced
    @abc.abstractmethod
    def release(self, version):
        """The bundle's bytes, or None."""

    @abc.abstractmethod
    def releases(self):
        """[PublishedRelease], by version."""

    @abc.abstractmethod
    def put_release(self, release, bundle):
        """Keep `bundle` (bytes) as `release` (a PublishedRelease) of a new version."""

    # Rollouts: at most one active (running or paused)
    @abc.abstractmethod
    def rollout(self, rollout_id): ...
    @abc.abstractmethod
    def rollouts(self): ...
    @abc.abstractmethod
    def put_rollout(self, rollout): ...

    # Audit log, append-only; entries get increasing `seq`
    @abc.abstractmethod
    def append_audit(
        self, at, actor, action, device_id=None, agent_id=None, txn_id=None, detail=None
    ): ...
    @abc.abstractmethod
    def audit(self, device_id=None, agent_id=None, limit=100):
        """The newest `limit` matching entries, oldest first."""

    @abc.abstractmethod
    def audit_after(self, seq, limit):
        """The first `limit` entries after `seq`, oldest first."""


class Store(abc.ABC):
    """A store's scaffolding: one worker thread owns the connection and runs this store
    object's operations in order, off the event loop (each store's module says why one
    thread suits it). A subclass parses its URL in `__init__` and supplies `_connect`,
    `_run` and `_disconnect`, which run on the worker.
    """

    # Several server instances may use the store at once; they then form a cluster that
    # meets at the store's `address`.
    shared = False

    def __init__(self, retry_s):
        self.retry_s = retry_s
        self.retries = Counter()  # reason -> attempts run again after a pause (`Backoff`)
        self.timed = None  # called with ("read" or "write", seconds) after each operation
        self._closed = False
        self._worker = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"qrfleet-{type(self).__name__}"
        )

    @classmethod
    def open(cls, url):
        """Connect to the store at `url`, creating or migrating its schema; blocks for up to
        the retry budget, so call it at startup."""
        store = cls(url)
        try:
            store._worker.submit(store._connect, store._deadline()).result()
        except BaseException:
            store._worker.submit(store._disconnect).result()
            store._worker.shutdown()
            raise
        return store

    def _deadline(self):
        # Counted from the call, not from when the worker gets to it: operations queued
        # behind one that waits out an outage do not each wait a whole budget again.
        return time.monotonic() + self.retry_s

    async def write(self, fn):
        return await self._submit(fn, True)

    async def read(self, fn):
        return await self._submit(fn, False)

    async def _submit(self, fn, writing):
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            return await loop.run_in_executor(
                self._worker, self._run, fn, writing, self._deadline()
            )
        finally:
            if self.timed:
                self.timed("write" if writing else "read", time.monotonic() - started)

    async def close(self):
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker, self._disconnect)
        self._worker.shutdown()

    @abc.abstractmethod
    def _connect(self, deadline):
        """Connect and create or migrate the schema."""

    @abc.abstractmethod
    def _run(self, fn, writing, deadline):
        """Run `fn(tx)` in one transaction, retrying until `deadline` -> its result."""

    @abc.abstractmethod
    def _disconnect(self):
        """Close the connection, if any; also called after a failed `_connect`."""
