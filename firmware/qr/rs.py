"""Error correction (§7.5): Reed-Solomon generator polynomials, the per-block division, and
the interleaving of data and ECC codewords into the final sequence (§7.6)."""

from ._native import micropython, ptr8, ptr16
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
def rs_blocks(data: ptr8, ecc: ptr8, gen: ptr8, dims: ptr16):
    """Reed-Solomon remainders of every block (§7.5.2) into `ecc`, block after block.

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
    b = 0
    while b < nblocks:
        n = dims[2]
        if b >= nshort:
            n += 1
        r = b * d
        j = 0
        while j < d:
            ecc[r + j] = 0
            j += 1
        k = 0
        while k < n:
            f = data[off + k] ^ ecc[r]
            j = 0
            while j < d - 1:
                ecc[r + j] = ecc[r + j + 1]
                j += 1
            ecc[r + d - 1] = 0
            if f:
                lf = glog[f]
                j = 0
                while j < d:
                    ecc[r + j] ^= gexp[lf + gen[j]]
                    j += 1
            k += 1
        off += n
        b += 1


@micropython.viper
def interleave(out: ptr8, data: ptr8, ecc: ptr8, dims: ptr16):
    """Final codeword sequence (§7.6): data codewords column by column across blocks
    (short blocks have no last column), then ECC codewords likewise."""
    nblocks = dims[0]
    nshort = dims[1]
    slen = dims[2]
    d = dims[3]
    o = 0
    i = 0
    while i <= slen:
        b = 0
        while b < nblocks:
            if i < slen or b >= nshort:
                off = b * slen
                if b > nshort:
                    off += b - nshort
                out[o] = data[off + i]
                o += 1
            b += 1
        i += 1
    i = 0
    while i < d:
        b = 0
        while b < nblocks:
            out[o] = ecc[b * d + i]
            o += 1
            b += 1
        i += 1
