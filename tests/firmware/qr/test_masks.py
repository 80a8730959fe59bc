"""The mask table is the standard's, and the CPython mask loops (_cpython.py) give exactly
what the plain loops give."""

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.qr import _cpython, masks, matrix, tables

from .strategies import generators

# ISO/IEC 18004:2015 Table 10: mask k flips module (x = column, y = row) where TABLE_10[k] holds.
TABLE_10 = (
    lambda x, y: (x + y) % 2 == 0,
    lambda x, y: y % 2 == 0,
    lambda x, y: x % 3 == 0,
    lambda x, y: (x + y) % 3 == 0,
    lambda x, y: (x // 3 + y // 2) % 2 == 0,
    lambda x, y: x * y % 2 + x * y % 3 == 0,
    lambda x, y: (x * y % 2 + x * y % 3) % 2 == 0,
    lambda x, y: ((x + y) % 2 + x * y % 3) % 2 == 0,
)


def test_mask_rows_flip_the_modules_table_10_flips_across_a_version_40_symbol():
    for mask, flips in enumerate(TABLE_10):
        for y in range(177):
            six = tables.MASK_ROWS[mask * 12 + y % 12]
            for x in range(177):
                assert bool(six & 32 >> x % 6) == flips(x, y), (mask, x, y)


def set_module(m, size, x, y, dark):
    p = y * ((size + 7) // 8) + x // 8
    bit = 0x80 >> (x % 8)
    m[p] = m[p] | bit if dark else m[p] & ~bit


def matrix_for(version, rnd, density):
    """Version `version`'s function patterns with random data modules."""
    size = matrix.size_of(version)
    dark, func = matrix.function_patterns(version)
    m = bytearray(dark)
    stride = (size + 7) // 8
    for y in range(size):
        for x in range(size):
            if not func[y * stride + x // 8] & (0x80 >> (x % 8)):
                set_module(m, size, x, y, rnd.random() < density)
    return m, bytes(func)


def plant_finder_like(m, size, rnd):
    """A 1:1:3:1:1 run at a random scale, row or column, with light on one side."""
    n = rnd.randint(1, max(1, size // 7))
    runs = [0] * n + [1] * n + [0] * n + [1] * (3 * n) + [0] * n + [1] * n + [0] * (4 * n)
    if rnd.random() < 0.5:
        runs.reverse()
    line, start, column = rnd.randrange(size), rnd.randrange(size), rnd.random() < 0.5
    for k, dark in enumerate(runs[: size - start]):
        if column:
            set_module(m, size, line, start + k, dark)
        else:
            set_module(m, size, start + k, line, dark)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 40),
    st.sampled_from([0.5, 0.2, 0.8]),
    st.integers(0, 7),
    generators,
)
def test_penalty_and_masking_match_the_plain_loops(version, density, mask, rnd):
    size = matrix.size_of(version)
    m, func = matrix_for(version, rnd, density)
    for _ in range(rnd.randrange(3)):
        plant_finder_like(m, size, rnd)
    assert _cpython.penalty(m, size) == masks.plain_penalty(m, size)
    fast, plain = bytearray(m), bytearray(m)
    _cpython.apply_mask(fast, func, size, mask)
    masks.plain_apply_mask(plain, func, size, mask)
    assert fast == plain
    masks.plain_apply_mask(plain, func, size, mask)
    assert plain == m


def test_scaled_finder_patterns_count_as_in_the_reference():
    size = matrix.size_of(10)
    m = bytearray(size * ((size + 7) // 8))
    n = 3
    runs = (
        [1] * n + [0] * n + [1] * (3 * n) + [0] * n + [1] * n
    )  # at the row start: border is light
    for k, dark in enumerate(runs):
        set_module(m, size, k, 5, dark)
    assert _cpython.penalty(m, size) == masks.plain_penalty(m, size)
