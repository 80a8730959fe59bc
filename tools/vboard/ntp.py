"""The bench's time server: SNTP answers (RFC 4330, RFC 5905 §7.3) with the host's time.

Each board's radio (tools/vboard/radio.py) runs one on a loopback UDP port of its own and
routes the board's NTP host, port 123, to it, so a virtual board sets its clock as a unit on a
shop's network does: one datagram out, one back, or none while the radio is down or the test
withholds the answer (`answering()` says which).
"""

import asyncio
import struct
import time

NTP_PORT = 123
_PACKET = 48
_MODE_CLIENT = 3
_NTP_TO_UNIX = 2208988800  # seconds from 1900-01-01, NTP's epoch, to 1970-01-01
_PRECISION = -20  # log2 seconds: about a microsecond
_ROOT_DISPERSION = 1 << 6  # 16.16 seconds: about 1 ms


def timestamp(unix_time):
    """NTP's 64-bit timestamp (32 bits of seconds since 1900, 32 of fraction) of a time.time()."""
    seconds = int(unix_time)
    fraction = int((unix_time - seconds) * (1 << 32))
    return struct.pack("!II", (seconds + _NTP_TO_UNIX) & 0xFFFFFFFF, fraction)


def reply(request, now):
    """The stratum-1 server's answer to a client's request at time.time() `now`; None for
    anything else (too short, not mode 3)."""
    if len(request) < _PACKET or request[0] & 7 != _MODE_CLIENT:
        return None
    version = request[0] >> 3 & 7
    stamp = timestamp(now)
    return (
        struct.pack(
            "!BBbbII4s",
            version << 3 | 4,  # leap indicator 0, the client's version, mode 4 (server)
            1,
            request[2],  # the client's poll interval
            _PRECISION,
            0,
            _ROOT_DISPERSION,
            b"LOCL",
        )
        + stamp  # reference: this clock was set just now
        + request[40:48]  # origin: the client's transmit timestamp, echoed
        + stamp  # receive
        + stamp  # transmit
    )


class TimeServer(asyncio.DatagramProtocol):
    def __init__(self, answering):
        self._answering = answering
        self._transport = None

    def connection_made(self, transport):
        self._transport = transport

    def datagram_received(self, data, addr):
        answer = reply(data, time.time()) if self._answering() else None
        if answer:
            self._transport.sendto(answer, addr)


async def start(answering):
    """A TimeServer on a free loopback UDP port; returns (transport, port)."""
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: TimeServer(answering), local_addr=("127.0.0.1", 0)
    )
    return transport, transport.get_extra_info("sockname")[1]
