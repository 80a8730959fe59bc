"""The Valkey/Redis store: one registry shared by several server instances.

URL: `redis://[USER:PASSWORD@]HOST[:PORT][/DB][?prefix=NAME][&min_replicas=N]`; port
6379, database 0 and key prefix `qrfleet:` unless given. Works with Valkey and with Redis 7
(it uses no newer command), on one server or a primary, not on a Redis Cluster:
a transaction spans keys of many entities. Behind Sentinel:
`redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB][?prefix=NAME]`
names the Sentinels and the service whose primary they watch. `min_replicas` is how many
replicas must confirm a change before it is acknowledged (below): 1 behind Sentinel, 0 on a
plain `redis://` unless given.

How it stays correct under concurrency: optimistic transactions.

- A transaction WATCHes each key in the same round trip as it first reads it,
  keeps what it read, and buffers its writes. Commit sends the writes in one
  MULTI/EXEC. If any watched key changed since it was read, EXEC applies
  nothing and `write(fn)` runs `fn` again on a fresh transaction after a
  jittered pause (`Backoff`), for up to `RETRY_S` from the call; past that the
  caller gets `StoreUnavailable`.
- Listings read an index (a set or a list) and watch it too, so a concurrent
  insert into what was listed aborts the transaction: no phantoms. Index
  updates (SADD/SREM, RPUSH/LREM, ZADD/ZREM) commute, so writers do not watch
  the indexes they only update; whoever reads an index watches it.
- A read (`read(fn)`) watches as well and ends with an empty MULTI/EXEC, which
  fails if anything it read changed meanwhile: its reads were one snapshot.
  So does a function that raises (a refusal, or a broken invariant): if what it
  read changed meanwhile, it saw a torn state, and it runs again on fresh reads.
- Audit entries are numbered inside EXEC by a short Lua script sent whole with
  EVAL, not EVALSHA: a script cache emptied by a server restart cannot make one
  command of a committed transaction fail. Numbering inside EXEC keeps writers
  that audit from all conflicting on one counter.
- Checks inside the transaction back the rules, as constraints do in SQLite:
  `put_link` on an owned unit, a second reservation of a unit or for a
  transaction, an epoch (of a unit or an instance) lower than the stored one, a token hash of another
  agent, a release published again and a second active rollout raise the store's
  `IntegrityError`; its watches make the check and the write one atomic step.
- Epochs: a lease's key is watched when the rule reads it to issue
  previous + 1, so two sessions racing for a unit cannot get the same epoch.

Losing the connection (a restarting server) never applies half a transaction
(MULTI/EXEC is all or nothing) and never applies one twice: every commit also
sets the store's receipt key to the commit's number. If the connection drops
before EXEC was sent, nothing happened and `fn` runs again once the server
answers. If it drops after, the store reconnects and reads its receipt: this
commit's number means committed, anything else means not. Either way it waits
for the server with backoff (longer pauses than for conflicts) for up to
`RETRY_S` from the call, then raises `StoreUnavailable`, saying whether the
change may have been applied.

A failover behind Sentinel is such an outage: the connection asks the Sentinels for the
primary each time it opens, so attempts fail (the old primary is gone, or the Sentinels
report it down) until they promote a replica, and the next attempt runs on the new primary,
named as soon as a Sentinel advertises it (SENTINEL GET-MASTER-ADDR-BY-NAME: right after the
promotion, a second or more before the other replicas follow it and SENTINEL MASTERS
changes). A demoted primary that still answers refuses writes with READONLY, and a primary
with fewer good replicas than its `min-replicas-to-write` refuses them with NOREPLICAS;
either closes the connection as a lost one, with nothing applied, so both are ridden
through.

Durability across a failover: replication is asynchronous, so a commit the primary
acknowledged may be missing on the replica promoted after it. A write operation is therefore
acknowledged only once it is confirmed (`_wait_for_replicas`), unless all it wrote may be lost:

1. WAIT until `min_replicas` replicas have it. Sentinel promotes the replica with the most
   data, so a change one replica confirmed outlives the loss of the primary. Fewer within
   `REPLICA_WAIT_S` raise `StoreUnavailable`: the change is on the primary and may or may
   not stand (a retry with the same Idempotency-Key is safe); the connection is dropped, so
   the next attempt asks the Sentinels again.
2. With Sentinel, the server must still be the primary they name (as for a new connection).
   A primary paused past its replacement may resume while a replica still follows it, for
   up to a second: WAIT succeeds, and the change is thrown away when the Sentinels
   reconfigure both. So the connection is treated as lost instead: the commit's receipt is
   looked up on the primary they name, and `fn` runs again there if it is missing.

What waits (`RedisTransaction.durable`):

- owners and identities: links and unlinks (so transfers), locations, agents, a unit's
  registration (a new unit, its secret, name or location), pairing codes, releases published
  and every change of a rollout;
- reservations made and ended (reserve, complete, cancel, superseding; a sweep that expires
  reservations too, as the store cannot tell it from a completion);
- epochs: a lease or an instance start with a larger epoch than the stored one. An epoch is
  handed out only once a replica has it, so the primary promoted after a loss has seen every
  epoch handed out and issues larger ones: epochs only grow across a failover;
- an operation that changes nothing, and a refusal: either may rest on a change not yet
  confirmed (a retry finding the commit of an attempt whose wait failed, a stale primary's
  view), so it confirms too, by writing its receipt and waiting for that.

What may be lost, since it is renewed or redone within seconds: heartbeats (a lease or an
instance renewed or ended at the same epoch), what a unit reports (last seen, firmware,
panel, screens, where its update stands) and the audit entries that come with it, queue
tickets, the answers remembered for idempotency keys (a retry with the key carries on the transaction, which did
wait; `Registry.idempotent_answer` confirms an answer before giving it again), and the
sweeper's deletions of expired codes, keys and tickets. Reads confirm nothing: a stale
primary may answer them until its connection next writes.

The receipt of a commit whose reply was lost is looked up on whichever server is primary
when the store reconnects; a durable commit found there is confirmed there before it counts
as applied (its receipt is written again: replicated in order, a replica with that write
has the commit too).

Threading: each store owns one worker thread (`Store`) and one connection, as
the SQLite store does. Rules are synchronous functions that read and decide,
so the transaction needs the synchronous client and runs off the event loop;
an asyncio client could not answer a rule's read in the middle of its call.
One thread runs this process's operations in order, so they never conflict
with each other; conflicts come only from other processes, where they are
real.

Key layout (every key starts with the prefix; values are compact JSON arrays
unless noted):

    schema                     schema version (integer)
    location:<id>              [name, policy]                  locations: set of ids
    agent:<id>                 [name, location_id, token_hash] agents, agents:<location>: sets
    agent-token:<token_hash>   agent id (plain string)
    device:<id>                [name, location_id, firmware, registered_at,
                                last_seen, last_screen, panel, shown,
                                reset_cause, update, via]
                                                               devices, devices:<location>: sets
    device-secret:<id>         the secret (plain string)
    link:<device>              [agent_id, linked_at]           links:<agent>: set of devices
    pairing:<device>           [code, expires_at]              pairing-expiry: zset by expires_at
    lease:<device>             [server_id, epoch, expires_at]  (kept after expiry)
    reservation:<txn>          [txn_id, device_id, agent_id, server_id, epoch,
                                created_at, expires_at]        reservations: set of txn ids
    reserved:<device>          the same array, found by unit
    superseded:<txn>           [by_txn_id, expires_at]         superseded-expiry: zset
    instance:<server_id>       [epoch, expires_at, units]      instances: set of ids
                               (kept after expiry: the epoch must never go back)
    idem:[caller,key]          [fingerprint, txn_id, created_at, expires_at, status,
                                response]                      idem-by:<caller>: zset by
                               created_at of keys; idem-expiry: zset by expires_at of
                               [caller,key]
    ticket:<id>                [location_id, agent_id, expires_at]
                                                               queue, queue:<location>: lists
    release:<version>          the bundle (its UTF-8 JSON text)
    release-info:<version>     [size, sha256, published_at]    releases: set of versions
    rollout:<id>               the record (Rollout.to_json)    rollouts: set of ids
    active-rollout             the id of the running or paused rollout (plain string)
    audit-seq                  last audit number
    audit, audit:device:<id>,  zsets of "<seq> [at, actor, action, device_id,
    audit:agent:<id>            agent_id, txn_id, detail]", scored by seq
    receipt:<random>           a store's latest commit number, one key per store
                               object, expiring 2 x RETRY_S after its last commit
"""

