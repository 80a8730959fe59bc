"""CPython versions of the mask loops: the same results as masks.apply_mask/penalty, with
the per-module loops moved into C (big-int bit operations, string slicing, regular
expressions) over the packed matrix.

Imported only by masks.py, and only on CPython (`firmware.compat.CPYTHON`: the host imports
firmware.qr to check what a unit drew). Tests compare these with the plain loops.
"""

import re

from .tables import MASK_ROWS

# Rule 3 at scale 1, as bit strings: light >= 1 before and >= 4 after the core, and mirrored.
_FINDER_AFTER = "010111010000"
_FINDER_BEFORE = "000010111010"

_patterns = {}  # (size, mask) -> int with the bits of the matrix the mask flips
_finders = {}  # size -> compiled finder-like patterns for scales n >= 2
_pairs = {}  # size -> bits of the line buffer whose next module is on the same line
_blocks = {}  # size -> bits of the matrix that are the top-left corner of a 2x2 block


def _mask_pattern(func, size, mask):
    key = (size, mask)
    pattern = _patterns.get(key)
    if pattern is None:
        pad = "0" * (-size % 8)
        rows = []
        for y in range(size):
            six = MASK_ROWS[mask * 12 + y % 12]  # see tables.MASK_ROWS
            rows.append("".join("1" if six & 32 >> x % 6 else "0" for x in range(size)) + pad)
        rows = "".join(rows)
        pattern = int(rows, 2) & ~int.from_bytes(func, "big")
        _patterns[key] = pattern
    return pattern


def apply_mask(m, func, size, mask):
    n = len(m)
    m[:] = (int.from_bytes(m, "big") ^ _mask_pattern(func, size, mask)).to_bytes(n, "big")


def _finder_regexes(size):
    """For each scale n >= 2: light >= n, dark n, light n, dark 3n, light n, dark n,
    light >= 4n, and its mirror image; lookaheads, so overlapping matches all count."""
    found = _finders.get(size)
    if found is None:
        found = []
        for n in range(2, size // 7 + 1):
            core = "0" + "1" * n + "0" * n + "1" * (3 * n) + "0" * n + "1" * n + "0"
            found.append(
                (
                    core,
                    re.compile("(?=" + "0" * (n - 1) + core + "0" * (4 * n - 1) + ")"),
                    re.compile("(?=" + "0" * (4 * n - 1) + core + "0" * (n - 1) + ")"),
                )
            )
        _finders[size] = found
    return found


def _block_corners(size):
    """1 at each module of the packed matrix (as a big-endian int) that is the top-left
    module of a 2x2 block."""
    corners = _blocks.get(size)
    if corners is None:
        row = "1" * (size - 1) + "0" * (-size % 8 + 1)
        corners = _blocks[size] = int(row * (size - 1) + "0" * len(row), 2)
    return corners


def _same_line_pairs(size):
    """Line buffer layout: light gap, line, light gap, line, ..., light gap (gaps of `size`,
    the light border the penalty rules assume); 1 where a module and the next share a line."""
    pairs = _pairs.get(size)
    if pairs is None:
        gap = "0" * size
        line = "1" * (size - 1) + "0"
        pairs = _pairs[size] = int(gap + gap.join([line] * (2 * size)) + gap, 2)
    return pairs


def _match(bits, pattern):
    """Bit i set where `pattern` starts at bit i, reading towards lower bits."""
    found = -1
    for k, c in enumerate(pattern):
        found &= (bits if c == "1" else ~bits) << k
    return found


def penalty(m, size):
    """masks.penalty, on all rows and columns at once: one bit per module, lines separated
    by `size` light modules (outside the symbol is light for rule 3)."""
    width = len(m) // size * 8  # bits per packed row
    g = int.from_bytes(m, "big")
    rows = format(g, "0%db" % (width * size))
    gap = "0" * size
    lines = (
        gap
        + gap.join(
            [rows[y * width : y * width + size] for y in range(size)]
            + [rows[x::width] for x in range(size)]
        )
        + gap
    )
    bits = int(lines, 2)
    valid = (1 << len(lines)) - 1

    # N1: with e = "module equals the next on its line", a run of L >= 5 has L - 4 windows of
    # 4 consecutive e bits; its penalty L - 2 is that plus 2 per run (block of windows).
    same = ~(bits ^ (bits << 1)) & _same_line_pairs(size)
    windows = same & (same << 1) & (same << 2) & (same << 3)
    result = windows.bit_count() + 2 * (windows & ~(windows << 1)).bit_count()

    # N3: scale 1 by bit matching; larger scales only when their core occurs at all.
    result += 40 * (
        (_match(bits, _FINDER_AFTER) & valid).bit_count()
        + (_match(bits, _FINDER_BEFORE) & valid).bit_count()
    )
    for core, before, after in _finder_regexes(size):
        if core in lines:
            result += 40 * (len(before.findall(lines)) + len(after.findall(lines)))

    # N2: a corner whose right, lower and diagonal neighbours match it (g << k brings the
    # module k bits further on into the corner's place).
    differs = (g ^ (g << 1)) | (g ^ (g << width)) | (g ^ (g << (width + 1)))
    result += 3 * (_block_corners(size) & ~differs).bit_count()

    # N4
    n = size * size
    black = g.bit_count()
    result += ((abs(black * 20 - n * 10) + n - 1) // n - 1) * 10
    return result
