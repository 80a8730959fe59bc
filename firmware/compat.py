"""What differs between MicroPython and CPython, detected in one place.

Firmware modules import `const`, `sleep_ms` and the `ticks_*` clock from here instead of from `micropython`
and `time`, so the same source runs on a board, on the Unix port and in CPython.
"""

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


try:
    from time import sleep_ms
except ImportError:
    from time import sleep as _sleep

    def sleep_ms(ms):
        _sleep(ms / 1000)


try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:
    from time import monotonic as _monotonic

    def ticks_ms():
        return int(_monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, delta):
        return a + delta
