"""encode(): data -> QR Code model 2 symbol (ISO/IEC 18004:2015), steps in the spec's order.

1. segments (§7.4): optimal mode split, ECI 26 header for non-ASCII text;
2. version (§7.3): the smallest that holds the bits, unless one is asked for;
3. data codewords (§7.4.9): terminator, zero bits to a byte, pad codewords 0xEC 0x11;
4. error correction (§7.5) and interleaving (§7.6);
5. placement (§7.7), masking with the penalty rules (§7.8), format/version info (§7.9-7.10).
"""

from array import array

from firmware.compat import micropython, ptr8, utf8

from . import bitstream, masks, matrix, placement, rs, segments
from .bitstream import ALPHANUMERIC, BYTE, NUMERIC
from .tables import ECC_LEVELS

_MODES = {"numeric": NUMERIC, "alphanumeric": ALPHANUMERIC, "byte": BYTE}


class QRError(ValueError):
    """The data does not fit, or an argument is out of range; the message says what fits."""


class QRCode:
    """An encoded symbol.

    `matrix` is the packed module matrix: row-major, 1 bit per module (1 = dark), most
    significant bit first, each row padded to whole bytes, so module (x, y) is bit
    `7 - x % 8` of `matrix[y * stride + x // 8]` with `stride = (size + 7) // 8`.
    """

    def __init__(self, version, ecc, mask, matrix):
        self.version = version
        self.ecc = ecc
        self.mask = mask
        self.size = version * 4 + 17
        self.stride = (self.size + 7) >> 3
        self.matrix = matrix

    def module(self, x, y):
        """True if module (x = column, y = row) is dark; outside the symbol (the quiet
        zone) is light."""
        size = self.size
        if 0 <= x < size and 0 <= y < size:
            return (self.matrix[y * self.stride + (x >> 3)] >> (7 - (x & 7))) & 1 == 1
        return False

    def __repr__(self):
        return "<QRCode version %d-%s mask %d, %dx%d>" % (
            self.version,
            self.ecc,
            self.mask,
            self.size,
            self.size,
        )


class Workspace:
    """The buffers of symbols up to `max_version`, allocated once: a unit makes one at boot, so
    that encode(..., workspace=) later allocates only small pieces (the segment list, the block
    layout) and a long-running unit's fragmented heap never has to find a payload's size, let
    alone 4 KB, in one piece. The symbol encode() returns lives in it until the next encode.
    Its function patterns are drawn into the matrix for each symbol instead of copied from a
    cached one: 4 KB less, a few ms more.
    """

    def __init__(self, max_version):
        _check_version(max_version)
        n = _matrix_bytes(max_version)
        self.max_version = max_version
        # The matrix, then the function mask. Before either is drawn, the segment planner
        # keeps its mode per data byte here: twice a matrix holds more bytes than any symbol
        # of the version takes (7089 digits at version 40 against 8142), so the planning of
        # data that fits needs no buffer of its own.
        self.modules = bytearray(2 * n)
        self.codewords = bytearray(matrix.raw_modules(max_version) >> 3)

    def scratch(self, n):
        """`n` bytes for the segment planner, or None when no symbol here holds that much."""
        return memoryview(self.modules)[:n] if n <= len(self.modules) else None

    def start(self, version):
        """(the matrix with `version`'s function patterns, its function mask), as views of
        exactly its size; the codewords buffer zeroed."""
        n = _matrix_bytes(version)
        half = len(self.modules) >> 1
        packed = memoryview(self.modules)[:n]
        func = memoryview(self.modules)[half : half + n]
        _zero(packed, n)
        _zero(func, n)
        _zero(self.codewords, len(self.codewords))
        matrix.draw_function_patterns(version, packed, func)
        return packed, func


@micropython.viper
def _zero(buf: ptr8, n: int):
    i = 0
    while i < n:
        buf[i] = 0
        i += 1


def _matrix_bytes(version):
    size = matrix.size_of(version)
    return size * ((size + 7) >> 3)


def _ecc_index(ecc):
    i = ECC_LEVELS.find(ecc) if isinstance(ecc, str) and len(ecc) == 1 else -1
    if i < 0:
        raise QRError("ecc must be one of 'L', 'M', 'Q', 'H', not %r" % (ecc,))
    return i


def _check_version(version):
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 40:
        raise QRError(
            "version must be an int from 1 to 40 (or None for the smallest), not %r" % (version,)
        )


def capacity(version, ecc, mode):
    """Most characters (digits, alphanumeric chars or bytes) one segment of `mode`
    ("numeric", "alphanumeric" or "byte") can hold in `version` at `ecc`."""
    _check_version(version)
    e = _ecc_index(ecc)
    m = _MODES.get(mode)
    if m is None:
        raise QRError("mode must be 'numeric', 'alphanumeric' or 'byte', not %r" % (mode,))
    width = segments.count_bits(m, segments.group(version))
    bits = matrix.data_codewords(version, e) * 8 - 4 - width
    if m == NUMERIC:
        rem = bits % 10
        return bits // 10 * 3 + (2 if rem >= 7 else 1 if rem >= 4 else 0)
    if m == ALPHANUMERIC:
        return bits // 11 * 2 + (1 if bits % 11 >= 6 else 0)
    return bits // 8


