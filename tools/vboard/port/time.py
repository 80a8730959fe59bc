# time, as the ESP32 port has it (ports/esp32/modtime.c, shared/timeutils): seconds count from
# 2000-01-01, and the wall clock is the RTC's, which reads 2000-01-01 00:00:00 plus uptime after
# power-on until machine.RTC().datetime(...) sets it (machine.py); from then on it is the time
# set, advancing. There is no time zone: localtime is gmtime. The ticks and sleeps are the Unix
# port's own. The TLS date checks read this clock too (ssl.py).
#
# A unit's RTC keeps its time through a soft reset or machine.reset(); this one lives in the
# MicroPython process, which every reset of the board restarts: it reads 2000 again after any
# reset, which is never kinder than a unit.

import sys

_path = sys.path
sys.path = ()  # the Unix port's built-in time, not this module
try:
    from time import *  # noqa: F403
    from time import gmtime as _host_gmtime
    from time import time_ns as _host_ns
finally:
    sys.path = _path
del _path

_EPOCH_S = 946684800  # from 1970-01-01, the host's epoch, to 2000-01-01, the port's
_offset_ns = -_host_ns()  # the RTC is the host's clock plus this: 2000-01-01 at power-on


def _set_rtc(seconds, us):
    """machine.RTC().datetime(...): the clock reads `seconds` (since 2000) and `us` now."""
    global _offset_ns
    _offset_ns = (seconds * 1000000 + us) * 1000 - _host_ns()


def time_ns():
    return _host_ns() + _offset_ns


def time():
    return time_ns() // 1000000000


def gmtime(secs=None):
    if secs is None:
        secs = time()
    return tuple(_host_gmtime(secs + _EPOCH_S))[:8]


localtime = gmtime


def mktime(t):
    """Seconds since 2000 of (year, month, mday, hour, minute, second, ...), out-of-range
    fields carried over as timeutils_mktime does."""
    year, month = t[0] + (t[1] - 1) // 12, (t[1] - 1) % 12 + 1
    # Days from 2000-01-01 to the first of the month: the civil-from-days count with March as
    # the first month, so that February's length falls at the end of a counted year.
    y = year - (month <= 2)
    days = 365 * y + y // 4 - y // 100 + y // 400 + (153 * ((month + 9) % 12) + 2) // 5
    days -= 730425  # the same count for 2000-01-01 (y = 1999, March-based month 10)
    return ((days + t[2] - 1) * 24 + t[3]) * 3600 + t[4] * 60 + t[5]
