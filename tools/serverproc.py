"""Run `qrfleet serve` as a separate process, the way an operator starts it."""

import os
import selectors
import signal
import ssl
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

from host.client import ApiClient
from tools.micropython import REPO_ROOT


@dataclass
class Server:
    """Where a server is and how to talk to it as its admin or as an agent."""

    url: str
    admin_token: str
    ca_file: str = None  # the CA that signed an https:// server's certificate

    def admin(self):
        return self.client(self.admin_token)

    def client(self, token):
        return ApiClient(self.url, token, ssl_context=self.ssl_context())

    def ssl_context(self):
        """A client context trusting `ca_file` (None: the system's CAs, or plain http)."""
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None

    @property
    def device_url(self):
        return self.url.replace("http", "ws", 1) + "/ws/device"  # https:// -> wss://


@dataclass
class ServerProcess(Server):
    process: subprocess.Popen = None
    log_path: str = None


def spawn(
    store,
    admin_token,
    log_path,
    server_id=None,
    heartbeat_s=5,
    port=0,
    extra=(),
    command=None,
    tls=None,
):
    """Start `qrfleet serve`; `command` is the qrfleet command to run (default: this Python's),
    `tls` a (certificate, key) pair of PEM files to serve https:// and wss://."""
    argv = [
        *(command or (sys.executable, "-m", "qrfleet")),
        "serve",
        "--port",
        str(port),
        "--store",
        store,
        "--heartbeat",
        str(heartbeat_s),
        *extra,
    ]
    if server_id:
        argv += ["--server-id", server_id]
    if tls:
        argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    env = dict(os.environ, QRFLEET_ADMIN_TOKEN=admin_token)
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=env,
        )


def read_url(proc, timeout=30):
    """The first line `qrfleet serve` prints: its URL."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = b""
        deadline = time.monotonic() + timeout
        while not line.endswith(b"\n"):
            if proc.poll() is not None:
                raise RuntimeError(f"qrfleet serve exited with {proc.returncode}")
            if not sel.select(max(0, deadline - time.monotonic())):
                raise TimeoutError("qrfleet serve printed no URL")
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                raise RuntimeError("qrfleet serve closed its output")
            line += chunk
    return line.decode().strip()


def stop(proc, timeout=10):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()


@contextmanager
def running_server(directory, admin_token="admin-secret", store=None, ca_file=None, **options):
    """A server on a free loopback port with its own SQLite file (unless `store` is given);
    `ca_file` is the CA its clients trust when it serves TLS (`tls=(cert, key)`)."""
    store = store or f"sqlite:///{directory}/qrfleet.db"
    log_path = f"{directory}/server.log"
    proc = spawn(store, admin_token, log_path, **options)
    try:
        yield ServerProcess(read_url(proc), admin_token, ca_file, proc, log_path)
    finally:
        stop(proc)
