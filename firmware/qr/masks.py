"""Data masking (§7.8): the eight mask patterns and the penalty score that picks one.

On CPython, apply_mask and penalty are replaced by the equivalents in _cpython.py (the same
results, with the loops in C); the plain ones stay as plain_apply_mask/plain_penalty.
"""

from ._native import CPYTHON, micropython, ptr8


@micropython.viper
def apply_mask(grid: ptr8, size: int, mask: int):
    """XOR mask pattern `mask` (Table 10; x = column, y = row) onto the non-function modules.
    Applying the same mask twice restores the grid."""
    y = 0
    p = 0
    while y < size:
        x = 0
        while x < size:
            if (grid[p] & 2) == 0:
                if mask == 0:
                    c = (x + y) % 2
                elif mask == 1:
                    c = y % 2
                elif mask == 2:
                    c = x % 3
                elif mask == 3:
                    c = (x + y) % 3
                elif mask == 4:
                    c = (x // 3 + y // 2) % 2
                elif mask == 5:
                    c = x * y % 2 + x * y % 3
                elif mask == 6:
                    c = (x * y % 2 + x * y % 3) % 2
                else:
                    c = ((x + y) % 2 + x * y % 3) % 2
                if c == 0:
                    grid[p] ^= 1
            x += 1
            p += 1
        y += 1


@micropython.viper
def penalty(grid: ptr8, size: int) -> int:
    """Mask penalty score (§7.8.3), computed exactly as the reference implementation does.

    N1 (3 + 1 per module past 5) for each same-colour run of 5 or more in a row or column;
    N3 (40) for each 1:1:3:1:1 finder-like pattern with 4 light modules on one side, counted
    from run lengths (the area outside the symbol is light); N2 (3) for each 2x2 same-colour
    block; N4 (10 per 5 % step) for the dark share's distance from 50 %.
    Run history: h0 is the newest run, h1..h5 the candidate core, h6 the run before it.
    """
    result = 0
    orient = 0
    while orient < 2:
        line = 0
        while line < size:
            color = 0
            run = 0
            h0 = 0
            h1 = 0
            h2 = 0
            h3 = 0
            h4 = 0
            h5 = 0
            h6 = 0
            k = 0
            while k <= size:
                if k < size:
                    if orient == 0:
                        c = grid[line * size + k] & 1
                    else:
                        c = grid[k * size + line] & 1
                else:
                    c = 2  # the end of the line closes the current run
                if c == color:
                    run += 1
                    if run == 5:
                        result += 3
                    elif run > 5:
                        result += 1
                else:
                    if c == 2 and color == 1:
                        # a dark run at the end is closed, then the light border follows
                        if h0 == 0:
                            run += size
                        h6 = h5
                        h5 = h4
                        h4 = h3
                        h3 = h2
                        h2 = h1
                        h1 = h0
                        h0 = run
                        run = 0
                        color = 0
                    if c == 2:
                        run += size
                    if h0 == 0:
                        run += size
                    h6 = h5
                    h5 = h4
                    h4 = h3
                    h3 = h2
                    h2 = h1
                    h1 = h0
                    h0 = run
                    if color == 0:
                        n = h1
                        if n > 0 and h2 == n and h4 == n and h5 == n and h3 == n * 3:
                            if h0 >= n * 4 and h6 >= n:
                                result += 40
                            if h6 >= n * 4 and h0 >= n:
                                result += 40
                    color = c
                    run = 1
                k += 1
            line += 1
        orient += 1

    dark = 0
    y = 0
    while y < size:
        x = 0
        p = y * size
        while x < size:
            c = grid[p] & 1
            dark += c
            if x < size - 1 and y < size - 1:
                if (
                    c == (grid[p + 1] & 1)
                    and c == (grid[p + size] & 1)
                    and c == (grid[p + size + 1] & 1)
                ):
                    result += 3
            x += 1
            p += 1
        y += 1
    total = size * size
    diff = dark * 20 - total * 10
    if diff < 0:
        diff = 0 - diff
    result += ((diff + total - 1) // total - 1) * 10
    return result


if CPYTHON:
    from . import _cpython

    plain_apply_mask = apply_mask
    plain_penalty = penalty
    apply_mask = _cpython.apply_mask
    penalty = _cpython.penalty
