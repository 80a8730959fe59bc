"""Codeword placement (§7.7.3), reading the codewords in their interleaved order (§7.6).

Its own module, apart from matrix.py, because compiling viper code from source takes heap
per module (see docs/qr-encoder.md).
"""

from firmware.compat import micropython, ptr8, ptr16


@micropython.viper
def place(m: ptr8, func: ptr8, cw: ptr8, dims: ptr16):
    """Lay the codeword bits into the modules that are not function modules (§7.7.3): two-
    module-wide columns from the right, zigzagging up and down, skipping the vertical timing
    column. `m` starts with every such module light, so only dark bits are written and the
    remainder bits stay light.

    `cw` holds the data codewords block after block, then the ECC codewords block after
    block; they are read in the final interleaved order (§7.6): data codewords column by
    column across the blocks (short blocks have no last column), then ECC codewords
    likewise. dims = (blocks, short blocks, data codewords of a short block, ECC codewords
    per block, size).
    """
    nblocks = dims[0]
    nshort = dims[1]
    slen = dims[2]
    d = dims[3]
    size = dims[4]
    stride = (size + 7) >> 3
    full = nblocks * slen  # codewords of the columns every block has
    n_data = full + nblocks - nshort
    total = n_data + nblocks * d
    k = 0  # index of the codeword in interleaved order
    bit = 8  # next bit of `cur`, 8 = fetch the next codeword
    cur = 0
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
            x = right
            while x >= right - 1:
                p = y * stride + (x >> 3)
                b = 0x80 >> (x & 7)
                if (func[p] & b) == 0:
                    if bit == 8:
                        if k == total:
                            return
                        if k < full:
                            i = k // nblocks
                            blk = k - i * nblocks
                        elif k < n_data:
                            i = slen
                            blk = nshort + k - full
                        else:
                            i = (k - n_data) // nblocks
                            blk = k - n_data - i * nblocks
                        if k < n_data:
                            off = blk * slen + i
                            if blk > nshort:
                                off += blk - nshort
                        else:
                            off = n_data + blk * d + i
                        cur = cw[off]
                        k += 1
                        bit = 0
                    if (cur << bit) & 0x80:
                        m[p] = m[p] | b
                    bit += 1
                x -= 1
            vert += 1
        right -= 2
