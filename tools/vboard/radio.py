"""The virtual board's radio: a relay its TCP connections go through, which can be switched off.

The board's HAL connects to the relay and names its destination on the first line
(`HOST PORT\\n`); the relay answers `OK\\n` and then moves bytes both ways. Switching the radio
off (Wi-Fi down) drops every relayed connection at once and refuses new ones until it is back,
as a unit that lost its access point sees it.
"""

import asyncio
import contextlib
import time

_HEADER_LIMIT = 300


class Radio:
    def __init__(self):
        self._server = None
        self._links = set()
        self._down_until = 0.0
        self.port = None

    async def start(self):
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self):
        self.drop_all()
        self._server.close()
        await self._server.wait_closed()

    @property
    def up(self):
        return time.monotonic() >= self._down_until

    def down_for(self, seconds):
        """Wi-Fi down for `seconds`: every connection drops now, new ones fail until then."""
        self._down_until = time.monotonic() + seconds
        self.drop_all()

    def drop_all(self):
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _relay(self, reader, writer):
        peer_writer = None
        try:
            line = await reader.readline()
            host, port = line.decode().split()
            if not self.up or len(line) > _HEADER_LIMIT:
                return
            peer_reader, peer_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"OK\n")
            self._links.update((writer, peer_writer))
            await asyncio.gather(_pipe(reader, peer_writer), _pipe(peer_reader, writer))
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        finally:
            for w in (writer, peer_writer):
                if w is not None:
                    self._links.discard(w)
                    w.close()


async def _pipe(reader, writer):
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
