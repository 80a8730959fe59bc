"""The virtual board: the MicroPython Unix port run by tools/vboard.

The supervisor passes the board's identity in the environment. There is no radio and no
watchdog peripheral here: the Wi-Fi interface is a stand-in that is always associated, and the
watchdog only counts feeds. The radio's behaviour is the supervisor's: plain TCP connections
go through its "radio" relay (QRFLEET_RADIO), which the harness can switch off to take the
board's Wi-Fi down (existing connections drop, new ones fail). TLS connections go direct,
since MicroPython cannot start TLS on a stream that is already open.
"""

import os
import sys

DISPLAY = "virtual-128x64"  # the screen of a board whose config names none
_HARD_RESET_EXIT = 3  # tools/vboard/upy_port.py turns this exit status into a hard reset
_SAFE_MODE_FLAG = "safe_mode"


def unique_id():
    return bytes.fromhex(os.getenv("QRFLEET_MAC") or "020000000001")


def reset():
    sys.exit(_HARD_RESET_EXIT)


def reset_cause():
    return os.getenv("QRFLEET_RESET_CAUSE") or "power-on"


def boot_count():
    return int(os.getenv("QRFLEET_BOOT_COUNT") or 1)


def show_frame(width, height, rows):
    """Hand a MONO_HLSB frame (1 = black, as PBM) to the virtual board's supervisor.

    The supervisor keeps it as display.pbm; the board itself has no host filesystem.
    """
    err = sys.stderr.buffer
    err.write(b"qrfleet-port: screen %d %d %d\n" % (width, height, len(rows)))
    err.write(rows)


def safe_mode():
    try:
        os.stat(_SAFE_MODE_FLAG)
        return True
    except OSError:
        return False


async def open_connection(host, port, ssl=None):
    import asyncio

    radio = os.getenv("QRFLEET_RADIO")
    if ssl is not None or not radio:
        if ssl is None:
            return await asyncio.open_connection(host, port)
        return await asyncio.open_connection(host, port, ssl=ssl)
    relay_host, relay_port = radio.split(":")
    reader, writer = await asyncio.open_connection(relay_host, int(relay_port))
    writer.write(b"%s %d\n" % (host.encode(), port))
    await writer.drain()
    if await reader.readline() != b"OK\n":
        writer.close()
        raise OSError(113, "no Wi-Fi: %s:%d unreachable" % (host, port))  # EHOSTUNREACH
    return reader, writer


class WLAN:
    """Stand-in for network.WLAN(STA_IF): associated at once, fixed signal."""

    def __init__(self):
        self._ssid = None

    def connect(self, ssid=None, password=None):
        self._ssid = ssid

    def isconnected(self):
        return True

    def rssi(self):
        return -55


_wlan = WLAN()


def wlan():
    return _wlan


class Watchdog:
    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.feeds = 0

    def feed(self):
        self.feeds += 1
