"""The session's decisions without I/O: which server next, how long to wait, when to give up.

Reconnection: a unit starts at a position in the URL list derived from its id, so a fleet
spreads over the servers, and moves to the next URL (wrapping around) whenever a session ends.
Between attempts it waits an exponential backoff with full jitter, capped. A server that sent
nothing for SILENT_HEARTBEATS heartbeat periods is taken as gone. Plain functions, not
classes: on a unit every class costs heap that the connection's buffers need.
"""

import random

from firmware.compat import const, ticks_diff
from firmware.proto.messages import SILENT_HEARTBEATS

BACKOFF_BASE_MS = const(500)
BACKOFF_CAP_MS = const(15000)


def start_index(device_id, count):
    """Where in a list of `count` servers this unit starts: stable per unit, spread over a fleet."""
    h = 0
    for c in device_id:
        h = (h * 31 + ord(c)) & 0xFFFFFFFF
    return h % count


def server_order(device_id, urls):
    """The server URLs to try one after the other, forever: from the unit's start position on,
    wrapping around."""
    i = start_index(device_id, len(urls))
    while True:
        yield urls[i]
        i = (i + 1) % len(urls)


def backoff_ms(attempt):
    """Full jitter: a uniform delay in [0, min(cap, base * 2**attempt)] ms."""
    ceiling = min(BACKOFF_CAP_MS, BACKOFF_BASE_MS << min(attempt, 16))
    return ceiling * random.getrandbits(16) // 65535


def server_silent(now, last_heard, heartbeat_ms):
    """True once the server sent nothing for SILENT_HEARTBEATS periods (ticks_ms() times)."""
    return ticks_diff(now, last_heard) > SILENT_HEARTBEATS * heartbeat_ms
