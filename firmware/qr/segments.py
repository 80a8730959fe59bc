"""Segments (§7.4): which mode encodes which part of the data, and how many bits that costs.

A segment is one int, `start | end << 13 | mode << 26`, over the data bytes [start, end),
so a segmentation is a short list of small ints (under 2**30: no big int on a 32-bit board). Segmentation works on the UTF-8 bytes:
a multi-byte character has no digit or alphanumeric byte, so it always lands in byte mode.
"""

from firmware.compat import micropython, ptr8

from .bitstream import ALPHANUMERIC, BYTE, NUMERIC
from .tables import ALNUM_VALUE

# Mode indicator of an ECI header (§7.4.2) and the ECI assignment number for UTF-8.
ECI = 7
ECI_UTF8 = 26
ECI_HEADER_BITS = 4 + 8  # mode indicator + one-byte assignment number (0-127)

# Table 3: character count indicator width, by version group (1-9, 10-26, 27-40),
# for numeric, alphanumeric and byte mode.
_COUNT_BITS = b"\x0a\x0c\x0e\x09\x0b\x0d\x08\x10\x10"
# Bits for a numeric tail of 0, 1 or 2 digits.
_NUMERIC_TAIL = b"\x00\x04\x07"

MAX_LENGTH = 0x1FFF  # the span fields hold 13 bits; version 40 holds at most 7089 chars anyway


def group(version):
    """Version group for the character count widths: 0 for 1-9, 1 for 10-26, 2 for 27-40."""
    return 0 if version < 10 else 1 if version < 27 else 2


def count_bits(mode, grp):
    return _COUNT_BITS[(0 if mode == NUMERIC else 1 if mode == ALPHANUMERIC else 2) * 3 + grp]


def data_bits(mode, n):
    """Bits of the data of an `n`-character segment, without its header."""
    if mode == NUMERIC:
        return n // 3 * 10 + _NUMERIC_TAIL[n % 3]
    if mode == ALPHANUMERIC:
        return n // 2 * 11 + n % 2 * 6
    return n * 8


@micropython.viper
def segment_modes(src: ptr8, n: int, work: ptr8, count_bits: int):
    """Optimal mode per byte (ISO/IEC 18004 Annex J; Nayuki's optimal-segments method).

    Dynamic programming over the data with costs in sixths of a bit: a digit costs 20
    (10 bits per 3), an alphanumeric char 33 (11 bits per 2), a byte 48. State j after byte i
    is "the next byte goes in mode j"; switching after byte i rounds its segment up to whole
    bits (which makes partial numeric/alphanumeric groups exact) and pays mode j's header
    (4 + count bits). work[i] (n bytes) records the mode byte i used to reach each state j, in
    bits 2j..2j+1 (3 = not possible); the backtrack replaces it with the chosen mode indicator
    (1, 2 or 4).
    count_bits = byte | alphanumeric << 5 | numeric << 10 (character count widths).
    Mode indices: 0 byte, 1 alphanumeric, 2 numeric.
    """
    alnum = ptr8(ALNUM_VALUE)
    hb = (4 + (count_bits & 31)) * 6
    ha = (4 + ((count_bits >> 5) & 31)) * 6
    hn = (4 + (count_bits >> 10)) * 6
    inf = 1 << 28
    cb = hb
    ca = ha
    cn = hn
    i = 0
    while i < n:
        ch = src[i]
        cb += 48
        wb = 0
        if ch < 128 and alnum[ch] != 255:
            ca += 33
            wa = 1
        else:
            ca = inf
            wa = 3
        if ch >= 48 and ch <= 57:
            cn += 20
            wn = 2
        else:
            cn = inf
            wn = 3
        # End the segment after byte i (whole bits) and start one in another mode.
        eb = (cb + 5) // 6 * 6
        ea = (ca + 5) // 6 * 6
        en = (cn + 5) // 6 * 6
        # to byte
        if ea + hb < cb:
            cb = ea + hb
            wb = 1
        if en + hb < cb:
            cb = en + hb
            wb = 2
        # to alphanumeric
        if eb + ha < ca:
            ca = eb + ha
            wa = 0
        if en + ha < ca:
            ca = en + ha
            wa = 2
        # to numeric
        if eb + hn < cn:
            cn = eb + hn
            wn = 0
        if ea + hn < cn:
            cn = ea + hn
            wn = 1
        work[i] = wb | wa << 2 | wn << 4
        i += 1
    m = 0
    if ca < cb:
        m = 1
        cb = ca
    if cn < cb:
        m = 2
    i = n - 1
    while i >= 0:
        m = (work[i] >> (m * 2)) & 3
        if m == 0:
            work[i] = 4
        else:
            work[i] = 3 - m
        i -= 1


@micropython.viper
def run_end(buf: ptr8, i: int, n: int) -> int:
    """End of the run of equal bytes that starts at `i` (n = length of the buffer)."""
    v = buf[i]
    i += 1
    while i < n and buf[i] == v:
        i += 1
    return i


def optimal(src, grp, work=None):
    """Segments with the fewest bits for `src` (bytes) in version group `grp`; `work` is a
    buffer of at least len(src) bytes to plan in (None: one is allocated)."""
    n = len(src)
    if n == 0:
        return []
    if work is None:
        work = bytearray(n)
    segment_modes(
        src,
        n,
        work,
        count_bits(BYTE, grp) | count_bits(ALPHANUMERIC, grp) << 5 | count_bits(NUMERIC, grp) << 10,
    )
    spans = []
    i = 0
    while i < n:
        j = run_end(work, i, n)
        spans.append(i | j << 13 | work[i] << 26)
        i = j
    return spans


def unpack(span):
    """(start, end, mode indicator) of a segment."""
    return span & 0x1FFF, (span >> 13) & 0x1FFF, span >> 26


def total_bits(spans, grp):
    """Bits of all segments with their headers. A count never overflows its field in a
    symbol the bits fit: every version holds fewer characters of a mode than its count
    field can say (at most 97 %), which tests check."""
    total = 0
    for span in spans:
        start, end, mode = unpack(span)
        total += 4 + count_bits(mode, grp) + data_bits(mode, end - start)
    return total
