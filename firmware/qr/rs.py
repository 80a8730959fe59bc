"""Error correction (§7.5): Reed-Solomon generator polynomials and the per-block division.
The interleaving of the blocks (§7.6) happens as matrix.place reads the codewords."""

from firmware.compat import micropython, ptr8, ptr16

from .tables import GF_EXP, GF_LOG

_generators = {}  # degree -> log2 of the coefficients; QR uses 13 distinct degrees


def _mul(a, b):
    return GF_EXP[GF_LOG[a] + GF_LOG[b]] if a and b else 0


def generator(degree):
    """log2 of the coefficients of (x - a^0)(x - a^1)...(x - a^(degree-1)), highest degree
    first, leading 1 omitted. All coefficients of these polynomials are non-zero."""
    logs = _generators.get(degree)
    if logs is None:
        coef = bytearray(degree)
        coef[degree - 1] = 1  # start from the polynomial 1
        root = 1
        for _ in range(degree):  # multiply by (x - root), root = a^0, a^1, ...
            for j in range(degree):
                coef[j] = _mul(coef[j], root)
                if j + 1 < degree:
                    coef[j] ^= coef[j + 1]
            root = _mul(root, 2)
        logs = bytes(GF_LOG[c] for c in coef)
        _generators[degree] = logs
    return logs


@micropython.viper
def rs_blocks(cw: ptr8, gen: ptr8, dims: ptr16):
    """Reed-Solomon remainders of every block (§7.5.2), written block after block right
    after the data codewords in `cw` (which holds the data codewords block after block).

    dims = (blocks, short blocks, data codewords of a short block, ECC codewords per block);
    long blocks carry one more data codeword. `gen` holds log2 of the generator polynomial's
    coefficients, highest degree first without the leading 1. Polynomial long division, with
    multiplication as exp[log a + log b] (GF_EXP is doubled, so no modulo).
    """
    gexp = ptr8(GF_EXP)
    glog = ptr8(GF_LOG)
    nblocks = dims[0]
    nshort = dims[1]
    d = dims[3]
    off = 0
    r = nblocks * dims[2] + nblocks - nshort  # the ECC of the first block follows the data
    b = 0
    while b < nblocks:
        n = dims[2]
        if b >= nshort:
            n += 1
        j = 0
        while j < d:
            cw[r + j] = 0
            j += 1
        k = 0
        while k < n:
            f = cw[off + k] ^ cw[r]
            j = 0
            while j < d - 1:
                cw[r + j] = cw[r + j + 1]
                j += 1
            cw[r + d - 1] = 0
            if f:
                lf = glog[f]
                j = 0
                while j < d:
                    cw[r + j] ^= gexp[lf + gen[j]]
                    j += 1
            k += 1
        off += n
        r += d
        b += 1