def _too_long(bits, e, version):
    v = version or 40
    cap = matrix.data_codewords(v, e) * 8
    letter = ECC_LEVELS[e]
    where = ("version %d-%s" % (v, letter)) if version else ("any version at ECC %s" % letter)
    return QRError(
        "data too long for %s: it needs %d data bits, version %d-%s holds %d "
        "(%d bytes, %d alphanumeric characters or %d digits in one segment); "
        "shorten the data%s"
        % (
            where,
            bits,
            v,
            letter,
            cap,
            capacity(v, letter, "byte"),
            capacity(v, letter, "alphanumeric"),
            capacity(v, letter, "numeric"),
            ", choose a larger version"
            if version and version < 40
            else " or lower the ECC level"
            if e
            else "",
        )
    )


def plan(src, e, version=None, eci=False, work=None):
    """(version, segments, bits): the smallest version (or `version`) holding `src` at ECC `e`.

    The optimal split depends on the count widths, so it is recomputed per version group;
    `work` (len(src) bytes, or None) is where it keeps the mode of each byte.
    """
    header = segments.ECI_HEADER_BITS if eci else 0
    for grp, lo, hi in ((0, 1, 9), (1, 10, 26), (2, 27, 40)):
        if version:
            if segments.group(version) != grp:
                continue
            lo = hi = version
        spans = segments.optimal(src, grp, work)
        bits = segments.total_bits(spans, grp) + header
        for v in range(lo, hi + 1):
            if bits <= matrix.data_codewords(v, e) * 8:
                return v, spans, bits
    raise _too_long(bits, e, version)


def _source(data, ecc, version):
    """(ECC index, bytes to encode, whether they need the UTF-8 ECI header), checked."""
    e = _ecc_index(ecc)
    if version is not None:
        _check_version(version)
    if isinstance(data, str):
        src = utf8(data)
        eci = len(src) != len(data)
    elif isinstance(data, (bytes, bytearray)):
        src = data
        eci = False
    else:
        raise QRError("data must be str or bytes, not %s" % type(data).__name__)
    if len(src) > segments.MAX_LENGTH:
        raise _too_long(len(src) * 8, e, version)
    return e, src, eci


def fit(data, ecc="M"):
    """The smallest version holding `data` at `ecc`, as encode() would choose it, without
    building the symbol (a few ms instead of ~100 at version 40); raises QRError likewise."""
    e, src, eci = _source(data, ecc, None)
    return plan(src, e, None, eci)[0]


def encode(data, ecc="M", version=None, mask=None, workspace=None):
    """Encode `data` (str as UTF-8, or bytes) at error correction level `ecc` ("L", "M", "Q"
    or "H"), in the smallest version unless `version` (1-40) is given, with the mask that the
    spec's penalty rules choose unless `mask` (0-7) is given. Returns a QRCode; raises QRError.
    With a `workspace`, the symbol is built in its buffers, and data that needs a version
    above its max_version raises QRError before anything is built.

    Text with a non-ASCII character gets an ECI 26 (UTF-8) header, because a decoder
    otherwise reads bytes as ISO-8859-1 (the spec's default); bytes are encoded as given.
    """
    if mask is not None and (not isinstance(mask, int) or not 0 <= mask <= 7):
        raise QRError("mask must be an int from 0 to 7 (or None for the best), not %r" % (mask,))
    e, src, eci = _source(data, ecc, version)
    work = workspace.scratch(len(src)) if workspace else None
    version, spans, bits = plan(src, e, version, eci, work)
    grp = segments.group(version)

    # Codewords: the data (segments, terminator of up to 4 zero bits, byte alignment, pad
    # codewords), then the ECC of each block after it, in one buffer sized for the version.
    n_data = matrix.data_codewords(version, e)
    n_cw = matrix.raw_modules(version) >> 3
    if workspace is None:
        cw = bytearray(n_cw)
    elif version > workspace.max_version:
        raise _too_long(bits, e, workspace.max_version)
    else:
        packed, func = workspace.start(version)
        cw = memoryview(workspace.codewords)[:n_cw]
    put = bitstream.put_bits
    pos = 0
    if eci:
        pos = put(cw, put(cw, 0, segments.ECI, 4), segments.ECI_UTF8, 8)
    for span in spans:
        start, end, mode = segments.unpack(span)
        pos = put(cw, pos, mode, 4)
        pos = put(cw, pos, end - start, segments.count_bits(mode, grp))
        pos = bitstream.segment_bits(cw, pos, src, span)
    pad = 0xEC
    for i in range((pos + 4 + 7) >> 3, n_data):
        cw[i] = pad
        pad ^= 0xEC ^ 0x11
    size = matrix.size_of(version)
    dims = array("H", matrix.block_layout(version, e) + (size,))
    rs.rs_blocks(cw, rs.generator(dims[3]), dims)

    # Modules, in the packed matrix the QRCode keeps: function patterns, the codewords
    # interleaved (§7.6) as they are placed, then the mask with the lowest penalty.
    if workspace is None:
        dark, func = matrix.function_patterns(version)
        packed = bytearray(dark)
    placement.place(packed, func, cw, dims)
    if mask is None:
        best = 0
        for m in range(8):
            masks.apply_mask(packed, func, size, m)
            matrix.draw_format(packed, size, matrix.format_word(e, m))
            score = masks.penalty(packed, size)
            if m == 0 or score < best:
                best = score
                mask = m
            masks.apply_mask(packed, func, size, m)
    masks.apply_mask(packed, func, size, mask)
    matrix.draw_format(packed, size, matrix.format_word(e, mask))
    return QRCode(version, ECC_LEVELS[e], mask, packed)
