"""Symbol geometry (§6.3, §7.7-7.10): sizes, codeword counts and the function patterns.

The module grid is one byte per module, row-major (`y * size + x`): bit 0 = dark, bit 1 =
function module (finder, separator, timing, alignment, format, version areas). The grid of the
last version used is kept and reused: `place` rewrites every data module and the format
modules are redrawn per mask, so only a change of version builds a new grid. `pack` gives the
1-bit-per-module matrix a QRCode holds.
"""

from ._native import micropython, ptr8
from .tables import ECC_CODEWORDS_PER_BLOCK, ECC_FORMAT_BITS, NUM_BLOCKS


def size_of(version):
    return version * 4 + 17


def raw_modules(version):
    """Modules left for codewords (data + ECC + remainder bits) after the function patterns."""
    result = (16 * version + 128) * version + 64
    if version >= 2:
        n = version // 7 + 2
        result -= (25 * n - 10) * n - 55  # alignment patterns, minus their overlap with timing
        if version >= 7:
            result -= 36  # two 6x3 version information blocks
    return result


def block_layout(version, ecc):
    """(blocks, short blocks, data codewords per short block, ECC codewords per block)."""
    i = ecc * 41 + version
    blocks = NUM_BLOCKS[i]
    ecc_len = ECC_CODEWORDS_PER_BLOCK[i]
    raw = raw_modules(version) // 8
    return blocks, blocks - raw % blocks, raw // blocks - ecc_len, ecc_len


def data_codewords(version, ecc):
    i = ecc * 41 + version
    return raw_modules(version) // 8 - ECC_CODEWORDS_PER_BLOCK[i] * NUM_BLOCKS[i]


def alignment_positions(version):
    """Row/column centres of the alignment patterns (Annex E): evenly spaced from the far
    edge with an even step, the first one always at 6."""
    if version == 1:
        return []
    n = version // 7 + 2
    step = (version * 8 + n * 3 + 5) // (n * 4 - 4) * 2
    return [6] + [size_of(version) - 7 - (n - 2 - i) * step for i in range(n - 1)]


def format_word(ecc, mask):
    """15-bit format information (§7.9.1): ECC level and mask, BCH(15,5) code, XOR 0x5412."""
    data = ECC_FORMAT_BITS[ecc] << 3 | mask
    rem = data
    for _ in range(10):
        rem = (rem << 1) ^ ((rem >> 9) * 0x537)
    return (data << 10 | rem) ^ 0x5412


def version_word(version):
    """18-bit version information (§7.10): version and BCH(18,6) code."""
    rem = version
    for _ in range(12):
        rem = (rem << 1) ^ ((rem >> 11) * 0x1F25)
    return version << 12 | rem


@micropython.viper
def draw_format(grid: ptr8, size: int, bits: int):
    """Draw the 15-bit format information (§7.9) twice, and the dark module beside it."""
    i = 0
    while i < 15:
        v = 2 | ((bits >> i) & 1)
        if i < 6:
            grid[i * size + 8] = v
        elif i < 8:
            grid[(i + 1) * size + 8] = v
        elif i == 8:
            grid[8 * size + 7] = v
        else:
            grid[8 * size + 14 - i] = v
        if i < 8:
            grid[8 * size + size - 1 - i] = v
        else:
            grid[(size - 15 + i) * size + 8] = v
        i += 1
    grid[(size - 8) * size + 8] = 3


@micropython.viper
def place(grid: ptr8, size: int, cw: ptr8, nbits: int):
    """Lay codeword bits into the non-function modules (§7.7.3): two-module-wide columns from
    the right, zigzagging up and down, skipping the vertical timing column. Every data module
    is written (remainder bits light), so a grid can be reused for the next symbol."""
    i = 0
    right = size - 1
    while right >= 1:
        if right == 6:
            right = 5
        upward = ((right + 1) & 2) == 0
        vert = 0
        while vert < size:
            y = vert
            if upward:
                y = size - 1 - vert
            p = y * size + right
            j = 0
            while j < 2:
                if (grid[p] & 2) == 0:
                    if i < nbits:
                        grid[p] = (cw[i >> 3] >> (7 - (i & 7))) & 1
                        i += 1
                    else:
                        grid[p] = 0
                p -= 1
                j += 1
            vert += 1
        right -= 2


@micropython.viper
def pack(grid: ptr8, size: int, out: ptr8):
    """Pack the grid's dark bits into `out` (zeroed): row-major, MSB first, rows padded to bytes."""
    stride = (size + 7) >> 3
    y = 0
    p = 0
    while y < size:
        row = y * stride
        x = 0
        while x < size:
            if grid[p] & 1:
                out[row + (x >> 3)] |= 0x80 >> (x & 7)
            x += 1
            p += 1
        y += 1


_last = [0, None]  # version, function-pattern grid


def function_grid(version):
    """The grid for `version` with its function patterns drawn and flagged."""
    if _last[0] == version:
        return _last[1]
    _last[1] = None  # let the old grid go before allocating the new one
    size = size_of(version)
    grid = bytearray(size * size)

    def put(x, y, dark):
        grid[y * size + x] = 2 | dark

    for i in range(size):  # timing patterns
        put(6, i, 1 - i % 2)
        put(i, 6, 1 - i % 2)
    for cx, cy in ((3, 3), (size - 4, 3), (3, size - 4)):  # finders with their separators
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                x = cx + dx
                y = cy + dy
                if 0 <= x < size and 0 <= y < size:
                    dist = max(abs(dx), abs(dy))
                    put(x, y, 0 if dist == 2 or dist == 4 else 1)
    pos = alignment_positions(version)
    last = len(pos) - 1
    for i in range(last + 1):
        for j in range(last + 1):
            if (i == 0 and j == 0) or (i == 0 and j == last) or (i == last and j == 0):
                continue  # these corners hold finders
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    put(pos[i] + dx, pos[j] + dy, 0 if max(abs(dx), abs(dy)) == 1 else 1)
    draw_format(grid, size, 0)  # reserve the format areas (redrawn for every mask)
    if version >= 7:
        bits = version_word(version)
        for i in range(18):
            a = size - 11 + i % 3
            b = i // 3
            put(a, b, (bits >> i) & 1)
            put(b, a, (bits >> i) & 1)
    _last[0] = version
    _last[1] = grid
    return grid
