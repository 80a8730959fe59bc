"""Data bit stream (§7.4): mode indicators, character counts and segment data, packed MSB
first into a zeroed bytearray of data codewords."""

from firmware.compat import micropython, ptr8

from .tables import ALNUM_VALUE

# Mode indicators (Table 2); also the mode field of a segment span (see segments).
NUMERIC = 1
ALPHANUMERIC = 2
BYTE = 4


@micropython.viper
def put_bits(buf: ptr8, pos: int, val: int, n: int) -> int:
    """Write the low `n` bits of `val` MSB first at bit `pos` of a zeroed buffer; new position."""
    while n > 0:
        n -= 1
        if (val >> n) & 1:
            buf[pos >> 3] |= 0x80 >> (pos & 7)
        pos += 1
    return pos


@micropython.viper
def segment_bits(buf: ptr8, pos: int, src: ptr8, span: int) -> int:
    """Write the data bits of one segment (§7.4.3-7.4.5) at bit `pos`; returns the new position.

    span = start | end << 13 | mode << 26 (see segments), [start, end) indexing `src`.
    Numeric: 3 digits in 10 bits (a tail of 2 in 7, of 1 in 4). Alphanumeric: 2 chars as
    45*a + b in 11 bits (a tail of 1 in 6). Byte: 8 bits each.
    """
    alnum = ptr8(ALNUM_VALUE)
    i = span & 0x1FFF
    end = (span >> 13) & 0x1FFF
    mode = span >> 26
    while i < end:
        if mode == 1:
            v = src[i] - 48
            n = 4
            i += 1
            if i < end:
                v = v * 10 + src[i] - 48
                n = 7
                i += 1
                if i < end:
                    v = v * 10 + src[i] - 48
                    n = 10
                    i += 1
        elif mode == 2:
            v = alnum[src[i]]
            n = 6
            i += 1
            if i < end:
                v = v * 45 + alnum[src[i]]
                n = 11
                i += 1
        else:
            v = src[i]
            n = 8
            i += 1
        while n > 0:
            n -= 1
            if (v >> n) & 1:
                buf[pos >> 3] |= 0x80 >> (pos & 7)
            pos += 1
    return pos
