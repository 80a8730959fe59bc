"""The virtual board's radio: the access point its connections go through, which can be
switched off.

The board's socket.getaddrinfo (tools/vboard/port/socket.py) asks the lookup port for a host
(`HOST PORT tcp\\n`); the radio answers `OK <route>\\n`, where route is a local port of its own
that leads to HOST:PORT, or closes the lookup when the name does not resolve or needs the
network while Wi-Fi is down. Every connection to a route is relayed byte for byte, so TLS
runs end to end. A UDP lookup (`HOST PORT udp\n`) resolves only port 123, NTP, whatever the
host: to the bench's time server (tools/vboard/ntp.py), which answers with the host's time
unless the radio is off or `answers_time` is False (a test withholding it). Switching the
radio off (Wi-Fi down) drops every relayed connection at once and refuses new ones until it
is back, as a unit that lost its access point sees it; `on_change(up)` tells the board
(tools/vboard/signals.py) so that its station leaves too. A radio built without an access point
(a board tethered over USB, far from any Wi-Fi) is off for good: a firmware that tried Wi-Fi
there would find no network.
"""

import asyncio
import contextlib
import ipaddress

from tools.vboard import ntp

_HEADER_LIMIT = 300
_ROUTES_LIMIT = 64  # destinations one board may reach: a cap, far above what the firmware uses


class Radio:
    def __init__(self, on_change=None, access_point=True):
        self._on_change = on_change
        self.access_point = access_point
        self._server = None
        self._routes = {}  # (host, port) -> server relaying to it
        self._links = set()
        self._up = access_point
        self._back = None
        self.port = None
        self.answers_time = True
        self._time_server = None
        self.time_port = None

    async def start(self):
        self._server = await asyncio.start_server(self._lookup, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._time_server, self.time_port = await ntp.start(lambda: self._up and self.answers_time)

    async def stop(self):
        if self._back is not None:
            self._back.cancel()
        self.drop_all()
        self._time_server.close()
        servers = [self._server, *self._routes.values()]
        self._routes.clear()
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

    @property
    def up(self):
        return self._up

    def down_for(self, seconds):
        """Wi-Fi down for `seconds`: every connection drops now, new ones fail until then."""
        if self._back is not None:
            self._back.cancel()
        self._set(False)
        self.drop_all()
        if self.access_point:
            self._back = asyncio.get_running_loop().call_later(seconds, self._set, True)

    def _set(self, up):
        self._up = up
        if self._on_change:
            self._on_change(up)

    def drop_all(self):
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _lookup(self, reader, writer):
        try:
            line = await reader.readline()
            host, port, *kind = line.decode().split()
            port = int(port)
            if len(line) > _HEADER_LIMIT:
                return
            if kind == ["udp"]:
                # The bench's network has its time server at any name: no lookup of its own.
                if port != ntp.NTP_PORT or not (self.up or _numeric(host)):
                    return
                route = self.time_port
            else:
                if not await self._resolves(host, port):
                    return
                route = await self._route(host, port)
            writer.write(b"OK %d\n" % route)
            await writer.drain()
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    async def _resolves(self, host, port):
        """A numeric address needs no lookup; a name resolves only over a working Wi-Fi."""
        if _numeric(host):
            return True
        if not self.up:
            return False
        try:
            await asyncio.get_running_loop().getaddrinfo(host, port)
        except OSError:
            return False
        return True

    async def _route(self, host, port):
        server = self._routes.get((host, port))
        if server is None:
            if len(self._routes) >= _ROUTES_LIMIT:
                raise OSError(f"the radio already routes to {_ROUTES_LIMIT} destinations")

            async def relay(reader, writer):
                await self._relay(host, port, reader, writer)

            server = await asyncio.start_server(relay, "127.0.0.1", 0)
            self._routes[(host, port)] = server
        return server.sockets[0].getsockname()[1]

    async def _relay(self, host, port, reader, writer):
        if not self.up:
            writer.transport.abort()
            return
        peer_writer = None
        try:
            peer_reader, peer_writer = await asyncio.open_connection(host, port)
            self._links.update((writer, peer_writer))
            await asyncio.gather(_pipe(reader, peer_writer), _pipe(peer_reader, writer))
        except OSError:
            writer.transport.abort()  # the host refused: the board sees a reset connection
        finally:
            for w in (writer, peer_writer):
                if w is not None:
                    self._links.discard(w)
                    w.close()


def _numeric(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _pipe(reader, writer):
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
