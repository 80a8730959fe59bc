"""Run `qrfleet serve` as a separate process, the way an operator starts it."""

import os
import selectors
import signal
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

    def admin(self):
        return ApiClient(self.url, self.admin_token)

    def client(self, token):
        return ApiClient(self.url, token)

    @property
    def device_url(self):
        return self.url.replace("http://", "ws://") + "/ws/device"


@dataclass
class ServerProcess(Server):
    process: subprocess.Popen = None
    log_path: str = None


def spawn(
    store, admin_token, log_path, server_id=None, heartbeat_s=5, port=0, extra=(), command=None
):
    """Start `qrfleet serve`; `command` is the qrfleet command to run (default: this Python's)."""
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
def running_server(directory, admin_token="admin-secret", store=None, **options):
    """A server on a free loopback port with its own SQLite file (unless `store` is given)."""
    store = store or f"sqlite:///{directory}/qrfleet.db"
    log_path = f"{directory}/server.log"
    proc = spawn(store, admin_token, log_path, **options)
    try:
        yield ServerProcess(read_url(proc), admin_token, proc, log_path)
    finally:
        stop(proc)
