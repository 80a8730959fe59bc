"""The CPython mask loops (_cpython.py) give exactly what the plain loops give."""

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.qr import _cpython, masks, matrix

from .strategies import generators


def grid_for(version, rnd, density):
    grid = bytearray(matrix.function_grid(version))
    for i, cell in enumerate(grid):
        if not cell & 2:
            grid[i] = rnd.random() < density
    return grid


def plant_finder_like(grid, size, rnd):
    """A 1:1:3:1:1 run at a random scale, row or column, with light on one side."""
    n = rnd.randint(1, max(1, size // 7))
    runs = [0] * n + [1] * n + [0] * n + [1] * (3 * n) + [0] * n + [1] * n + [0] * (4 * n)
    if rnd.random() < 0.5:
        runs.reverse()
    line, start, column = rnd.randrange(size), rnd.randrange(size), rnd.random() < 0.5
    for k, dark in enumerate(runs[: size - start]):
        p = (start + k) * size + line if column else line * size + start + k
        grid[p] = (grid[p] & 2) | dark


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 40),
    st.sampled_from([0.5, 0.2, 0.8]),
    st.integers(0, 7),
    generators,
)
def test_penalty_and_masking_match_the_plain_loops(version, density, mask, rnd):
    size = matrix.size_of(version)
    grid = grid_for(version, rnd, density)
    for _ in range(rnd.randrange(3)):
        plant_finder_like(grid, size, rnd)
    assert _cpython.penalty(grid, size) == masks.plain_penalty(grid, size)
    fast, plain = bytearray(grid), bytearray(grid)
    _cpython.apply_mask(fast, size, mask)
    masks.plain_apply_mask(plain, size, mask)
    assert fast == plain


def test_scaled_finder_patterns_count_as_in_the_reference():
    size = matrix.size_of(10)
    grid = bytearray(size * size)
    n = 3
    runs = (
        [1] * n + [0] * n + [1] * (3 * n) + [0] * n + [1] * n
    )  # at the row start: border is light
    for k, dark in enumerate(runs):
        grid[5 * size + k] = dark
    assert _cpython.penalty(grid, size) == masks.plain_penalty(grid, size)
