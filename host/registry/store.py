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
waits and retries, and raises `StoreUnavailable` only when the backend stays
unreachable past its retry budget.

Stores are chosen by URL scheme in `host.registry.STORES`; each implements
`Store.open(url)` and a `Transaction` with the methods below. A listing method
returns records in a stable order (ids ascending, queue in arrival order).
"""

import abc


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

    # Wait queue, per location, first in first out
    @abc.abstractmethod
    def tickets(self, location_id=None): ...
    @abc.abstractmethod
    def push_ticket(self, ticket): ...
    @abc.abstractmethod
    def delete_ticket(self, ticket_id): ...

    # Audit log, append-only; entries get increasing `seq`
    @abc.abstractmethod
    def append_audit(
        self, at, actor, action, device_id=None, agent_id=None, txn_id=None, detail=None
    ): ...
    @abc.abstractmethod
    def audit(self, device_id=None, agent_id=None, limit=100):
        """The newest `limit` matching entries, oldest first."""


class Store(abc.ABC):
    @classmethod
    @abc.abstractmethod
    def open(cls, url):
        """Connect to the store at `url`, creating or migrating its schema."""

    @abc.abstractmethod
    async def write(self, fn): ...

    @abc.abstractmethod
    async def read(self, fn): ...

    @abc.abstractmethod
    async def close(self): ...
