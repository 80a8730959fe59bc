"""An ESP32 running MicroPython's generic build: a unit, or a virtual board, whose port layer
has the same machine, network and esp32 modules (tools/vboard/port/), so this is the code path
of both; the harness runs it on either (`pytest --board virtual:4`, `--board /dev/ttyUSB0`).
"""

import machine
import network

from firmware.compat import const, sleep_ms

DISPLAY = "ssd1306-i2c"  # the generic board's panel, for a unit whose config names none
_SAFE_MODE_PIN = const(0)  # BOOT button: held low as the firmware starts skips the application
# Held, not a glitch: opening or closing a USB-serial port pulses DTR/RTS, and the auto-reset
# circuit passes that to GPIO0 for as long as the driver takes (50 ms over RFC 2217).
_SAFE_MODE_HOLD_MS = const(500)
_RESET_CAUSES = {
    machine.PWRON_RESET: "power-on",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deep-sleep",
    machine.SOFT_RESET: "soft",
}


def unique_id():
    return machine.unique_id()


def reset():
    machine.reset()


def reset_cause():
    return _RESET_CAUSES.get(machine.reset_cause(), "panic")


def boot_count():
    import esp32

    nvs = esp32.NVS("qrfleet")
    try:
        count = nvs.get_i32("boots") + 1
    except OSError:
        count = 1
    nvs.set_i32("boots", count)
    nvs.commit()
    return count


def safe_mode():
    button = machine.Pin(_SAFE_MODE_PIN, machine.Pin.IN, machine.Pin.PULL_UP)
    if button.value():
        return False
    sleep_ms(_SAFE_MODE_HOLD_MS)
    return button.value() == 0


class WLAN:
    def __init__(self):
        self._sta = network.WLAN(network.STA_IF)
        self._sta.active(True)

    def connect(self, ssid=None, password=None):
        self._sta.connect(ssid, password)

    def isconnected(self):
        return self._sta.isconnected()

    def rssi(self):
        """The signal of the joined access point; None while not joined (the port raises)."""
        if not self._sta.isconnected():
            return None
        return self._sta.status("rssi")


_wlan = None


def wlan():
    global _wlan
    if _wlan is None:
        _wlan = WLAN()
    return _wlan


def Watchdog(timeout_ms):
    return machine.WDT(timeout=timeout_ms)


def open_connection(host, port, ssl=None):
    """A TCP (or TLS) stream over the Wi-Fi interface."""
    import asyncio

    if ssl is None:
        return asyncio.open_connection(host, port)
    return asyncio.open_connection(host, port, ssl=ssl)


def set_clock(datetime):
    """(year, month, day, weekday, hours, minutes, seconds, microseconds) into the RTC, which
    time.time() and mbedTLS's certificate date checks read."""
    machine.RTC().datetime(datetime)


# Buses and pins for firmware/display/profiles.py.
def i2c(bus, scl, sda, freq):
    return machine.I2C(bus, scl=machine.Pin(scl), sda=machine.Pin(sda), freq=freq)


def spi(bus, baudrate, polarity, phase, sck, mosi):
    return machine.SPI(
        bus,
        baudrate=baudrate,
        polarity=polarity,
        phase=phase,
        sck=machine.Pin(sck),
        mosi=machine.Pin(mosi),
    )


def pin(number):
    return machine.Pin(number, machine.Pin.OUT)
