"""The one place that chooses how the hot loops run.

On MicroPython the loop functions (in bitstream, segments, rs, matrix, placement, masks)
are compiled by `@micropython.viper` to machine code; viper resolves `ptr8`/`ptr16` casts
itself. On CPython the decorators are the identity and the casts return their argument, so
the same source runs as plain Python and is the reference path in tests (masks.py then swaps
in the faster CPython versions from _cpython.py). Viper rules the loops keep: at most four
arguments, integers are machine words (every value stays under 2**24), no allocation.
"""

try:
    import micropython

    CPYTHON = False
    ptr8 = ptr16 = None  # names for the imports below; viper code never reads them
except ImportError:
    from types import SimpleNamespace

    CPYTHON = True
    micropython = SimpleNamespace(viper=lambda f: f, native=lambda f: f)

    def ptr8(buf):
        return buf

    ptr16 = ptr8
