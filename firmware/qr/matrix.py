"""Symbol geometry (§6.3, §7.7, §7.9-7.10): sizes, codeword counts, the function patterns,
format and version information.

Every module buffer is packed like QRCode.matrix: row-major, 1 bit per module, most
significant bit first, rows padded to whole bytes (`stride = (size + 7) // 8`). The symbol
is built in the very matrix a QRCode returns, so no buffer has one byte per module: a
version-40 matrix is 177 * 23 = 4071 bytes. Two packed buffers of the last version are kept
for the next symbol (an encoder.Workspace instead draws the patterns into each matrix): the
function patterns' dark modules (a new matrix starts as a copy) and the function mask
(1 = function module: finder, separator, timing, alignment, format and version areas, the
dark module; also the padding bits of each row), which placement and masking skip.
"""

from firmware.compat import micropython, ptr8

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
def draw_format(m: ptr8, size: int, bits: int):
    """Draw the 15-bit format information (§7.9) twice into packed matrix `m`, and the dark
    module beside it. With bits = 0x7FFF it marks the format areas in a function mask."""
    stride = (size + 7) >> 3
    i = 0
    while i < 15:
        v = (bits >> i) & 1
        k = 0
        while k < 2:  # the copy around the top-left finder, then the split copy
            if k == 0:
                x = 8
                y = i
                if i == 6 or i == 7:
                    y = i + 1
                elif i == 8:
                    x = 7
                    y = 8
                elif i > 8:
                    x = 14 - i
                    y = 8
            elif i < 8:
                x = size - 1 - i
                y = 8
            else:
                x = 8
                y = size - 15 + i
            p = y * stride + (x >> 3)
            b = 0x80 >> (x & 7)
            if v:
                m[p] = m[p] | b
            else:
                m[p] = m[p] & (0xFF ^ b)
            k += 1
        i += 1
    p = (size - 8) * stride + 1  # the dark module, (8, size - 8)
    m[p] = m[p] | 0x80


_last = [0, None, None]  # version, its function patterns' dark modules, its function mask


def function_patterns(version):
    """(dark modules, function mask) of `version`'s function patterns, both packed."""
    if _last[0] == version:
        return _last[1], _last[2]
    _last[1] = _last[2] = None  # let the old buffers go before allocating the new ones
    size = size_of(version)
    stride = (size + 7) >> 3
    dark = bytearray(size * stride)
    func = bytearray(size * stride)
    draw_function_patterns(version, dark, func)
    _last[0] = version
    _last[1] = dark
    _last[2] = func
    return dark, func


def draw_function_patterns(version, dark, func):
    """Draw `version`'s function patterns into `dark` and `func`, packed, both all zero."""
    size = size_of(version)
    stride = (size + 7) >> 3

    def put(x, y, on):
        p = y * stride + (x >> 3)
        b = 0x80 >> (x & 7)
        func[p] |= b
        if on:
            dark[p] |= b

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
    for y in range(size):  # the padding bits of each row are never data
        func[y * stride + stride - 1] |= 0xFF >> (size - (stride - 1) * 8)
    draw_format(func, size, 0x7FFF)  # reserve the format areas (drawn for every mask)
    draw_format(dark, size, 0)
    if version >= 7:
        bits = version_word(version)
        for i in range(18):
            a = size - 11 + i % 3
            b = i // 3
            put(a, b, (bits >> i) & 1)
            put(b, a, (bits >> i) & 1)