import itertools
import json
import math
import time
import uuid
from urllib.parse import parse_qs, unquote, urlsplit

from valkey.connection import Connection
from valkey.exceptions import ConnectionError as LostConnection
from valkey.exceptions import ResponseError
from valkey.exceptions import TimeoutError as LostTimeout
from valkey.sentinel import MasterNotFoundError, Sentinel

from host.registry.errors import InvalidInput, RegistryError, StoreUnavailable
from host.registry.records import (
    Agent,
    AuditEntry,
    Device,
    IdempotentRequest,
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
from host.registry.store import Backoff, IntegrityError, Store, Transaction

RETRY_S = 10.0
# Pauses between attempts (first, longest): a conflict clears in microseconds, a
# restarting server takes a while. An attempt on a server that is down fails at once (a
# refused connect), so the longest pause is short: it is how late an instance finds the
# server back, and that eats into its presence (3 s) and its units' leases (3 heartbeats).
CONFLICT_PAUSES_S = (0.001, 0.05)
OUTAGE_PAUSES_S = (0.01, 0.2)
SOCKET_TIMEOUT_S = 5.0
# How long a durable commit waits for its replicas: they confirm within a round trip when up;
# the store's one worker waits meanwhile, so a primary that lost its replicas (better refused
# by `min-replicas-to-write`) stalls this process by as much per operation.
REPLICA_WAIT_S = 1.0
# Audit numbers skipped by the first audited commit on a new connection: more entries than a
# primary takes between its last replication and its loss. Entries that did not wait for a
# replica (screens, sessions ending) may vanish in a failover, and the new primary would hand
# their numbers out again, to entries an event client (host/events.py) that saw the lost ones
# would then skip; past the gap, numbers only grow.
AUDIT_SEQ_GAP = 1_000_000
SCHEMA_VERSION = 5
DEFAULT_PREFIX = "qrfleet:"

_LOST = (LostConnection, LostTimeout)

# KEYS[1]: the counter; KEYS[2..]: sorted sets. ARGV[1]: the entry.
_APPEND_AUDIT = """
local seq = redis.call('INCR', KEYS[1])
local member = seq .. ' ' .. ARGV[1]
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], seq, member)
end
return seq
"""


def _audit_entries(members):
    """Audit entries from their members, "<seq> <JSON fields>" each."""
    entries = []
    for member in members:
        seq, fields = member.split(" ", 1)
        entries.append(AuditEntry(int(seq), *json.loads(fields)))
    return entries


class TooFewReplicas(LostConnection):
    """The primary refused a write for want of replicas (NOREPLICAS): nothing was applied, and
    another primary may be up; the connection is closed, to ask the Sentinels again."""


class Address:
    """Where the store is, parsed from its URL:

        redis://[USER:PASSWORD@]HOST[:PORT][/DB][?prefix=P][&min_replicas=N]
        redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB][?prefix=P]
            [&min_replicas=N]

    With Sentinel, the hosts are the Sentinels, asked for the primary of SERVICE each time a
    connection opens; USER and PASSWORD are for the primary (the Sentinels take none).
    `min_replicas`: replicas that must confirm a durable change (1 with Sentinel, else 0)."""

    def __init__(self, url):
        shape = (
            f"{url!r} is not a Redis store URL; use redis://HOST:PORT/DB or "
            "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE/DB, optionally with "
            "USER:PASSWORD@ before the hosts and ?prefix=NAME and &min_replicas=N (replicas "
            "that must confirm a change) after the database"
        )
        try:
            parts = urlsplit(url)
            # The netloc may list several hosts, which urlsplit's .hostname cannot take.
            userinfo, _, hosts = parts.netloc.rpartition("@")
            nodes = [urlsplit(f"//{node}") for node in hosts.split(",")]
            self.nodes = [(n.hostname, n.port or 6379) for n in nodes]
        except ValueError as error:
            raise InvalidInput(shape) from error
        self.sentinel = parts.scheme == "redis+sentinel"
        path = parts.path.strip("/").split("/")
        self.service = path.pop(0) if self.sentinel else None
        db = path[0] if path and path[0] else "0"
        query = parse_qs(parts.query, keep_blank_values=True)
        if parts.scheme not in ("redis", "redis+sentinel") or not all(h for h, _ in self.nodes):
            raise InvalidInput(shape)
        if len(path) > 1 or not db.isdigit() or (self.sentinel and not self.service):
            raise InvalidInput(shape)
        if not self.sentinel and len(self.nodes) != 1:
            raise InvalidInput(shape)
        if set(query) - {"prefix", "min_replicas"} or any(len(v) != 1 for v in query.values()):
            raise InvalidInput(shape)
        min_replicas = query.get("min_replicas", ["1" if self.sentinel else "0"])[0]
        if not min_replicas.isdigit():
            raise InvalidInput(shape)
        self.min_replicas = int(min_replicas)
        self.db = int(db)
        user, colon, password = userinfo.partition(":")
        self.username = unquote(user) if user else None
        self.password = unquote(password) if colon else None
        self.prefix = query.get("prefix", [DEFAULT_PREFIX])[0]

    def sentinels(self):
        """A client of the Sentinels, or None without them."""
        if not self.sentinel:
            return None
        return _Sentinels(self.nodes, sentinel_kwargs={"socket_timeout": SOCKET_TIMEOUT_S})

    def connection(self, sentinels, **options):
        """A synchronous connection to the primary, not yet open; with `sentinels`, it asks
        them where the primary is each time it (re)connects, and a READONLY reply (the
        primary was demoted) closes it and raises ConnectionError."""
        options.update(db=self.db, username=self.username, password=self.password)
        if sentinels is None:
            ((host, port),) = self.nodes
            return Connection(host=host, port=port, **options)
        return sentinels.master_for(self.service, **options).connection_pool.make_connection()

    def client(self):
        """An asyncio client of the primary, following a failover as `connection()` does."""
        import valkey.asyncio as avalkey  # only the server's cluster needs asyncio

        options = {"db": self.db, "username": self.username, "password": self.password}
        if not self.sentinel:
            ((host, port),) = self.nodes
            return avalkey.Valkey(host=host, port=port, **options)
        sentinels = _async_sentinels(self.nodes)
        return sentinels.master_for(self.service, **options)

    def __str__(self):
        hosts = ",".join(f"{host}:{port}" for host, port in self.nodes)
        if self.sentinel:
            return f"{self.service}/{self.db} (Sentinels {hosts})"
        return f"{hosts}/{self.db}"


def _primary(state, advertised):
    """The primary to connect to, from one Sentinel's SENTINEL MASTER `state` and its
    GET-MASTER-ADDR-BY-NAME answer `advertised`, or None. A replica promoted in a failover is
    advertised at once, while the state still names the old primary until the other replicas
    follow; otherwise the primary is used only while the Sentinel holds it up and is not
    replacing it (until it sees the promotion, the old primary may answer again)."""
    if advertised is not None and advertised != (state["ip"], state["port"]):
        return advertised
    flags = set(state["flags"].split(","))
    if "master" in flags and not flags & {"s_down", "o_down", "failover_in_progress"}:
        return advertised
    return None


class _Sentinels(Sentinel):
    def discover_master(self, service_name):
        """The primary the first Sentinel that names one (`_primary`) names; raises
        MasterNotFoundError (a lost connection) if none does."""
        for n, sentinel in enumerate(self.sentinels):
            asking = sentinel.pipeline(transaction=False)  # one round trip
            asking.sentinel_master(service_name)
            asking.sentinel_get_master_addr_by_name(service_name)
            try:
                address = _primary(*asking.execute())
            except (LostConnection, LostTimeout, ResponseError):
                continue  # unreachable, or it does not watch the service
            if address is not None:
                self.sentinels[0], self.sentinels[n] = sentinel, self.sentinels[0]
                return address
        raise MasterNotFoundError(f"no Sentinel names a primary of {service_name!r} that is up")


def _async_sentinels(nodes):
    """`_Sentinels` for asyncio clients."""
    from valkey.asyncio.sentinel import Sentinel as AsyncSentinel

    class AsyncSentinels(AsyncSentinel):
        async def discover_master(self, service_name):
            for n, sentinel in enumerate(self.sentinels):
                try:
                    state = await sentinel.sentinel_master(service_name)
                    addr = await sentinel.sentinel_get_master_addr_by_name(service_name)
                except (LostConnection, LostTimeout, ResponseError):
                    continue
                address = _primary(state, addr)
                if address is not None:
                    self.sentinels[0], self.sentinels[n] = sentinel, self.sentinels[0]
                    return address
            raise MasterNotFoundError(f"no Sentinel names a primary of {service_name!r} that is up")

    return AsyncSentinels(nodes, sentinel_kwargs={"socket_timeout": SOCKET_TIMEOUT_S})


def _dump(value):
    return json.dumps(value, separators=(",", ":"))


def _set_receipt(receipt):
    # Kept long enough to be read within any operation's retry budget.
    return ("SET", *receipt, "EX", math.ceil(2 * RETRY_S))


def _load(text):
    return None if text is None else json.loads(text)


def _roundtrip(conn, commands):
    """Send `commands` in one write and read every reply; errors come back as values, except
    NOREPLICAS, which closes the connection and raises TooFewReplicas."""
    conn.send_packed_command(conn.pack_commands(commands))
    replies = []
    for _ in commands:
        try:
            replies.append(conn.read_response())
        except ResponseError as error:
            replies.append(error)
    for command, reply in zip(commands, replies, strict=True):
        if isinstance(reply, ResponseError) and str(reply).startswith("NOREPLICAS"):
            conn.disconnect()
            raise TooFewReplicas(f"the primary refused {command[0]}: {reply}")
    return replies


def _refused(commands, replies):
    """Raise StoreUnavailable for the first command the server refused."""
    for command, reply in zip(commands, replies, strict=True):
        if isinstance(reply, ResponseError):
            raise StoreUnavailable(
                f"the registry store refused {command[0]} ({reply}); check that the URL names "
                "a Valkey/Redis 7 server that this qrfleet may write to, and that no other "
                "application uses the same key prefix"
            )


class RedisTransaction(Transaction):
    def __init__(self, conn, prefix):
        self._conn = conn
        self._p = prefix
        self._values = {}  # key -> its string (None: absent), as read or as written here
        self._stored = {}  # index key -> its members when first read here (watched)
        self._changes = {}  # index key -> {member: True if added here, False if removed}
        self._audits = []  # entries appended here, not yet numbered
        self.commands = []  # writes to send in MULTI/EXEC, in order
        # Whether a write here must outlive a failover (see the module's docstring).
        self.durable = False

    # Reading: every key is watched in the round trip that first reads it

    def _read(self, *commands):
        replies = _roundtrip(self._conn, commands)
        _refused(commands, replies)
        return replies[-1]

    def _strings(self, keys):
        missing = list(dict.fromkeys(k for k in keys if k not in self._values))
        if missing:
            found = self._read(("WATCH", *missing), ("MGET", *missing))
            self._values.update(zip(missing, found, strict=True))
        return [self._values[k] for k in keys]

    def _string(self, key):
        return self._strings([key])[0]

    def _record(self, key):
        return _load(self._string(key))

    def _records(self, keys):
        return [_load(v) for v in self._strings(keys)]

    def _members(self, key, read_command):
        """The index's members as this transaction sees them, stored order first."""
        if key not in self._stored:
            self._stored[key] = self._read(("WATCH", key), read_command)
        stored = self._stored[key]
        changes = self._changes.get(key, {})
        if not changes:
            return list(stored)
        present = set(stored)
        return [m for m in stored if changes.get(m, True)] + [
            m for m, added in changes.items() if added and m not in present
        ]

    def _set_members(self, key):
        return sorted(self._members(key, ("SMEMBERS", key)))

    # Writing: buffered until commit

    def _put(self, key, value):
        self._values[key] = value
        self.commands.append(("SET", key, value))

    def _delete(self, key):
        self._values[key] = None
        self.commands.append(("DEL", key))

    def _index(self, command, key, member, *args):
        added = command in ("SADD", "RPUSH")
        self._changes.setdefault(key, {})[member] = added
        self.commands.append((command, key, *args, member))

    # Locations

    def location(self, location_id):
        value = self._record(f"{self._p}location:{location_id}")
        return None if value is None else Location(location_id, *value)

    def locations(self):
        ids = self._set_members(f"{self._p}locations")
        values = self._records([f"{self._p}location:{i}" for i in ids])
        return [Location(i, *v) for i, v in zip(ids, values, strict=True) if v is not None]

    def put_location(self, location):
        self.durable = True
        self._put(
            f"{self._p}location:{location.location_id}", _dump([location.name, location.policy])
        )
        self._index("SADD", f"{self._p}locations", location.location_id)

    # Agents

    def agent(self, agent_id):
        value = self._record(f"{self._p}agent:{agent_id}")
        return None if value is None else Agent(agent_id, *value)

    def agent_by_token_hash(self, token_hash):
        agent_id = self._string(f"{self._p}agent-token:{token_hash}")
        return None if agent_id is None else self.agent(agent_id)

    def agents(self, location_id=None):
        index = f"{self._p}agents" if location_id is None else f"{self._p}agents:{location_id}"
        ids = self._set_members(index)
        values = self._records([f"{self._p}agent:{i}" for i in ids])
        return [Agent(i, *v) for i, v in zip(ids, values, strict=True) if v is not None]

    def put_agent(self, agent):
        old = self.agent(agent.agent_id)
        token_key = f"{self._p}agent-token:{agent.token_hash}"
        if self._string(token_key) not in (None, agent.agent_id):
            raise IntegrityError(f"token hash of agent {agent.agent_id} belongs to another agent")
        self.durable = True
        self._put(
            f"{self._p}agent:{agent.agent_id}",
            _dump([agent.name, agent.location_id, agent.token_hash]),
        )
        self._put(token_key, agent.agent_id)
        if old is None:
            self._index("SADD", f"{self._p}agents", agent.agent_id)
        elif old.token_hash != agent.token_hash:
            self._delete(f"{self._p}agent-token:{old.token_hash}")
        if old is None or old.location_id != agent.location_id:
            if old is not None:
                self._index("SREM", f"{self._p}agents:{old.location_id}", agent.agent_id)
            self._index("SADD", f"{self._p}agents:{agent.location_id}", agent.agent_id)

    # Devices

    def device(self, device_id):
        value = self._record(f"{self._p}device:{device_id}")
        return None if value is None else Device(device_id, *value)

    def devices(self, location_id=None):
        index = f"{self._p}devices" if location_id is None else f"{self._p}devices:{location_id}"
        ids = self._set_members(index)
        keys = [f"{self._p}device:{i}" for i in ids]
        # A listing shows each unit with its owner, session and reservation: one round
        # trip reads them all, instead of three more per unit.
        shown = [f"{self._p}{kind}:{i}" for i in ids for kind in ("link", "lease", "reserved")]
        self._strings(keys + shown)
        values = self._records(keys)
        return [Device(i, *v) for i, v in zip(ids, values, strict=True) if v is not None]

    def device_secret(self, device_id):
        return self._string(f"{self._p}device-secret:{device_id}")

    def put_device(self, device, secret=None):
        old = self.device(device.device_id)
        if old is None and secret is None:
            return  # as an UPDATE of a missing row: nothing to keep a secret for
        d = device
        if (
            old is None
            or secret is not None
            or (old.name, old.location_id) != (d.name, d.location_id)
        ):
            self.durable = True  # its registration; what it reports of itself may be lost
        fields = [
            d.name,
            d.location_id,
            d.firmware,
            d.registered_at,
            d.last_seen,
            d.last_screen,
            d.panel,
            d.shown,
            d.reset_cause,
            d.update,
            d.via,
        ]
        self._put(f"{self._p}device:{d.device_id}", _dump(fields))
        if secret is not None:
            self._put(f"{self._p}device-secret:{d.device_id}", secret)
        if old is None:
            self._index("SADD", f"{self._p}devices", d.device_id)
        old_location = None if old is None else old.location_id
        if old_location != d.location_id:
            if old_location is not None:
                self._index("SREM", f"{self._p}devices:{old_location}", d.device_id)
            if d.location_id is not None:
                self._index("SADD", f"{self._p}devices:{d.location_id}", d.device_id)

    # Links

    def owner(self, device_id):
        value = self._record(f"{self._p}link:{device_id}")
        return None if value is None else value[0]

    def linked_devices(self, agent_id):
        return self._set_members(f"{self._p}links:{agent_id}")

    def pool_devices(self, location_id):
        ids = self._set_members(f"{self._p}devices:{location_id}")
        links = self._strings([f"{self._p}link:{i}" for i in ids])
        return [i for i, link in zip(ids, links, strict=True) if link is None]

    def put_link(self, device_id, agent_id, at):
        if self.owner(device_id) is not None:
            raise IntegrityError(f"unit {device_id} already has an owner")
        self.durable = True
        self._put(f"{self._p}link:{device_id}", _dump([agent_id, at]))
        self._index("SADD", f"{self._p}links:{agent_id}", device_id)

    def delete_link(self, device_id):
        owner = self.owner(device_id)
        if owner is not None:
            self.durable = True
            self._delete(f"{self._p}link:{device_id}")
            self._index("SREM", f"{self._p}links:{owner}", device_id)

    # Pairing codes

    def pairing_code(self, device_id):
        value = self._record(f"{self._p}pairing:{device_id}")
        return None if value is None else PairingCode(device_id, *value)

    def put_pairing_code(self, pairing_code):
        self.durable = True  # the unit shows it: it must link after a failover too
        device_id = pairing_code.device_id
        self._put(
            f"{self._p}pairing:{device_id}", _dump([pairing_code.code, pairing_code.expires_at])
        )
        self.commands.append(
            ("ZADD", f"{self._p}pairing-expiry", pairing_code.expires_at, device_id)
        )

    def delete_pairing_code(self, device_id):
        self._delete(f"{self._p}pairing:{device_id}")
        self.commands.append(("ZREM", f"{self._p}pairing-expiry", device_id))

    def delete_expired_pairing_codes(self, now):
        index = f"{self._p}pairing-expiry"
        expired = self._read(("WATCH", index), ("ZRANGE", index, "-inf", now, "BYSCORE"))
        # Codes written in this transaction are not in the index yet.
        pairing = f"{self._p}pairing:"
        here = [k[len(pairing) :] for k in self._values if k.startswith(pairing)]
        deleted = 0
        for device_id in dict.fromkeys([*expired, *here]):
            code = self.pairing_code(device_id)
            if code is not None and code.expires_at <= now:
                self.delete_pairing_code(device_id)
                deleted += 1
        return deleted

    # Leases

    def lease(self, device_id):
        value = self._record(f"{self._p}lease:{device_id}")
        return None if value is None else Lease(device_id, *value)

    def put_lease(self, lease):
        old = self.lease(lease.device_id)
        if old is not None and lease.epoch < old.epoch:
            raise IntegrityError(
                f"epoch of unit {lease.device_id} would go back from {old.epoch} to {lease.epoch}"
            )
        # A new epoch is handed out once a replica has it; a renewal or release may be lost.
        self.durable |= old is None or lease.epoch > old.epoch
        self._put(
            f"{self._p}lease:{lease.device_id}",
            _dump([lease.server_id, lease.epoch, lease.expires_at]),
        )

    # Instances

    def instance(self, server_id):
        value = self._record(f"{self._p}instance:{server_id}")
        return None if value is None else Instance(server_id, *value)

    def instances(self):
        ids = self._set_members(f"{self._p}instances")
        values = self._records([f"{self._p}instance:{i}" for i in ids])
        return [Instance(i, *v) for i, v in zip(ids, values, strict=True) if v is not None]

    def put_instance(self, instance):
        old = self.instance(instance.server_id)
        if old is not None and instance.epoch < old.epoch:
            raise IntegrityError(
                f"epoch of instance {instance.server_id} would go back from {old.epoch} to "
                f"{instance.epoch}"
            )
        self.durable |= old is None or instance.epoch > old.epoch
        self._put(
            f"{self._p}instance:{instance.server_id}",
            _dump([instance.epoch, instance.expires_at, instance.units]),
        )
        if old is None:
            self._index("SADD", f"{self._p}instances", instance.server_id)

    # Reservations

    def reservation(self, txn_id):
        value = self._record(f"{self._p}reservation:{txn_id}")
        return None if value is None else Reservation(*value)

    def reservation_of(self, device_id):
        value = self._record(f"{self._p}reserved:{device_id}")
        return None if value is None else Reservation(*value)

    def reservations(self):
        txn_ids = self._set_members(f"{self._p}reservations")
        values = self._records([f"{self._p}reservation:{t}" for t in txn_ids])
        return [Reservation(*v) for v in values if v is not None]

    def put_reservation(self, reservation):
        r = reservation
        if self.reservation(r.txn_id) is not None:
            raise IntegrityError(f"transaction {r.txn_id} already holds a reservation")
        if self.reservation_of(r.device_id) is not None:
            raise IntegrityError(f"unit {r.device_id} is already reserved")
        value = _dump(
            [r.txn_id, r.device_id, r.agent_id, r.server_id, r.epoch, r.created_at, r.expires_at]
        )
        self.durable = True
        self._put(f"{self._p}reservation:{r.txn_id}", value)
        self._put(f"{self._p}reserved:{r.device_id}", value)
        self._index("SADD", f"{self._p}reservations", r.txn_id)

    def delete_reservation(self, txn_id):
        reservation = self.reservation(txn_id)
        if reservation is not None:
            self.durable = True
            self._delete(f"{self._p}reservation:{txn_id}")
            self._delete(f"{self._p}reserved:{reservation.device_id}")
            self._index("SREM", f"{self._p}reservations", txn_id)

    def superseded(self, txn_id):
        value = self._record(f"{self._p}superseded:{txn_id}")
        return None if value is None else SupersededTxn(txn_id, *value)

    def put_superseded(self, superseded):
        s = superseded
        self._put(f"{self._p}superseded:{s.txn_id}", _dump([s.by_txn_id, s.expires_at]))
        self.commands.append(("ZADD", f"{self._p}superseded-expiry", s.expires_at, s.txn_id))

    def delete_expired_superseded(self, now):
        index = f"{self._p}superseded-expiry"
        expired = self._read(("WATCH", index), ("ZRANGE", index, "-inf", now, "BYSCORE"))
        deleted = 0
        for txn_id in expired:
            superseded = self.superseded(txn_id)
            if superseded is None or superseded.expires_at <= now:
                self._delete(f"{self._p}superseded:{txn_id}")
                self.commands.append(("ZREM", index, txn_id))
                deleted += superseded is not None
        return deleted

    # Requests with an idempotency key

    def _request_key(self, caller, key):
        return f"{self._p}idem:{_dump([caller, key])}"

    def idempotent_request(self, caller, key):
        value = self._record(self._request_key(caller, key))
        return None if value is None else IdempotentRequest(caller, key, *value)

    def oldest_idempotent_requests(self, caller, limit):
        if limit <= 0:
            return []
        index = f"{self._p}idem-by:{caller}"
        keys = self._read(("WATCH", index), ("ZRANGE", index, 0, limit - 1))
        found = [self.idempotent_request(caller, key) for key in keys]
        return [r for r in found if r is not None]

    def count_idempotent_requests(self, caller):
        index = f"{self._p}idem-by:{caller}"
        return self._read(("WATCH", index), ("ZCARD", index))

    def put_idempotent_request(self, request):
        r = request
        self._put(
            self._request_key(r.caller, r.key),
            _dump([r.fingerprint, r.txn_id, r.created_at, r.expires_at, r.status, r.response]),
        )
        self.commands.append(("ZADD", f"{self._p}idem-by:{r.caller}", r.created_at, r.key))
        self.commands.append(
            ("ZADD", f"{self._p}idem-expiry", r.expires_at, _dump([r.caller, r.key]))
        )

    def delete_idempotent_request(self, caller, key):
        self._delete(self._request_key(caller, key))
        self.commands.append(("ZREM", f"{self._p}idem-by:{caller}", key))
        self.commands.append(("ZREM", f"{self._p}idem-expiry", _dump([caller, key])))

    def delete_expired_idempotent_requests(self, now):
        index = f"{self._p}idem-expiry"
        expired = self._read(("WATCH", index), ("ZRANGE", index, "-inf", now, "BYSCORE"))
        deleted = 0
        for member in expired:
            caller, key = json.loads(member)
            request = self.idempotent_request(caller, key)
            if request is None or request.expires_at <= now:
                self.delete_idempotent_request(caller, key)
                deleted += request is not None
        return deleted

    # Wait queue: lists in arrival order, one for all and one per location

    def tickets(self, location_id=None):
        index = f"{self._p}queue" if location_id is None else f"{self._p}queue:{location_id}"
        ids = self._members(index, ("LRANGE", index, 0, -1))
        values = self._records([f"{self._p}ticket:{i}" for i in ids])
        return [Ticket(i, *v) for i, v in zip(ids, values, strict=True) if v is not None]

    def push_ticket(self, ticket):
        key = f"{self._p}ticket:{ticket.ticket_id}"
        if self._string(key) is not None:
            raise IntegrityError(f"ticket {ticket.ticket_id} is already queued")
        self._put(key, _dump([ticket.location_id, ticket.agent_id, ticket.expires_at]))
        self._index("RPUSH", f"{self._p}queue", ticket.ticket_id)
        self._index("RPUSH", f"{self._p}queue:{ticket.location_id}", ticket.ticket_id)

    def delete_ticket(self, ticket_id):
        key = f"{self._p}ticket:{ticket_id}"
        value = self._record(key)
        if value is not None:
            self._delete(key)
            self._index("LREM", f"{self._p}queue", ticket_id, 0)
            self._index("LREM", f"{self._p}queue:{value[0]}", ticket_id, 0)

    # Releases: the bundle as text (a bundle is UTF-8 JSON), its facts apart for listings

    def release(self, version):
        text = self._string(f"{self._p}release:{version}")
        return None if text is None else text.encode()

    def releases(self):
        versions = self._set_members(f"{self._p}releases")
        values = self._records([f"{self._p}release-info:{v}" for v in versions])
        return [
            PublishedRelease(v, *value)
            for v, value in zip(versions, values, strict=True)
            if value is not None
        ]

    def put_release(self, release, bundle):
        r = release
        if self._string(f"{self._p}release-info:{r.version}") is not None:
            raise IntegrityError(f"release {r.version} is already published")
        self.durable = True
        self._put(f"{self._p}release:{r.version}", bundle.decode())
        self._put(f"{self._p}release-info:{r.version}", _dump([r.size, r.sha256, r.published_at]))
        self._index("SADD", f"{self._p}releases", r.version)

    # Rollouts

    def rollout(self, rollout_id):
        text = self._string(f"{self._p}rollout:{rollout_id}")
        return None if text is None else Rollout.from_json(text)

    def rollouts(self):
        ids = self._set_members(f"{self._p}rollouts")
        texts = self._strings([f"{self._p}rollout:{i}" for i in ids])
        return [Rollout.from_json(t) for t in texts if t is not None]

    def put_rollout(self, rollout):
        active_key = f"{self._p}active-rollout"
        active = self._string(active_key)
        if rollout.active and active not in (None, rollout.rollout_id):
            raise IntegrityError(f"rollout {active} is active already")
        self.durable = True
        if rollout.active:
            self._put(active_key, rollout.rollout_id)
        elif active == rollout.rollout_id:
            self._delete(active_key)
        if self.rollout(rollout.rollout_id) is None:
            self._index("SADD", f"{self._p}rollouts", rollout.rollout_id)
        self._put(f"{self._p}rollout:{rollout.rollout_id}", rollout.to_json())

    # Audit

    def append_audit(
        self, at, actor, action, device_id=None, agent_id=None, txn_id=None, detail=None
    ):
        fields = [at, actor, action, device_id, agent_id, txn_id, detail]
        keys = [f"{self._p}audit-seq", f"{self._p}audit"]
        if device_id is not None:
            keys.append(f"{self._p}audit:device:{device_id}")
        if agent_id is not None:
            keys.append(f"{self._p}audit:agent:{agent_id}")
        self.commands.append(("EVAL", _APPEND_AUDIT, len(keys), *keys, _dump(fields)))
        self._audits.append(fields)

    def audit(self, device_id=None, agent_id=None, limit=100):
        if device_id is not None:
            index, first = f"{self._p}audit:device:{device_id}", 0 if agent_id else -limit
        elif agent_id is not None:
            index, first = f"{self._p}audit:agent:{agent_id}", -limit
        else:
            index, first = f"{self._p}audit", -limit
        members = self._read(("WATCH", index), ("ZRANGE", index, first, -1))
        entries = _audit_entries(members)
        if self._audits:
            # Numbered at commit, after every entry committed so far (the counter is watched).
            last = int(self._string(f"{self._p}audit-seq") or 0)
            entries += [AuditEntry(last + i, *f) for i, f in enumerate(self._audits, 1)]
        matching = [
            e
            for e in entries
            if device_id in (None, e.device_id) and agent_id in (None, e.agent_id)
        ]
        return matching[-limit:] if limit > 0 else []

    def audit_after(self, seq, limit):
        index = f"{self._p}audit"
        members = self._read(
            ("WATCH", index), ("ZRANGE", index, f"({seq}", "+inf", "BYSCORE", "LIMIT", 0, limit)
        )
        return _audit_entries(members)

    # Commit

    @property
    def audited(self):
        """Whether this transaction appends to the audit log."""
        return bool(self._audits)

    def commit(self, receipt=None):
        """Apply the buffered writes and set `receipt` = (key, number), atomically
        -> False on a conflict."""
        commands = [("MULTI",), *self.commands]
        if receipt is not None:
            commands.append(_set_receipt(receipt))
        commands.append(("EXEC",))
        replies = _roundtrip(self._conn, commands)
        outcome = replies[-1]
        if outcome is None:
            return False
        if isinstance(outcome, ResponseError):  # a command was refused before EXEC: none ran
            _refused(commands, replies)
        _refused(commands[1:-1], outcome)
        return True

    def abandon(self):
        """Drop the transaction's watches (its function raised before commit) -> whether its
        reads were one snapshot: an empty EXEC fails if a watched key changed."""
        return _roundtrip(self._conn, [("MULTI",), ("EXEC",)])[-1] is not None


class RedisStore(Store):
    shared = True

    def __init__(self, url):
        self.address = address = Address(url)
        self._sentinels = address.sentinels()
        self._conn = address.connection(
            self._sentinels, socket_timeout=SOCKET_TIMEOUT_S, decode_responses=True
        )
        self._receipt_key = f"{address.prefix}receipt:{uuid.uuid4().hex}"
        self._commits = itertools.count(1)
        self._renumber = True  # a new connection: the next audited commit skips AUDIT_SEQ_GAP
        super().__init__(RETRY_S)

    def _connect(self, deadline):
        """Check (or write) the schema version, waiting for the server until `deadline`; the
        version is written again by the next start if a failover loses it."""
        self._run(self._check_schema, True, deadline, confirm=False)

    def _check_schema(self, tx):
        key = f"{self.address.prefix}schema"
        version = tx._string(key)
        if version is None or int(version) < SCHEMA_VERSION:
            # 2 and 4 added keys, 3, 4 and 5 fields at a record's end
            tx._put(key, str(SCHEMA_VERSION))
        elif int(version) > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the registry store at {self.address} has schema version {version}, newer than "
                f"this qrfleet knows ({SCHEMA_VERSION}); upgrade qrfleet"
            )

    def _run(self, fn, writing, deadline, confirm=True):
        """Run `fn` in transactions until one commits, the budget runs out, or `fn` raises;
        with `confirm`, a write waits for the replicas as the module's docstring says."""
        conflicts = Backoff(deadline, *CONFLICT_PAUSES_S, self.retries, "conflict")
        outages = Backoff(deadline, *OUTAGE_PAUSES_S, self.retries, "outage")
        while True:
            try:
                committed, result = self._attempt(fn, writing, confirm, deadline)
            except _LOST as error:
                self._renumber = True
                if not outages.wait():
                    raise StoreUnavailable(
                        f"cannot reach the registry store at {self.address} ({error}) for "
                        f"{self.retry_s:g} s; check that Valkey/Redis runs there and that the "
                        "URL is right"
                    ) from error
                continue
            if committed:
                return result
            if not conflicts.wait():
                raise StoreUnavailable(
                    f"records read by this operation kept changing for {self.retry_s:g} s in "
                    f"the registry store at {self.address}; too many writers contend for the "
                    "same units: retry later"
                )

    def _attempt(self, fn, writing, confirm, deadline):
        """One transaction -> (committed, fn's result). Raises what `fn` raises, or a lost
        connection when nothing was applied."""
        tx = RedisTransaction(self._conn, self.address.prefix)
        confirming = writing and confirm and self.address.min_replicas > 0
        try:
            result = fn(tx)
        except _LOST:
            raise
        except BaseException as error:
            if not self._abandon(tx):
                return False, None  # it raised on reads that changed under it: run it again
            if confirming and isinstance(error, RegistryError):
                # A refusal may rest on a change not yet confirmed: it confirms what it read.
                self._wait_for_replicas(deadline, [_set_receipt(self._receipt())])
            raise
        # So may the answer of a write that changed nothing.
        durable = confirming and (tx.durable or not tx.commands)
        if not (tx.commands or durable):
            return tx.commit(), result  # an empty EXEC: were the reads one snapshot?
        if not writing:
            raise RuntimeError("a read must not write; use Store.write")
        receipt = self._receipt()
        if self._renumber and tx.audited:
            tx.commands.insert(0, ("INCRBY", f"{self.address.prefix}audit-seq", AUDIT_SEQ_GAP))
        try:
            committed = tx.commit(receipt)
        except TooFewReplicas:
            raise  # refused before EXEC: nothing applied
        except _LOST:
            self._renumber = True
            return self._receipt_found(receipt, deadline, durable), result
        if committed and durable:
            try:
                self._wait_for_replicas(deadline)
            except _LOST:  # EXEC ran there: does the primary of now have it?
                self._renumber = True
                return self._receipt_found(receipt, deadline, durable), result
        self._renumber = self._renumber and not (committed and tx.audited)
        return committed, result

    def _receipt(self):
        """(key, number) marking this store's next commit."""
        return self._receipt_key, str(next(self._commits))

    def _abandon(self, tx):
        try:
            return tx.abandon()
        except _LOST:
            return True  # a new connection watches nothing; the refusal stands

    def _wait_for_replicas(self, deadline, commands=()):
        """Send `commands`, then WAIT until `min_replicas` replicas have this connection's
        writes so far. Fewer in time raise StoreUnavailable: the last commit is on the primary,
        not known to outlive it. With Sentinel, the server must also still be the one they
        name as primary, or the connection is closed as lost: a replica that confirmed may be
        about to follow a primary promoted meanwhile, and the caller finds out on that one
        whether the commit is there (its receipt)."""
        needed = self.address.min_replicas
        wait_s = max(0.001, min(REPLICA_WAIT_S, deadline - time.monotonic()))
        replies = _roundtrip(self._conn, [*commands, ("WAIT", needed, round(wait_s * 1000))])
        _refused(commands, replies[:-1])
        if replies[-1] < needed:
            self._disconnect()  # this primary may be stale: ask the Sentinels again
            raise StoreUnavailable(
                f"the registry store at {self.address} took the change, but {replies[-1]} of "
                f"the {needed} replicas it waits for (min_replicas) confirmed it within "
                f"{wait_s:g} s; the change may or may not stand: read the state before "
                "repeating it, or retry with the same Idempotency-Key, which is safe"
            )
        if self._sentinels is not None:
            named = self._sentinels.discover_master(self.address.service)
            if named != (self._conn.host, self._conn.port):
                self._disconnect()
                raise LostConnection(
                    f"the Sentinels name {named[0]}:{named[1]} as primary, not "
                    f"{self._conn.host}:{self._conn.port}"
                )

    def _receipt_found(self, receipt, deadline, durable):
        """After losing the connection during a commit: did the commit happen? If `durable`,
        one found on the primary of now is confirmed there, by writing its receipt again
        (replicated in order: a replica with that write has the commit too)."""
        key, number = receipt
        outages = Backoff(deadline, *OUTAGE_PAUSES_S, self.retries, "outage")
        while True:
            try:
                found = _roundtrip(self._conn, [("GET", key)])[0] == number
                if found and durable:
                    self._wait_for_replicas(deadline, [_set_receipt(receipt)])
                return found
            except _LOST as error:
                self._renumber = True
                if not outages.wait():
                    raise StoreUnavailable(
                        f"lost the registry store at {self.address} while committing and could "
                        f"not reach it again within {self.retry_s:g} s ({error}); the change may "
                        "or may not have been applied: read the state before repeating it"
                    ) from error

    def _disconnect(self):
        self._conn.disconnect()
        self._renumber = True
