# The wires between the board's modules (machine, network, esp32, socket, vscreen) and the
# supervisor (tools/vboard/board.py), which holds what is silicon on a unit:
#
#   environment   fixed for one run of the port: the eFuse MAC (QRFLEET_MAC), why the chip
#                 last reset (QRFLEET_RESET_CAUSE), the flash image (QRFLEET_FLASH_IMAGE), the
#                 radio's relay (QRFLEET_RADIO, see tools/vboard/radio.py), the offset of the
#                 app partition the supervisor's bootloader started (QRFLEET_RUNNING_APP); on a
#                 board with a panel (tools/vboard/panels.py), the GPIOs wired to it
#                 (QRFLEET_WIRED_PINS, comma-separated) and the I2C devices that acknowledge
#                 (QRFLEET_I2C_DEVICES, SDA:SCL:ADDRESS each, comma-separated)
#   signals file  levels that change while the port runs, one ASCII digit each, read when asked
#                 (tools/vboard/signals.py writes them): GPIO0 and the access point in range
#   stderr        one line per request to the supervisor: a hard reset, the watchdog's
#                 timeout and its feeds, a screen frame, and what goes out on the pins wired
#                 to a panel (levels, SPI and I2C bytes: see machine.py)
#
# The files are opened here, before the port mounts the flash's filesystem over the host's.

import os
import sys

GPIO0 = 0  # tools/vboard/signals.py: the same offsets
ACCESS_POINT = 1

MAC = bytes.fromhex(os.getenv("QRFLEET_MAC"))
RESET_CAUSE = os.getenv("QRFLEET_RESET_CAUSE")
RADIO = os.getenv("QRFLEET_RADIO")
RUNNING_APP = int(os.getenv("QRFLEET_RUNNING_APP"))
WIRED_PINS = [int(p) for p in os.getenv("QRFLEET_WIRED_PINS", "").split(",") if p]
I2C_DEVICES = [
    tuple(int(v) for v in d.split(":"))
    for d in os.getenv("QRFLEET_I2C_DEVICES", "").split(",")
    if d
]
flash = open(os.getenv("QRFLEET_FLASH_IMAGE"), "r+b")
_signals = open(os.getenv("QRFLEET_SIGNALS"), "rb")
_level = bytearray(1)
_err = sys.stderr.buffer

RESET = b"qrfleet-port: reset\n"
FEED = b"qrfleet-port: feed\n"


def level(signal):
    """The signal's level now (0 or 1), without allocating: a watchdog or button poll may be hot."""
    _signals.seek(signal)
    _signals.readinto(_level)
    return _level[0] - 0x30


def tell(line):
    _err.write(line)
