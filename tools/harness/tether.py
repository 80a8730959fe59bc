"""What the tethered scenarios run besides the units: `qrfleet bridge` as a process of its own,
as it runs on a cashier's PC, and the PC's route to the server, which a scenario can cut.

    route = Route(loop, "127.0.0.1", server_port)     # units and bridges use route.url
    bridge = BridgeProcess([unit.serial_url], [route.device_url], log_dir / "bridge.log")
    bridge.start(); bridge.sleep(); bridge.wake(); bridge.kill()
    route.cut(); route.restore()
"""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tools.harness.units import VirtualUnit

_STOP_TIMEOUT_S = 10


class Forwarder:
    """A TCP forwarder listening on a loopback port (`port`, 0: one of its own): each connection
    is copied byte for byte to `target` (host, port) until `divert()` sends the new ones
    elsewhere and drops the current ones. start() and stop() run on the event loop."""

    def __init__(self, target, port=0):
        self.target = target
        self.port = port
        self._server = None
        self._pairs = set()

    async def start(self):
        self._server = await asyncio.start_server(
            self._forward, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self):
        """Stop listening and drop every connection: a connect is refused, as over a lost
        route."""
        server, self._server = self._server, None
        self.divert(self.target)
        if server:
            server.close()
            await server.wait_closed()

    @property
    def listening(self):
        return self._server is not None

    def divert(self, target):
        self.target = target
        for writer in list(self._pairs):
            writer.transport.abort()
        self._pairs.clear()

    async def _forward(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._pairs.update((writer, up_writer))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._pairs.difference_update((writer, up_writer))


async def pipe(reader, writer):
    """Copy `reader` to `writer` until either end goes, then close `writer`."""
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


class Route:
    """The network between the cashier's PC and the server: a Forwarder to the server, driven
    from the harness's thread. `cut()` drops every connection and stops listening, so a connect
    is refused as over a lost route; `restore()` listens on the same port again."""

    def __init__(self, loop, host, port):
        self.loop = loop
        self._forwarder = Forwarder((host, port))
        self.restore()

    @property
    def port(self):
        return self._forwarder.port

    def url(self, scheme):
        """The server's URL through this route (scheme "http" / "https")."""
        return f"{scheme}://127.0.0.1:{self.port}"

    def cut(self):
        self.loop.run(self._forwarder.stop())

    def restore(self):
        if not self._forwarder.listening:
            self.loop.run(self._forwarder.start())

    close = cut


class BridgeProcess:
    """`qrfleet bridge` for some serial ports, started and stopped as a scenario wants it."""

    def __init__(self, ports, servers, log_path, server_ca=None, name="till-pc"):
        self.name = name
        self.argv = [sys.executable, "-m", "qrfleet", "bridge", "--name", name]
        for port in ports:
            self.add_port(port)
        for url in servers:
            self.argv += ["--server", url]
        if server_ca:
            self.argv += ["--server-ca", str(server_ca)]
        self.log_path = Path(log_path)
        self.process = None

    def add_port(self, port):
        """Serve `port` too, from the next start() on (a virtual board's is known once it runs)."""
        self.argv += ["--port", port]

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return self

    def stop(self):
        """Stopped as a service manager stops it (SIGTERM), killed if it lingers."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a sleeping bridge must hear the TERM
            self.process.terminate()
            try:
                self.process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self):
        """The bridge dies at once (a crash, the task killed): no goodbye to anyone."""
        self.process.kill()
        self.process.wait()

    def sleep(self):
        """The PC goes to sleep: the bridge stops where it is, its connections stay open."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def wake(self):
        os.kill(self.process.pid, signal.SIGCONT)

    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text, timeout=20):
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bridge did not log {text!r}:\n{self.log_text()[-2000:]}")
            time.sleep(0.1)


class Tethered:
    """What a tethered scenario asks for: units on USB at its location, and bridges it starts,
    all stopped and plugged back in after it (the `tethered` fixture)."""

    def __init__(self, benches, bench, location, log_dir, release):
        self.benches = benches
        self.bench = bench
        self.route = bench.route
        self.location = location
        self.log_dir = Path(log_dir)
        self._release = release
        self._bridges = []
        self._units = []

    def units(self, count):
        units = self.benches.tethered_units(self.bench, count)
        if len(units) < count:
            import pytest

            pytest.skip(f"this test wants {count} tethered units; the session has {len(units)}")
        self._units = units[:count]
        return self._units

    def bridge(self, units, name="till-pc"):
        """`qrfleet bridge` on the PC `name` for these units' ports, started."""
        process = BridgeProcess(
            [u.serial_url for u in units],
            [self.bench.device_url],
            self.log_dir / f"bridge-{name}.log",
            server_ca=self.bench.server.ca_file,
            name=name,
        )
        self._bridges.append(process)
        return process.start()

    def ready(self, units, timeout=60):
        """Wait until `units` are online, then register them here, unlinked, on the home
        screen, as every scenario starts."""
        from tools.harness.benches import wait_online

        admin = self.bench.server.admin()
        wait_online(admin, (u.id for u in units), timeout)
        for unit in units:
            self._release(admin, unit)
            admin.post("/api/devices", {"device_id": unit.id, "location_id": self.location})
            admin.post(f"/api/devices/{unit.id}/pairing")

    def logs(self):
        """{unit id or bridge name: its log file}, for the run report of a failed scenario."""
        logs = {unit.id: unit.log_path for unit in self._units}
        logs.update({f"bridge {p.name}": p.log_path for p in self._bridges})
        return logs

    def close(self):
        for process in self._bridges:
            process.stop()
        self.route.restore()
        admin = self.bench.server.admin()
        for unit in self._units:
            if isinstance(unit, VirtualUnit):
                unit.plug()
            self._release(admin, unit)
