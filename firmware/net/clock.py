"""The unit's clock, set over SNTP (RFC 4330; the packet is RFC 5905 §7.3's).

An ESP32's RTC reads 2000-01-01 after power-on until something sets it, and mbedTLS checks a
wss:// server's certificate dates against it: a unit whose clock was never set refuses every
server ("not valid yet"). So before a wss:// connection the session asks `Clock.ensure()`,
which sets the clock from the config's time server once per boot and again when it is
RESYNC_S old (the dates are checked only at a handshake).

The core is sans-I/O, the edge moves one UDP datagram at a time:

    request(nonce) -> bytearray     the 48-byte client request; `nonce`, 8 random bytes, goes
                                    as its transmit timestamp, which the answer must echo (our
                                    own clock is what we are asking for, so it is no use there)
    answer(reply, nonce)            the server's transmit time, (seconds, microseconds) in the
                                    running port's epoch (time.gmtime(0): 2000 on an ESP32,
                                    1970 on CPython)
    datetime(seconds, us)           the 8-tuple machine.RTC().datetime() takes
    await query(host)               request and answer over UDP, each wait with a deadline
    Clock(host, set_rtc).ensure()   True once the clock is set; logs a line either way

Exceptions:

    ClockError          the clock could not be set from this server; the message says why
     └── NotAnAnswer    a datagram that answers none of our requests (late, stray or forged):
                        skipped, the wait goes on
"""

import asyncio
import time
from os import urandom

from firmware.compat import const, ticks_diff, ticks_ms

NTP_PORT = const(123)
RESYNC_S = const(6 * 3600)
_TRIES = const(3)
_WAIT_MS = const(2000)  # for each request's answer
_POLL_MS = const(50)
_EAGAIN = const(11)  # errno of a non-blocking read with nothing to read (lwIP, Linux)

# RFC 5905 §7.3: the packet's fields, by byte offset.
_PACKET = const(48)
_LI_VN_MODE = const(0)  # leap indicator (2 bits), version (3 bits), mode (3 bits)
_STRATUM = const(1)
_REFERENCE_ID = const(12)  # in a kiss-of-death (stratum 0): the kiss code, 4 ASCII letters
_ORIGIN = const(24)  # the server's copy of our transmit timestamp
_TRANSMIT = const(40)  # 32 bits of seconds since 1900-01-01, then 32 bits of fraction
_REQUEST_HEAD = const(0x23)  # leap indicator 0, version 4, mode 3 (client)
_MODE_SERVER = const(4)
_LI_UNSYNCHRONISED = const(3)
_MAX_STRATUM = const(15)  # 16 and over: the server is not synchronised

# NTP seconds at the running port's epoch, as 16-bit halves so that the arithmetic stays in
# small integers on a unit (an ESP32's are 31 bits; NTP seconds need 32): 0xBC17C200 is
# 2000-01-01 (the ESP32 port's epoch), 0x83AA7E80 is 1970-01-01 (CPython's, the Unix port's).
_EPOCH_HI, _EPOCH_LO = (0xBC17, 0xC200) if time.gmtime(0)[0] == 2000 else (0x83AA, 0x7E80)


class ClockError(Exception):
    """The clock could not be set from this server; the message says why."""


class NotAnAnswer(ClockError):
    """A datagram that answers none of our requests."""


def request(nonce):
    packet = bytearray(_PACKET)
    packet[_LI_VN_MODE] = _REQUEST_HEAD
    packet[_TRANSMIT:] = nonce
    return packet


