"""Data masking (§7.8): the eight mask patterns and the penalty score that picks one.

On CPython, apply_mask and penalty are replaced by the equivalents in _cpython.py (the same
results, with the loops in C); the plain ones stay as plain_apply_mask/plain_penalty.
"""

from firmware.compat import CPYTHON, micropython, ptr8

from .tables import MASK_ROWS


@micropython.viper
def apply_mask(m: ptr8, func: ptr8, size: int, mask: int):
    """XOR mask pattern `mask` onto the modules of packed matrix `m` that are data modules
    (bit clear in the packed mask `func`), a byte of 8 modules at a time. Applying the same
    mask twice restores the matrix."""
    rows = ptr8(MASK_ROWS)
    stride = (size + 7) >> 3
    p = 0
    y = 0
    while y < size:
        six = rows[mask * 12 + y % 12]
        pattern = six << 18 | six << 12 | six << 6 | six  # bit 23 - i: flip at x % 6 == i % 6
        start = 0  # x % 6 of the byte's first module
        end = p + stride
        while p < end:
            m[p] = m[p] ^ ((pattern >> (16 - start)) & (0xFF ^ func[p]))
            start += 2  # 8 modules on: (start + 8) % 6
            if start >= 6:
                start -= 6
            p += 1
        y += 1


@micropython.viper
def penalty(m: ptr8, size: int) -> int:
    """Mask penalty score (§7.8.3) of packed matrix `m`, computed exactly as the reference
    implementation does.

    N1 (3 + 1 per module past 5) for each same-colour run of 5 or more in a row or column;
    N3 (40) for each 1:1:3:1:1 finder-like pattern with 4 light modules on one side, counted
    from run lengths (the area outside the symbol is light); N2 (3) for each 2x2 same-colour
    block; N4 (10 per 5 % step) for the dark share's distance from 50 %.
    Run history: h0 is the newest run, h1..h5 the candidate core, h6 the run before it.
    """
    stride = (size + 7) >> 3
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
            # module k of the line is bit `shift` of m[p]: a row moves on by bits, a column
            # by rows
            if orient == 0:
                p = line * stride
                shift = 7
                down = 0
                right = 1
            else:
                p = line >> 3
                shift = 7 - (line & 7)
                down = stride
                right = 0
            k = 0
            while k <= size:
                if k < size:
                    c = (m[p] >> shift) & 1
                    p += down
                    shift -= right
                    if shift < 0:
                        shift = 7
                        p += 1
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

    # N2 and the dark count, one row pair at a time, a byte of each row at a time: c/d the
    # module of rows y and y + 1 in this column, pc/pd in the previous one.
    dark = 0
    y = 0
    while y < size:
        p = y * stride
        below = stride
        if y == size - 1:
            below = 0  # the last row starts no block
        pc = 0
        pd = 0
        top = 0
        bottom = 0
        x = 0
        while x < size:
            if (x & 7) == 0:
                top = m[p]
                bottom = m[p + below]
                p += 1
            c = (top >> 7) & 1
            d = (bottom >> 7) & 1
            top <<= 1
            bottom <<= 1
            dark += c
            if below and x > 0 and c == d and c == pc and c == pd:
                result += 3
            pc = c
            pd = d
            x += 1
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
