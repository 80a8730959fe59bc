"""The servers and units scenarios run on: one bench per TLS setting, set up when a test first
asks for it and kept for the session.

The bench of the session's own setting (--tls or not) has every unit --board names, real ones
included, online before its first test (real units with --tethered are the tethered bench's).
A test that asks for the other setting (`parametrize("qrfleet_tls", [True], indirect=True)`)
gets a bench of its own: a server of that kind and as many virtual boards as the test wants,
provisioned for it.
"""

from contextlib import ExitStack

import pytest

from tools import release
from tools.background import BackgroundLoop, wait_for
from tools.harness import options
from tools.harness.tether import Route
from tools.harness.units import Unit, VirtualUnit
from tools.serverproc import Server, running_server
from tools.vboard import fleet

_ONLINE_TIMEOUT_S = 60


class Bench:
    def __init__(self, server):
        self.server = server
        self.units = []


class TetheredBench:
    """Units on USB ("link": "usb") and the route between their cashiers' PC and the server:
    their configs and their bridges name the server by the route, so a scenario can cut it."""

    def __init__(self, server, route):
        self.server = server
        self.route = route
        self.units = []

    @property
    def url(self):
        return self.route.url("https" if self.server.url.startswith("https") else "http")

    @property
    def device_url(self):
        return self.url.replace("http", "ws", 1) + "/ws/device"


class Benches:
    def __init__(self, config, tmp_path_factory):
        self.config = config
        self.tmp = tmp_path_factory
        self.session_tls = options.resolve(config, "tls")
        self.logs = tmp_path_factory.mktemp("logs")
        self.loop = BackgroundLoop()
        self._stack = ExitStack()
        self._benches = {}
        self._tethered = {}
        self._boards = []
        # The session's release keys (tools/release.py): its servers take releases signed with
        # either, its units trust only the first. The second is what a taken server could sign
        # with: units must refuse what it signs.
        keys = tmp_path_factory.mktemp("release-keys")
        self.release_key, self.server_only_key = keys / "release", keys / "server-only"
        for key in (self.release_key, self.server_only_key):
            release.keygen(key)

    def close(self):
        try:
            self.loop.run(_stop_all(self._boards), timeout=120)
        finally:
            try:
                self._stack.close()  # servers, and routes, which need the loop
            finally:
                self.loop.close()

    def server(self, tls):
        bench = self._benches.get(tls)
        if bench is None:
            bench = self._benches[tls] = Bench(self._start_server(tls))
        return bench.server

    def units(self, tls, virtual):
        """The bench's units, all online: every unit of the session for the session's own
        setting, else at least `virtual` virtual boards."""
        server = self.server(tls)
        bench = self._benches[tls]
        if tls == self.session_tls and not options.resolve(self.config, "tethered"):
            if not bench.units:
                bench.units += self._real(server, [server.url])
        have = sum(isinstance(u, VirtualUnit) for u in bench.units)
        if virtual > have:
            bench.units += self._boot(server, [server.url], virtual - have)
        wait_online(server.admin(), (u.id for u in bench.units))
        return bench.units

    def tethered(self, tls):
        """The tethered bench of this TLS setting, with the session's real units when they are
        --tethered; kept for the session."""
        bench = self._tethered.get(tls)
        if bench is None:
            server = self.server(tls)
            host, port = server.url.rsplit("/", 1)[-1].rsplit(":", 1)
            route = Route(self.loop, host, int(port))
            self._stack.callback(route.close)
            bench = self._tethered[tls] = TetheredBench(server, route)
            if tls == self.session_tls and options.resolve(self.config, "tethered"):
                bench.units += self._real(server, [bench.url], link="usb")
        return bench

    def tethered_units(self, bench, count):
        """The bench's units, at least `count` virtual boards on USB unless it has real ones.
        None is online until a bridge runs for it."""
        have = len(bench.units)
        if count > have and not options.resolve(self.config, "tethered"):
            bench.units += self._boot(bench.server, [bench.url], count - have, link="usb")
        return bench.units

    def power_off_tethered(self):
        """Stop the tethered benches' virtual boards once their scenarios are done: idle boards
        would cost the rest of the run CPU it has none to spare of."""
        units = [u for bench in self._tethered.values() for u in bench.units]
        self.loop.run(_stop_all([u.board for u in units if isinstance(u, VirtualUnit)]), 120)
        for bench in self._tethered.values():
            bench.units = [u for u in bench.units if not isinstance(u, VirtualUnit)]

    def _real(self, server, urls, link="wifi"):
        _, ports = options.parse_boards(options.resolve(self.config, "board"))
        return [
            Unit(device_id, port, self.logs)
            for device_id, port in _real_units(
                self.config, server, urls, ports, self.release_key, link
            )
        ]

    def _boot(self, server, urls, count, link="wifi"):
        provisioning = fleet.Provisioning(
            urls,
            server.admin_token,
            server_ca=server.ca_file,
            release_keys=(_pub(self.release_key),),
            link=link,
        )
        boards = self.loop.run(
            fleet.start_boards(
                self.tmp.mktemp("boards"),
                count,
                heap=options.resolve(self.config, "heap"),
                provisioning=provisioning,
                flash_size=options.resolve(self.config, "flash_size"),
                variant=options.resolve(self.config, "variant"),
            ),
            timeout=300,
        )
        self._boards += boards
        return [VirtualUnit(b, self.loop, self.logs) for b in boards]

    def _start_server(self, tls):
        token = options.resolve(self.config, "admin_token")
        external = options.resolve(self.config, "server")
        if external:
            if external.startswith("https://") != tls:
                pytest.skip(f"this test wants {'an https' if tls else 'a plain http'}:// server")
            return Server(external.rstrip("/"), token, options.resolve(self.config, "server_ca"))
        directory = self.tmp.mktemp("server-tls" if tls else "server")
        store = options.resolve(self.config, "store")
        store_url = None
        if store == "redis":
            from tools.valkey import ValkeyServer

            valkey = ValkeyServer()
            valkey.start()
            self._stack.callback(valkey.stop)
            store_url = valkey.url()
        elif store != "sqlite":
            raise pytest.UsageError(f"--store {store}: use sqlite or redis")
        certificate, ca_file = None, None
        if tls:
            from tools.certs import CertificateAuthority

            ca = CertificateAuthority(directory, "harness")
            certificate, ca_file = ca.issue(), ca.pem
        return self._stack.enter_context(
            running_server(
                directory,
                token,
                store=store_url,
                heartbeat_s=2,
                tls=certificate,
                ca_file=ca_file,
                extra=[
                    arg
                    for key in (self.release_key, self.server_only_key)
                    for arg in ("--release-key", _pub(key))
                ],
            )
        )


