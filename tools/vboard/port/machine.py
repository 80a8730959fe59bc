# machine, as the ESP32 port has it (ports/esp32/modmachine.c, machine_pin.c, machine_i2c.c,
# machine_hw_spi.c, machine_wdt.c), over the Unix port's own machine module, whose functions
# (idle, mem8/16/32, time_pulse_us, Signal, PinBase, soft_reset) stay available.
#
# What is silicon on a unit is the supervisor's here (see link.py): the eFuse MAC, the reset
# reason, GPIO0 (the BOOT button, or DTR through the auto-reset circuit), the hard reset and
# the watchdog, which the supervisor times and fires. The RTC is the board's clock (time.py).

import sys

_path = sys.path
sys.path = ()  # the Unix port's built-in machine, not this module
try:
    from machine import *  # noqa: F403
finally:
    sys.path = _path
del _path

import time  # noqa: E402

import link  # noqa: E402

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

# The supervisor's name for the last reset -> esp_reset_reason() as machine.reset_cause()
# reports it. An EN-pin reset reads as power-on on an ESP32; a panic restart as a hard reset.
_CAUSES = {
    "power-on": PWRON_RESET,
    "hard": PWRON_RESET,
    "software": HARD_RESET,
    "panic": HARD_RESET,
    "watchdog": WDT_RESET,
    "soft": SOFT_RESET,
}


def unique_id():
    return link.MAC


def reset_cause():
    return _CAUSES.get(link.RESET_CAUSE, 0)


def reset():
    """esp_restart(): nothing runs after it. The supervisor resets the board on this line."""
    link.tell(link.RESET)
    while True:
        try:
            time.sleep(1)
        except KeyboardInterrupt:
            pass


class RTC:
    """machine_rtc.c: datetime() reads, or sets, the wall clock that time.time() and the TLS
    date checks read: (year, month, day, weekday, hours, minutes, seconds, microseconds),
    weekday 0 Monday and ignored when set."""

    def __init__(self, id=0):
        pass

    def init(self, datetime):
        self.datetime(datetime)

    def datetime(self, datetime=None):
        if datetime is None:
            ns = time.time_ns()
            t = time.gmtime(ns // 1000000000)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], ns // 1000 % 1000000)
        if len(datetime) != 8:
            raise ValueError("requested length 8 but object has length %d" % len(datetime))
        y, m, d, _, h, mi, s, us = datetime
        time._set_rtc(time.mktime((y, m, d, h, mi, s)), us)


_freq = 160000000  # ESP32_GENERIC: IDF's default CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ_160


def freq(hz=None):
    global _freq
    if hz is None:
        return _freq
    if hz // 1000000 not in (20, 40, 80, 160, 240):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq = hz // 1000000 * 1000000


class WDT:
    """The IDF task watchdog: once started it cannot be stopped, and it outlives a soft reset
    (the supervisor keeps timing it). Expiry resets the board with WDT_RESET."""

    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        link.tell(b"qrfleet-port: wdt %d\n" % timeout)

    def feed(self):
        link.tell(link.FEED)


# GPIOs the ESP32 port offers (machine_pin.h): 0-23, 25-27, 32-39; 34 and up are input only.
_VALID = b"\x01" * 24 + b"\x00\x01\x01\x01\x00\x00\x00\x00" + b"\x01" * 8
_FIRST_INPUT_ONLY = 34
_OUTPUT = 2  # GPIO_MODE_DEF_OUTPUT
_levels = bytearray(40)  # what each output pin drives
_modes = bytearray(40)
_pulls = bytearray(40)

# A board with a panel (link.WIRED_PINS): the levels its wired pins drive, and the bytes its
# buses send on them, go to the supervisor, which plays the panel (tools/vboard/panels.py).
# The lines are preallocated and patched in place: a frame is thousands of pin changes and
# writes, which must not each allocate.
_wired = bytearray(40)
for _pin in link.WIRED_PINS:
    _wired[_pin] = 1
_told = bytearray(b"\xff" * 40)  # the level the supervisor last heard of, 0xff: none yet
_PIN_LINE = bytearray(b"qrfleet-port: pin 00 0\n")
_SPI_LINE = bytearray(b"qrfleet-port: spi 0 0000000000\n")
_I2C_LINE = bytearray(b"qrfleet-port: i2c 000 0000000000\n")


def _digits(line, end, width, value):
    """Write `value` in decimal, zero-padded, over the `width` bytes of `line` before `end`."""
    for i in range(end - 1, end - 1 - width, -1):
        line[i] = 0x30 + value % 10
        value //= 10


def _drive(id):
    """A wired output pin's level, told when it changes."""
    if _wired[id] and _modes[id] & _OUTPUT and _told[id] != _levels[id]:
        _told[id] = _levels[id]
        _PIN_LINE[18] = 0x30 + id // 10
        _PIN_LINE[19] = 0x30 + id % 10
        _PIN_LINE[21] = 0x30 + _levels[id]
        link.tell(_PIN_LINE)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=None, pull=-1, *, value=None, drive=None, hold=None):
        if not (isinstance(id, int) and 0 <= id < 40 and _VALID[id]):
            raise ValueError("invalid pin")
        self.id = id
        self.init(mode, pull, value=value)

    def init(self, mode=None, pull=-1, *, value=None, drive=None, hold=None):
        if value is not None:
            _levels[self.id] = 1 if value else 0
        if mode is not None:
            if self.id >= _FIRST_INPUT_ONLY and mode & _OUTPUT:
                raise ValueError("pin can only be input")
            _modes[self.id] = mode
        if pull != -1:
            _pulls[self.id] = pull or 0
        _drive(self.id)

    def value(self, level=None):
        if level is not None:
            _levels[self.id] = 1 if level else 0
            _drive(self.id)
            return None
        if _modes[self.id] & _OUTPUT:
            return _levels[self.id]
        if self.id == 0:
            return link.level(link.GPIO0)
        # Nothing else drives a pin on this board: an input reads what its pull resistor gives.
        return 1 if _pulls[self.id] & Pin.PULL_UP else 0

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def toggle(self):
        self.value(_levels[self.id] ^ 1)

    def __repr__(self):
        return "Pin(%d)" % self.id


