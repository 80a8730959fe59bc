"""CPython versions of the mask loops: the same results as masks.apply_mask/penalty, with
the per-module loops moved into C (bytes.translate, regular expressions, big-int bit ops).

Imported only by masks.py, and only where `micropython` is missing (the host imports
firmware.qr to check what a unit drew). Tests compare these with the plain loops.
"""

import re

# Grid byte -> b"0" light / b"1" dark (the function flag dropped), for int(..., 2).
_ASCII = bytes(48 + (b & 1) for b in range(256))
# Dark bit of each grid byte, for the byte-per-module big ints.
_DARK = bytes(b & 1 for b in range(256))
# Rule 3 at scale 1, as bit strings: light >= 1 before and >= 4 after the core, and mirrored.
_FINDER_AFTER = "010111010000"
_FINDER_BEFORE = "000010111010"

_patterns = {}  # (size, mask) -> int with 1 in the byte of each module the mask flips
_finders = {}  # size -> compiled finder-like patterns for scales n >= 2
_pairs = {}  # size -> bits of the line buffer whose next module is on the same line
_blocks = {}  # size -> int with 1 in the byte of each top-left corner of a 2x2 block


def _mask_pattern(grid, size, mask):
    key = (size, mask)
    pattern = _patterns.get(key)
    if pattern is None:
        # Table 10 conditions, x = column, y = row; same as masks.apply_mask.
        cond = (
            lambda x, y: (x + y) % 2,
            lambda x, y: y % 2,
            lambda x, y: x % 3,
            lambda x, y: (x + y) % 3,
            lambda x, y: (x // 3 + y // 2) % 2,
            lambda x, y: x * y % 2 + x * y % 3,
            lambda x, y: (x * y % 2 + x * y % 3) % 2,
            lambda x, y: ((x + y) % 2 + x * y % 3) % 2,
        )[mask]
        flips = bytes(
            1 if not grid[y * size + x] & 2 and cond(x, y) == 0 else 0
            for y in range(size)
            for x in range(size)
        )
        pattern = _patterns[key] = int.from_bytes(flips, "little")
    return pattern


def apply_mask(grid, size, mask):
    n = size * size
    flipped = int.from_bytes(grid[:n], "little") ^ _mask_pattern(grid, size, mask)
    grid[:n] = flipped.to_bytes(n, "little")


def _finder_regexes(size):
    """For each scale n >= 2: light >= n, dark n, light n, dark 3n, light n, dark n,
    light >= 4n, and its mirror image; lookaheads, so overlapping matches all count."""
    found = _finders.get(size)
    if found is None:
        found = []
        for n in range(2, size // 7 + 1):
            core = b"0" + b"1" * n + b"0" * n + b"1" * (3 * n) + b"0" * n + b"1" * n + b"0"
            found.append(
                (
                    core,
                    re.compile(b"(?=" + b"0" * (n - 1) + core + b"0" * (4 * n - 1) + b")"),
                    re.compile(b"(?=" + b"0" * (4 * n - 1) + core + b"0" * (n - 1) + b")"),
                )
            )
        _finders[size] = found
    return found


def _block_corners(size):
    corners = _blocks.get(size)
    if corners is None:
        cells = bytes(
            1 if x < size - 1 and y < size - 1 else 0 for y in range(size) for x in range(size)
        )
        corners = _blocks[size] = int.from_bytes(cells, "little")
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


def penalty(grid, size):
    """masks.penalty, on all rows and columns at once: one bit per module, lines separated
    by `size` light modules (outside the symbol is light for rule 3)."""
    n = size * size
    ascii = grid[:n].translate(_ASCII)
    gap = b"0" * size
    lines = (
        gap
        + gap.join(
            [ascii[y * size : (y + 1) * size] for y in range(size)]
            + [ascii[x::size] for x in range(size)]
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

    # N2 on byte-per-module ints: a corner whose right, lower and diagonal neighbours match.
    dark = grid[:n].translate(_DARK)
    g = int.from_bytes(dark, "little")
    differs = (g ^ (g >> 8)) | (g ^ (g >> (8 * size))) | (g ^ (g >> (8 * size + 8)))
    result += 3 * (_block_corners(size) & ~differs).bit_count()

    # N4
    black = dark.count(1)
    result += ((abs(black * 20 - n * 10) + n - 1) // n - 1) * 10
    return result