def _pub(key):
    return f"{key}.pub"


def _real_units(config, server, urls, ports, release_key, link):
    """(device id, serial URL) of each real unit; with --flash, flashed and provisioned for
    this session's server first (tools/flash.py, tools/provision.py), reaching it by `urls`
    over `link`."""
    from firmware.config import device_id
    from tools import flash, image, provision

    found = []
    firmware = options.resolve(config, "firmware")
    wifi = None
    if options.resolve(config, "wifi_ssid"):
        wifi = {
            "ssid": options.resolve(config, "wifi_ssid"),
            "password": options.resolve(config, "wifi_password") or "",
        }
    for spec in ports:
        port = options.resolve_port(spec)
        if options.resolve(config, "flash"):
            if firmware:
                with open(firmware, "rb") as f:
                    flash.flash_firmware(port, f.read(), image.board_files(target="esp32"))
            order = provision.Order(
                urls,
                server.admin_token,
                wifi=wifi if link == "wifi" else None,
                link=link,
                force=True,
                server_ca=str(server.ca_file) if server.ca_file else None,
                release_keys=(_pub(release_key),),
            )
            found.append((provision.provision_unit(port, order).device_id, port))
        else:
            with flash.open_unit(port) as unit:
                found.append((device_id(unit.mac), port))
                unit.hard_reset()
    return found


async def _stop_all(boards):
    for board in boards:
        if board.mode != "off":
            await board.stop()


def wait_online(admin, ids, timeout=_ONLINE_TIMEOUT_S):
    """Until every unit of `ids` (device ids) is online."""
    ids = set(ids)
    wait_for(
        lambda: (
            ids
            <= {
                d["device_id"]
                for d in admin.get("/api/devices")["devices"]
                if d["status"] == "online"
            }
        ),
        timeout,
        "units online",
    )