def _gpio(pin, default):
    """The GPIO number of a bus pin given as a Pin, a number, or None (the bus's default)."""
    if pin is None:
        return default
    return pin.id if isinstance(pin, Pin) else Pin(pin).id


# The buses a display profile drives. An I2C transfer to an address nothing acknowledges on
# those pins fails with ENODEV, as on a unit; SPI has no acknowledgement, so what is sent on
# pins without a panel is simply lost.
_I2C_DEFAULT_PINS = {0: (18, 19), 1: (25, 26)}  # (scl, sda): machine_i2c.c


class I2C:
    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError("I2C(%d) doesn't exist" % id)
        self._scl = _gpio(scl, _I2C_DEFAULT_PINS[id][0])
        self._sda = _gpio(sda, _I2C_DEFAULT_PINS[id][1])

    def _acknowledges(self, addr):
        for sda, scl, device in link.I2C_DEVICES:
            if sda == self._sda and scl == self._scl and device == addr:
                return True
        return False

    def scan(self):
        return [addr for sda, scl, addr in link.I2C_DEVICES if self._acknowledges(addr)]

    def _send_header(self, addr, size):
        if not self._acknowledges(addr):
            raise OSError(19)  # ENODEV: no acknowledgement
        _digits(_I2C_LINE, 21, 3, addr)
        _digits(_I2C_LINE, 32, 10, size)
        link.tell(_I2C_LINE)

    def writeto(self, addr, buf, stop=True):
        self._send_header(addr, len(buf))
        link.tell(buf)
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        size = 0
        for buf in vector:
            size += len(buf)
        self._send_header(addr, size)
        for buf in vector:
            link.tell(buf)
        return size

    # Reads: the panels modelled here are written to only.
    def readfrom_into(self, addr, buf, stop=True):
        raise OSError(19)

    def readfrom(self, addr, nbytes, stop=True):
        raise OSError(19)


_SPI_DEFAULT_PINS = {1: (14, 13), 2: (18, 23)}  # (sck, mosi) of HSPI, VSPI: machine_hw_spi.c


class SPI:
    MSB = 0
    LSB = 1

    def __init__(
        self,
        id,
        baudrate=500000,
        *,
        polarity=0,
        phase=0,
        bits=8,
        firstbit=0,
        sck=None,
        mosi=None,
        miso=None,
    ):
        if id not in (1, 2):
            raise ValueError("SPI(%d) doesn't exist" % id)
        sck = _gpio(sck, _SPI_DEFAULT_PINS[id][0])
        mosi = _gpio(mosi, _SPI_DEFAULT_PINS[id][1])
        if sck >= _FIRST_INPUT_ONLY or mosi >= _FIRST_INPUT_ONLY:
            raise OSError("invalid configuration")  # spi_bus_initialize: ESP_ERR_INVALID_ARG
        self._id = id
        self._wired = _wired[sck] and _wired[mosi]
        if self._wired:
            link.tell(
                b"qrfleet-port: spi-init %d %d %d %d %d %d %d\n"
                % (id, baudrate, polarity, phase, firstbit, sck, mosi)
            )

    def write(self, buf):
        if self._wired:
            _SPI_LINE[18] = 0x30 + self._id
            _digits(_SPI_LINE, 30, 10, len(buf))
            link.tell(_SPI_LINE)
            link.tell(buf)

    def deinit(self):
        pass
