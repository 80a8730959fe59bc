"""Ed25519 signature verification (RFC 8032 §5.1), in the RFC's order and with its names.

A unit checks that a release manifest was signed by one of its release keys before it downloads
anything. Only verification lives here: the private key stays with whoever builds releases
(`qrfleet release keygen`), never on a server or a unit, so a taken server cannot sign a release.

Cost of one `verify`: SHA-512 of R || A || message, two modular exponentiations (decoding A,
encoding the result) and about 3,100 multiplications of 255-bit numbers mod p, each a big-int
product and a remainder. On the Unix port (x86-64) a 2 KB message takes about 10 ms, half of
it SHA-512; compiled, it runs in a 40K heap, but every big-int operation allocates, so the GC
runs often. Public inputs only, so nothing needs to run in constant time.

The check is the cofactorless one: [S]B - [k]A is computed and its encoding compared with the
signature's R bytes. That accepts exactly the signatures for which R decodes (§5.1.3) and
[S]B = R + [k]A: a non-canonical or off-curve R matches no encoding §5.1.2 produces.
"""

from .sha512 import sha512

# §5.1: the field GF(p), the curve -x^2 + y^2 = 1 + d x^2 y^2 with d = -121665/121666, its base
# point B = (BX, 4/5) and B's order L; and sqrt(-1) = 2^((p-1)/4), for decoding (§5.1.3).
_P = 2**255 - 19
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_L = 2**252 + 27742317777372353535851937790883648493
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_D2 = 2 * _D % _P


# §5.1.1 Modular arithmetic: an inverse is x^(p-2) by Fermat (3-argument pow runs in C).
def _inverse(x):
    return pow(x, _P - 2, _P)


# Points are in extended homogeneous coordinates [X, Y, Z, T]: x = X/Z, y = Y/Z, x*y = T/Z.
# Lists, so the running sum is updated in place.


# §5.1.2 Encoding: y in 255 bits little-endian, the low bit of x in the top bit.
def point_compress(p):
    zinv = _inverse(p[2])
    x = p[0] * zinv % _P
    y = p[1] * zinv % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


# §5.1.3 Decoding: y from the low 255 bits, x from x^2 = (y^2 - 1) / (d y^2 + 1) and the top bit.
def point_decompress(s):
    """The point encoded by the 32 bytes `s`, or None if they encode none."""
    y = int.from_bytes(s, "little")
    x_0 = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:  # step 1: non-canonical
        return None
    # Step 2: candidate root x = u v^3 (u v^7)^((p-5)/8) of u/v.
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    v3 = v * v * v % _P
    x = u * v3 * pow(u * v3 * v3 * v % _P, (_P - 5) // 8, _P) % _P
    # Step 3: x is a root, or a root times sqrt(-1), or u/v is not a square (not on the curve).
    vxx = v * x * x % _P
    if vxx != u:
        if vxx != _P - u:
            return None
        x = x * _SQRT_M1 % _P
    # Step 4: pick the root whose low bit is x_0; x = 0 has only one.
    if x == 0 and x_0:
        return None
    if x & 1 != x_0:
        x = _P - x
    return [x, y, 1, x * y % _P]


# §5.1.4 Point addition. The second operand is "cached": (Y-X, Y+X, 2*d*T, 2*Z), what the
# formulas use of it, worked out once per table entry. Sums and differences stay unreduced;
# every product is reduced.
def cached(q):
    return ((q[1] - q[0]) % _P, (q[1] + q[0]) % _P, _D2 * q[3] % _P, 2 * q[2] % _P)


def point_add(p, q):
    """p += q, q cached."""
    x1, y1, z1, t1 = p
    a = (y1 - x1) * q[0] % _P
    b = (y1 + x1) * q[1] % _P
    c = t1 * q[2] % _P
    d = z1 * q[3] % _P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    p[0] = e * f % _P
    p[1] = g * h % _P
    p[2] = f * g % _P
    p[3] = e * h % _P


def point_double(p):
    """p += p (the doubling formulas of §5.1.4, cheaper than adding p to itself)."""
    x1, y1, z1, _ = p
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    s = x1 + y1
    e = h - s * s % _P
    g = a - b
    f = c + g
    p[0] = e * f % _P
    p[1] = g * h % _P
    p[2] = f * g % _P
    p[3] = e * h % _P


def _multiples(p):
    """p, [2]p, [3]p."""
    p2 = p[:]
    point_double(p2)
    p3 = p2[:]
    point_add(p3, cached(p))
    return p, p2, p3


def _straus(s, b, k, a):
    """[s]b + [k]a, both scalars < 2^254, two bits of each per step (Straus-Shamir): one run of
    doublings for both, and at most one addition per step from a table of [i]b + [j]a."""
    bs = _multiples(b)
    as_ = _multiples(a)
    table = [None] * 16  # index 4*i + j; entry 0, the neutral point, is never added
    for j in range(1, 4):
        table[j] = cached(as_[j - 1])
    for i in range(1, 4):
        table[4 * i] = cached(bs[i - 1])
        for j in range(1, 4):
            q = bs[i - 1][:]
            point_add(q, table[j])
            table[4 * i + j] = cached(q)
    r = [0, 1, 1, 0]  # the neutral point (0, 1)
    for shift in range(252, -1, -2):
        point_double(r)
        point_double(r)
        index = (s >> shift & 3) << 2 | k >> shift & 3
        if index:
            point_add(r, table[index])
    return r


# §5.1.7 Verify.
def verify(public_key, message, signature):
    """True if `signature` (64 bytes) is an Ed25519 signature of `message` by `public_key`
    (32 bytes). Malformed keys and signatures give False. `message` is bytes, or an iterable of
    byte chunks: a file read in blocks, so a unit never holds it whole."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    r = bytes(signature[:32])
    # Step 1: decode A and S; S must be reduced (no malleable S + L).
    a = point_decompress(public_key)
    if a is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    # Step 2: k = SHA-512(dom2(F, C) || R || A || PH(M)); dom2 and PH are empty for Ed25519.
    h = sha512(r)
    h.update(public_key)
    if isinstance(message, (bytes, bytearray, memoryview)):
        h.update(message)
    else:
        for chunk in message:
            h.update(chunk)
    k = int.from_bytes(h.digest(), "little") % _L
    # Step 3, cofactorless: [S]B - [k]A must encode to R.
    minus_a = [-a[0], a[1], a[2], -a[3]]
    return point_compress(_straus(s, [_BX, _BY, 1, _BX * _BY % _P], k, minus_a)) == r