def answer(reply, nonce):
    """(seconds, microseconds) of the server's transmit timestamp in the port's epoch; raises
    NotAnAnswer for a datagram that does not echo `nonce`, ClockError for an answer that must
    not set a clock (RFC 4330 §5)."""
    if len(reply) < _PACKET or reply[_ORIGIN : _ORIGIN + 8] != nonce:
        raise NotAnAnswer("not an answer to our request")
    mode = reply[_LI_VN_MODE] & 7
    if mode != _MODE_SERVER:
        raise ClockError("it answered in NTP mode %d, not as a server (4)" % mode)
    stratum = reply[_STRATUM]
    if stratum == 0:
        code = bytes(reply[_REFERENCE_ID : _REFERENCE_ID + 4]).decode()
        raise ClockError("it sent a kiss-of-death (%s): it will not serve this unit now" % code)
    if stratum > _MAX_STRATUM or reply[_LI_VN_MODE] >> 6 == _LI_UNSYNCHRONISED:
        raise ClockError("its own clock is not synchronised (stratum %d)" % stratum)
    hi = reply[_TRANSMIT] << 8 | reply[_TRANSMIT + 1]
    lo = reply[_TRANSMIT + 2] << 8 | reply[_TRANSMIT + 3]
    fraction = reply[_TRANSMIT + 4] << 8 | reply[_TRANSMIT + 5]  # its top 16 bits: 15 us
    if not (hi or lo or fraction or reply[_TRANSMIT + 6] or reply[_TRANSMIT + 7]):
        raise ClockError("its transmit timestamp is zero")
    if hi < 0x8000:
        hi += 0x10000  # RFC 4330 §3: the top bit clear means 2036-2104, the next era
    # 10**6 / 2**16 = 15625 / 2**10: microseconds without leaving small integers.
    return ((hi - _EPOCH_HI) << 16) + lo - _EPOCH_LO, fraction * 15625 >> 10


def datetime(seconds, us):
    """(year, month, day, weekday, hours, minutes, seconds, subseconds) for the RTC; weekday 0
    is Monday, and an ESP32's subseconds are microseconds."""
    t = time.gmtime(seconds)
    return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], us)


async def query(host, tries=_TRIES, wait_ms=_WAIT_MS):
    """The time `host` tells, (seconds, microseconds), half the round trip added; raises
    ClockError when it does not answer `tries` requests within `wait_ms` each, or answers
    what must not set a clock, and OSError when its name does not resolve."""
    import socket

    address = socket.getaddrinfo(host, NTP_PORT, 0, socket.SOCK_DGRAM)[0]
    sock = socket.socket(address[0], socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for _ in range(tries):
            nonce = urandom(8)
            sock.sendto(request(nonce), address[-1])
            sent = ticks_ms()
            while ticks_diff(ticks_ms(), sent) < wait_ms:
                try:
                    reply = sock.recv(_PACKET)
                except OSError as e:
                    if e.errno != _EAGAIN:
                        raise
                    await asyncio.sleep(_POLL_MS / 1000)
                    continue
                try:
                    seconds, us = answer(reply, nonce)
                except NotAnAnswer:
                    continue
                us += ticks_diff(ticks_ms(), sent) * 500
                return seconds + us // 1000000, us % 1000000
    finally:
        sock.close()
    raise ClockError("no answer to %d requests in %d ms each" % (tries, wait_ms))


class Clock:
    """The unit's clock and the server that sets it; `set_rtc(datetime)` is the HAL's."""

    def __init__(self, host, set_rtc, log=print):
        self.host = host
        self.set_rtc = set_rtc
        self.log = log
        self.set = False
        self._checked = 0  # time.time() of the last sync, or of the last try once set

    async def ensure(self):
        """True when the clock is set: synced first if it never was since boot, or was
        RESYNC_S ago. A failure is logged; the caller retries later."""
        if self.set and 0 <= time.time() - self._checked < RESYNC_S:
            return True
        try:
            seconds, us = await query(self.host)
        except (ClockError, OSError) as e:
            if self.set:
                self._checked = time.time()  # keeps time meanwhile; try again in RESYNC_S
                self.log("qrfleet: clock not refreshed from %s: %s" % (self.host, _why(e)))
            else:
                self.log(
                    "qrfleet: clock not set: %s: %s; wss:// servers wait for it"
                    % (self.host, _why(e))
                )
            return self.set
        self.set_rtc(datetime(seconds, us))
        self.set = True
        self._checked = time.time()
        t = time.gmtime(seconds)
        self.log(
            "qrfleet: clock set from %s: %04d-%02d-%02d %02d:%02d:%02d UTC"
            % ((self.host,) + tuple(t[:6]))
        )
        return True


def _why(e):
    return str(e) if isinstance(e, ClockError) else "%s %s" % (type(e).__name__, e)
