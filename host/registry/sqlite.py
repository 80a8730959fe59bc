"""The embedded store: one SQLite file, the default for a single server.

URL: `sqlite:///PATH`, everything after the third slash being the path (as in
SQLAlchemy): `sqlite:///qrfleet.db` is relative to the working directory,
`sqlite:////var/lib/qrfleet/registry.db` is absolute.

How it stays correct under concurrency:

- WAL journaling: readers never block the writer and see a committed snapshot.
- Every write is one `BEGIN IMMEDIATE` transaction: it takes the write lock
  before its first read, so a read-modify-write never races another writer,
  in this process or another one on the same file.
- `busy_timeout` lets SQLite wait for the lock; past it, or when a snapshot
  turns stale, the whole transaction is retried with jittered backoff for up
  to `RETRY_S` from the call. Only then does the caller see
  `StoreUnavailable`, never SQLITE_BUSY.
- Constraints back the rules: a device has one link row (primary key), a
  device and a transaction one reservation row (unique, primary key), a token
  hash one agent (unique), a version one release (primary key), and at most
  one rollout is active (a partial unique index); `put_lease` and
  `put_instance` update only to an epoch no lower than the stored one. A write
  that would break one raises the store's `IntegrityError`, whatever a rule
  might do.

Threading: each store owns one worker thread (`Store`), and the connection
lives in it. SQLite admits one writer at a time anyway, so more threads in one
process would only queue on the file lock by polling it; one thread queues
this process's operations in order without polling, keeps `sqlite3`'s
one-connection-per-thread rule trivially, and leaves lock waits to the cases
that need them (other processes). Operations are sub-millisecond, so reads
share the thread.

Durability: `synchronous=FULL`, so a committed link or reservation survives
power loss, not only a crash of the server process.

Device secrets are stored as given: the server must compute
HMAC-SHA256(secret, nonce || device_id) to check a unit's answer to its
challenge, which a one-way hash would not allow. Encryption at rest is out of
scope; protect the file like a key file (the store creates it mode 0600).
"""

import json
import os
import sqlite3
from urllib.parse import unquote

from host.registry.errors import InvalidInput, StoreUnavailable
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

BUSY_TIMEOUT_MS = 5000
RETRY_S = 30.0
BUSY_PAUSES_S = (0.001, 0.05)  # first and longest pause between attempts

