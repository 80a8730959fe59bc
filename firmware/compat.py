"""What differs between MicroPython and CPython, detected in this one place.

Firmware modules import these from here instead of from `micropython` and `time`, so the same
source runs on a board, on the Unix port and in CPython (the host, and the tests' reference):

    CPYTHON                 True where there is no `micropython` module
    const(value)            a compile-time constant on MicroPython, the value itself on CPython
    micropython.viper       decorator compiling a function to machine code; on CPython the
    ptr8(buf), ptr16(buf)   identity, and the pointer casts return `buf`, so viper source runs
                            as plain Python there (viper rules: at most four arguments, integers
                            are machine words, no allocation)
    sleep_ms(ms)
    ticks_ms(), ticks_diff(a, b), ticks_add(a, delta)
    utf8(text)              the UTF-8 bytes of a str as a bytes-like object: on MicroPython a
                            memoryview of the str itself, no copy (a payload's KBs are not
                            allocated twice); on CPython text.encode()
"""

try:
    from time import sleep_ms, ticks_add, ticks_diff, ticks_ms

    import micropython
    from micropython import const

    CPYTHON = False
    ptr8 = ptr16 = None  # names for the importers; viper resolves its casts at compile time
    utf8 = memoryview
except ImportError:
    from time import monotonic as _monotonic
    from time import sleep as _sleep

    CPYTHON = True

    class micropython:  # stands in for the module of that name
        @staticmethod
        def viper(function):
            return function

    def const(value):
        return value

    def ptr8(buf):
        return buf

    ptr16 = ptr8

    def sleep_ms(ms):
        _sleep(ms / 1000)

    def ticks_ms():
        return int(_monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, delta):
        return a + delta

    def utf8(text):
        return text.encode()
