"""What differs between MicroPython and CPython, detected in one place.

Firmware modules import `const` and `sleep_ms` from here instead of from `micropython`
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