# Migrations, in order; the database's `PRAGMA user_version` counts those applied.
MIGRATIONS = (
    (
        """CREATE TABLE locations (
            location_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            policy TEXT NOT NULL CHECK (policy IN ('strict', 'pool', 'hybrid')))""",
        """CREATE TABLE agents (
            agent_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            location_id TEXT NOT NULL REFERENCES locations,
            token_hash TEXT NOT NULL UNIQUE)""",
        """CREATE TABLE devices (
            device_id TEXT PRIMARY KEY,
            secret TEXT NOT NULL,
            name TEXT,
            location_id TEXT REFERENCES locations,
            firmware TEXT,
            registered_at REAL,
            last_seen REAL,
            last_screen TEXT,
            panel TEXT)""",
        "CREATE INDEX devices_by_location ON devices (location_id)",
        """CREATE TABLE links (
            device_id TEXT PRIMARY KEY REFERENCES devices,
            agent_id TEXT NOT NULL REFERENCES agents,
            linked_at REAL NOT NULL)""",
        "CREATE INDEX links_by_agent ON links (agent_id)",
        """CREATE TABLE pairing_codes (
            device_id TEXT PRIMARY KEY REFERENCES devices,
            code TEXT NOT NULL,
            expires_at REAL NOT NULL)""",
        """CREATE TABLE leases (
            device_id TEXT PRIMARY KEY REFERENCES devices,
            server_id TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            expires_at REAL NOT NULL)""",
        """CREATE TABLE reservations (
            txn_id TEXT PRIMARY KEY,
            device_id TEXT NOT NULL UNIQUE REFERENCES devices,
            agent_id TEXT NOT NULL REFERENCES agents,
            server_id TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL)""",
        """CREATE TABLE wait_queue (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            ticket_id TEXT NOT NULL UNIQUE,
            location_id TEXT NOT NULL REFERENCES locations,
            agent_id TEXT NOT NULL REFERENCES agents,
            expires_at REAL NOT NULL)""",
        "CREATE INDEX wait_queue_by_location ON wait_queue (location_id, seq)",
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            device_id TEXT,
            agent_id TEXT,
            txn_id TEXT,
            detail TEXT)""",
        "CREATE INDEX audit_by_device ON audit (device_id, seq)",
        "CREATE INDEX audit_by_agent ON audit (agent_id, seq)",
    ),
    (
        """CREATE TABLE instances (
            server_id TEXT PRIMARY KEY,
            epoch INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            units INTEGER NOT NULL)""",
        """CREATE TABLE idempotent_requests (
            caller TEXT NOT NULL,
            key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            txn_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            status INTEGER,
            response TEXT,
            PRIMARY KEY (caller, key))""",
        "CREATE INDEX idempotent_requests_by_age ON idempotent_requests (caller, created_at)",
        "CREATE INDEX idempotent_requests_by_expiry ON idempotent_requests (expires_at)",
        """CREATE TABLE superseded (
            txn_id TEXT PRIMARY KEY,
            by_txn_id TEXT NOT NULL,
            expires_at REAL NOT NULL)""",
    ),
    (
        "ALTER TABLE devices ADD COLUMN shown TEXT",
        "ALTER TABLE devices ADD COLUMN reset_cause TEXT",
    ),
    (
        "ALTER TABLE devices ADD COLUMN update_status TEXT",
        """CREATE TABLE releases (
            version TEXT PRIMARY KEY,
            bundle BLOB NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            published_at REAL NOT NULL)""",
        """CREATE TABLE rollouts (
            rollout_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            record TEXT NOT NULL)""",
        # At most one rollout running or paused: a second one would violate this index.
        "CREATE UNIQUE INDEX one_active_rollout ON rollouts ((state IN ('running', 'paused'))) "
        "WHERE state IN ('running', 'paused')",
    ),
    ("ALTER TABLE devices ADD COLUMN via TEXT",),
)
SCHEMA_VERSION = len(MIGRATIONS)

_DEVICE_COLUMNS = (
    "device_id, name, location_id, firmware, registered_at, last_seen, last_screen, panel, "
    "shown, reset_cause, update_status, via"
)


def path_from_url(url):
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise InvalidInput(
            f"{url!r} is not a SQLite store URL; use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    return unquote(url[len(prefix) :])


def _is_busy(error):
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(error) or "busy" in str(error)


def _json(value):
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def _unjson(text):
    return None if text is None else json.loads(text)


def _device(row):
    return Device(
        *row[:6],
        _unjson(row[6]),
        _unjson(row[7]),
        _unjson(row[8]),
        row[9],
        _unjson(row[10]),
        row[11],
    )


def _request(row):
    return IdempotentRequest(*row[:7], _unjson(row[7]))


class SqliteTransaction(Transaction):
    def __init__(self, db):
        self._db = db

    def _execute(self, sql, args):
        try:
            return self._db.execute(sql, args)
        except sqlite3.IntegrityError as error:
            raise IntegrityError(f"the registry database refused a write ({error})") from error

    def _one(self, sql, *args):
        return self._execute(sql, args).fetchone()

    def _all(self, sql, *args):
        return self._execute(sql, args).fetchall()

    # Locations

    def location(self, location_id):
        row = self._one(
            "SELECT location_id, name, policy FROM locations WHERE location_id = ?", location_id
        )
        return None if row is None else Location(*row)

    def locations(self):
        rows = self._all("SELECT location_id, name, policy FROM locations ORDER BY location_id")
        return [Location(*row) for row in rows]

    def put_location(self, location):
        self._execute(
            "INSERT INTO locations VALUES (?, ?, ?) ON CONFLICT (location_id) "
            "DO UPDATE SET name = excluded.name, policy = excluded.policy",
            (location.location_id, location.name, location.policy),
        )

    # Agents

    _AGENT = "SELECT agent_id, name, location_id, token_hash FROM agents"

    def agent(self, agent_id):
        row = self._one(f"{self._AGENT} WHERE agent_id = ?", agent_id)
        return None if row is None else Agent(*row)

    def agent_by_token_hash(self, token_hash):
        row = self._one(f"{self._AGENT} WHERE token_hash = ?", token_hash)
        return None if row is None else Agent(*row)

    def agents(self, location_id=None):
        if location_id is None:
            rows = self._all(f"{self._AGENT} ORDER BY agent_id")
        else:
            rows = self._all(f"{self._AGENT} WHERE location_id = ? ORDER BY agent_id", location_id)
        return [Agent(*row) for row in rows]

    def put_agent(self, agent):
        self._execute(
            "INSERT INTO agents VALUES (?, ?, ?, ?) ON CONFLICT (agent_id) DO UPDATE SET "
            "name = excluded.name, location_id = excluded.location_id, "
            "token_hash = excluded.token_hash",
            (agent.agent_id, agent.name, agent.location_id, agent.token_hash),
        )

    # Devices

    def device(self, device_id):
        row = self._one(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = ?", device_id)
        return None if row is None else _device(row)

    def devices(self, location_id=None):
        if location_id is None:
            rows = self._all(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY device_id")
        else:
            rows = self._all(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE location_id = ? ORDER BY device_id",
                location_id,
            )
        return [_device(row) for row in rows]

    def device_secret(self, device_id):
        row = self._one("SELECT secret FROM devices WHERE device_id = ?", device_id)
        return None if row is None else row[0]

    def put_device(self, device, secret=None):
        values = (
            device.device_id,
            device.name,
            device.location_id,
            device.firmware,
            device.registered_at,
            device.last_seen,
            _json(device.last_screen),
            _json(device.panel),
            _json(device.shown),
            device.reset_cause,
            _json(device.update),
            device.via,
        )
        if secret is None:
            self._execute(
                "UPDATE devices SET name = ?, location_id = ?, firmware = ?, registered_at = ?, "
                "last_seen = ?, last_screen = ?, panel = ?, shown = ?, reset_cause = ?, "
                "update_status = ?, via = ? WHERE device_id = ?",
                values[1:] + values[:1],
            )
        else:
            self._execute(
                f"INSERT INTO devices ({_DEVICE_COLUMNS}, secret) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (device_id) DO UPDATE SET name = excluded.name, "
                "location_id = excluded.location_id, firmware = excluded.firmware, "
                "registered_at = excluded.registered_at, last_seen = excluded.last_seen, "
                "last_screen = excluded.last_screen, panel = excluded.panel, "
                "shown = excluded.shown, reset_cause = excluded.reset_cause, "
                "update_status = excluded.update_status, via = excluded.via, "
                "secret = excluded.secret",
                values + (secret,),
            )

    # Links

    def owner(self, device_id):
        row = self._one("SELECT agent_id FROM links WHERE device_id = ?", device_id)
        return None if row is None else row[0]

    def linked_devices(self, agent_id):
        rows = self._all(
            "SELECT device_id FROM links WHERE agent_id = ? ORDER BY device_id", agent_id
        )
        return [row[0] for row in rows]

    def pool_devices(self, location_id):
        rows = self._all(
            "SELECT d.device_id FROM devices d LEFT JOIN links l USING (device_id) "
            "WHERE d.location_id = ? AND l.device_id IS NULL ORDER BY d.device_id",
            location_id,
        )
        return [row[0] for row in rows]

    def put_link(self, device_id, agent_id, at):
        # A plain INSERT: a second owner would violate the primary key, not replace the first.
        self._execute("INSERT INTO links VALUES (?, ?, ?)", (device_id, agent_id, at))

    def delete_link(self, device_id):
        self._execute("DELETE FROM links WHERE device_id = ?", (device_id,))

    # Pairing codes

    def pairing_code(self, device_id):
        row = self._one(
            "SELECT device_id, code, expires_at FROM pairing_codes WHERE device_id = ?", device_id
        )
        return None if row is None else PairingCode(*row)

    def put_pairing_code(self, pairing_code):
        self._execute(
            "INSERT OR REPLACE INTO pairing_codes VALUES (?, ?, ?)",
            (pairing_code.device_id, pairing_code.code, pairing_code.expires_at),
        )

    def delete_pairing_code(self, device_id):
        self._execute("DELETE FROM pairing_codes WHERE device_id = ?", (device_id,))

    def delete_expired_pairing_codes(self, now):
        return self._execute("DELETE FROM pairing_codes WHERE expires_at <= ?", (now,)).rowcount

    # Leases

    def lease(self, device_id):
        row = self._one(
            "SELECT device_id, server_id, epoch, expires_at FROM leases WHERE device_id = ?",
            device_id,
        )
        return None if row is None else Lease(*row)

    def put_lease(self, lease):
        # An epoch lower than the stored one leaves the row as it is, and that is refused.
        changed = self._execute(
            "INSERT INTO leases VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
            "server_id = excluded.server_id, epoch = excluded.epoch, "
            "expires_at = excluded.expires_at WHERE excluded.epoch >= leases.epoch",
            (lease.device_id, lease.server_id, lease.epoch, lease.expires_at),
        ).rowcount
        if not changed:
            stored = self.lease(lease.device_id).epoch
            raise IntegrityError(
                f"epoch of unit {lease.device_id} would go back from {stored} to {lease.epoch}"
            )

    # Instances

    _INSTANCE = "SELECT server_id, epoch, expires_at, units FROM instances"

    def instance(self, server_id):
        row = self._one(f"{self._INSTANCE} WHERE server_id = ?", server_id)
        return None if row is None else Instance(*row)

    def instances(self):
        return [Instance(*row) for row in self._all(f"{self._INSTANCE} ORDER BY server_id")]

    def put_instance(self, instance):
        # As for leases: an epoch lower than the stored one changes nothing, and is refused.
        changed = self._execute(
            "INSERT INTO instances VALUES (?, ?, ?, ?) ON CONFLICT (server_id) DO UPDATE SET "
            "epoch = excluded.epoch, expires_at = excluded.expires_at, units = excluded.units "
            "WHERE excluded.epoch >= instances.epoch",
            (instance.server_id, instance.epoch, instance.expires_at, instance.units),
        ).rowcount
        if not changed:
            stored = self.instance(instance.server_id).epoch
            raise IntegrityError(
                f"epoch of instance {instance.server_id} would go back from {stored} to "
                f"{instance.epoch}"
            )

    # Reservations

    _RESERVATION = (
        "SELECT txn_id, device_id, agent_id, server_id, epoch, created_at, expires_at "
        "FROM reservations"
    )

    def reservation(self, txn_id):
        row = self._one(f"{self._RESERVATION} WHERE txn_id = ?", txn_id)
        return None if row is None else Reservation(*row)

    def reservation_of(self, device_id):
        row = self._one(f"{self._RESERVATION} WHERE device_id = ?", device_id)
        return None if row is None else Reservation(*row)

    def reservations(self):
        return [Reservation(*row) for row in self._all(f"{self._RESERVATION} ORDER BY txn_id")]

    def put_reservation(self, reservation):
        # A plain INSERT: a second reservation of a device violates the unique constraint.
        self._execute(
            "INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                reservation.txn_id,
                reservation.device_id,
                reservation.agent_id,
                reservation.server_id,
                reservation.epoch,
                reservation.created_at,
                reservation.expires_at,
            ),
        )

    def delete_reservation(self, txn_id):
        self._execute("DELETE FROM reservations WHERE txn_id = ?", (txn_id,))

    def superseded(self, txn_id):
        row = self._one(
            "SELECT txn_id, by_txn_id, expires_at FROM superseded WHERE txn_id = ?", txn_id
        )
        return None if row is None else SupersededTxn(*row)

    def put_superseded(self, superseded):
        self._execute(
            "INSERT OR REPLACE INTO superseded VALUES (?, ?, ?)",
            (superseded.txn_id, superseded.by_txn_id, superseded.expires_at),
        )

    def delete_expired_superseded(self, now):
        return self._execute("DELETE FROM superseded WHERE expires_at <= ?", (now,)).rowcount

    # Requests with an idempotency key

    _REQUEST = (
        "SELECT caller, key, fingerprint, txn_id, created_at, expires_at, status, response "
        "FROM idempotent_requests"
    )

    def idempotent_request(self, caller, key):
        row = self._one(f"{self._REQUEST} WHERE caller = ? AND key = ?", caller, key)
        return None if row is None else _request(row)

    def oldest_idempotent_requests(self, caller, limit):
        rows = self._all(
            f"{self._REQUEST} WHERE caller = ? ORDER BY created_at, key LIMIT ?", caller, limit
        )
        return [_request(row) for row in rows]

    def count_idempotent_requests(self, caller):
        return self._one("SELECT COUNT(*) FROM idempotent_requests WHERE caller = ?", caller)[0]

    def put_idempotent_request(self, request):
        r = request
        self._execute(
            "INSERT OR REPLACE INTO idempotent_requests VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                r.caller,
                r.key,
                r.fingerprint,
                r.txn_id,
                r.created_at,
                r.expires_at,
                r.status,
                _json(r.response),
            ),
        )

    def delete_idempotent_request(self, caller, key):
        self._execute("DELETE FROM idempotent_requests WHERE caller = ? AND key = ?", (caller, key))

    def delete_expired_idempotent_requests(self, now):
        return self._execute(
            "DELETE FROM idempotent_requests WHERE expires_at <= ?", (now,)
        ).rowcount

    # Wait queue

    _TICKET = "SELECT ticket_id, location_id, agent_id, expires_at FROM wait_queue"

    def tickets(self, location_id=None):
        if location_id is None:
            rows = self._all(f"{self._TICKET} ORDER BY seq")
        else:
            rows = self._all(f"{self._TICKET} WHERE location_id = ? ORDER BY seq", location_id)
        return [Ticket(*row) for row in rows]

    def push_ticket(self, ticket):
        self._execute(
            "INSERT INTO wait_queue (ticket_id, location_id, agent_id, expires_at) "
            "VALUES (?, ?, ?, ?)",
            (ticket.ticket_id, ticket.location_id, ticket.agent_id, ticket.expires_at),
        )

    def delete_ticket(self, ticket_id):
        self._execute("DELETE FROM wait_queue WHERE ticket_id = ?", (ticket_id,))

    # Releases

    def release(self, version):
        row = self._one("SELECT bundle FROM releases WHERE version = ?", version)
        return None if row is None else bytes(row[0])

    def releases(self):
        rows = self._all(
            "SELECT version, size, sha256, published_at FROM releases ORDER BY version"
        )
        return [PublishedRelease(*row) for row in rows]

    def put_release(self, release, bundle):
        # A plain INSERT: a version's bundle is never replaced.
        r = release
        self._execute(
            "INSERT INTO releases VALUES (?, ?, ?, ?, ?)",
            (r.version, bundle, r.size, r.sha256, r.published_at),
        )

    # Rollouts

    def rollout(self, rollout_id):
        row = self._one("SELECT record FROM rollouts WHERE rollout_id = ?", rollout_id)
        return None if row is None else Rollout.from_json(row[0])

    def rollouts(self):
        rows = self._all("SELECT record FROM rollouts ORDER BY rollout_id")
        return [Rollout.from_json(row[0]) for row in rows]

    def put_rollout(self, rollout):
        self._execute(
            "INSERT INTO rollouts VALUES (?, ?, ?) ON CONFLICT (rollout_id) "
            "DO UPDATE SET state = excluded.state, record = excluded.record",
            (rollout.rollout_id, rollout.state, rollout.to_json()),
        )

    # Audit

    def append_audit(
        self, at, actor, action, device_id=None, agent_id=None, txn_id=None, detail=None
    ):
        self._execute(
            "INSERT INTO audit (at, actor, action, device_id, agent_id, txn_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (at, actor, action, device_id, agent_id, txn_id, detail),
        )

    def audit(self, device_id=None, agent_id=None, limit=100):
        where, args = [], []
        if device_id is not None:
            where.append("device_id = ?")
            args.append(device_id)
        if agent_id is not None:
            where.append("agent_id = ?")
            args.append(agent_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._all(
            "SELECT seq, at, actor, action, device_id, agent_id, txn_id, detail FROM audit "
            f"{clause} ORDER BY seq DESC LIMIT ?",
            *args,
            limit,
        )
        return [AuditEntry(*row) for row in reversed(rows)]

    def audit_after(self, seq, limit):
        rows = self._all(
            "SELECT seq, at, actor, action, device_id, agent_id, txn_id, detail FROM audit "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            seq,
            limit,
        )
        return [AuditEntry(*row) for row in rows]


class SqliteStore(Store):
    def __init__(self, url):
        self.path = path_from_url(url)
        self._db = None
        super().__init__(RETRY_S)

    def _connect(self, deadline):
        try:
            # Created private before SQLite creates it: the file holds unit secrets.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise StoreUnavailable(
                f"cannot open the registry database {self.path} ({error}); check the path and "
                "its permissions"
            ) from error
        self._db = db
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self._retrying(
            lambda: db.execute("PRAGMA journal_mode = WAL").fetchone()[0], deadline
        )
        if mode != "wal":
            raise StoreUnavailable(
                f"the registry database {self.path} cannot use WAL journaling (got {mode}); "
                "put it on a local filesystem"
            )
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        self._retrying(self._migrate, deadline)

    def _migrate(self):
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"the registry database {self.path} has schema version {version}, newer than "
                    f"this qrfleet knows ({SCHEMA_VERSION}); upgrade qrfleet"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _retrying(self, attempt, deadline):
        """Run `attempt` until it gets past SQLITE_BUSY, or until `deadline`."""
        backoff = Backoff(deadline, *BUSY_PAUSES_S, self.retries, "busy")
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as error:
                if not _is_busy(error):
                    raise
                if not backoff.wait():
                    raise StoreUnavailable(
                        f"the registry database {self.path} stayed locked for "
                        f"{self.retry_s:g} s; another process holds a long transaction on it"
                    ) from error

    def _transaction(self, begin, fn):
        db = self._db
        db.execute(begin)
        try:
            result = fn(SqliteTransaction(db))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    def _run(self, fn, writing, deadline):
        begin = "BEGIN IMMEDIATE" if writing else "BEGIN"
        return self._retrying(lambda: self._transaction(begin, fn), deadline)

    def _disconnect(self):
        if self._db is not None:
            self._db.close()
            self._db = None
