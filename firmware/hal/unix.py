"""The plain MicroPython Unix port, with no board around it: where the firmware's tests run.

It has none of the ESP32 port's modules (a virtual board has them all, and runs `esp32`), so
these are stand-ins: a fixed MAC, a first power-on, a Wi-Fi interface that is always joined, a
watchdog that only counts feeds, plain asyncio connections, the host's clock (set already, and
not the firmware's to set), a `safe_mode` flag file for the held button, and the screen kept as
display.pbm in the current directory.
"""

import os
import sys

from firmware.display.virtual import PBMFile

DISPLAY = "virtual-128x64"
show_frame = PBMFile("display.pbm")
_SAFE_MODE_FLAG = "safe_mode"


def unique_id():
    return b"\x02\x00\x00\x00\x00\x01"


def reset():
    sys.exit()  # the script ends: there is no board to restart


def reset_cause():
    return "power-on"


def boot_count():
    return 1


def safe_mode():
    try:
        os.stat(_SAFE_MODE_FLAG)
        return True
    except OSError:
        return False


def open_connection(host, port, ssl=None):
    import asyncio

    if ssl is None:
        return asyncio.open_connection(host, port)
    return asyncio.open_connection(host, port, ssl=ssl)


def set_clock(datetime):
    pass


class WLAN:
    def connect(self, ssid=None, password=None):
        pass

    def isconnected(self):
        return True

    def rssi(self):
        return None


_wlan = WLAN()


def wlan():
    return _wlan


class Watchdog:
    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.feeds = 0

    def feed(self):
        self.feeds += 1
