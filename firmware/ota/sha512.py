"""SHA-512 (FIPS 180-4 §6.4), for the Ed25519 check of a release manifest: the ESP32 port's
`hashlib` has SHA-256 but no SHA-512.

`sha512(data=b"")` has `update(data)` and `digest()`, like `hashlib.sha512`. Words are Python
ints kept to 64 bits by masking (on a board most of them are big ints, so each operation
allocates; the state, the block buffer and the message schedule are allocated once per object).
"""

import struct
from binascii import unhexlify
from struct import unpack_from

from firmware.compat import const

_BLOCK = const(128)  # bytes per message block (§5.2.2: 1024 bits)
_MASK = const(0xFFFFFFFFFFFFFFFF)  # 64-bit words

# §4.2.3: the first 64 bits of the fractional parts of the cube roots of the first 80 primes,
# big-endian: 640 bytes, where 80 big-int constants would keep ~4 KB of a unit's heap.
_K = unhexlify(
    (
        "428a2f98d728ae22 7137449123ef65cd b5c0fbcfec4d3b2f e9b5dba58189dbbc"
        "3956c25bf348b538 59f111f1b605d019 923f82a4af194f9b ab1c5ed5da6d8118"
        "d807aa98a3030242 12835b0145706fbe 243185be4ee4b28c 550c7dc3d5ffb4e2"
        "72be5d74f27b896f 80deb1fe3b1696b1 9bdc06a725c71235 c19bf174cf692694"
        "e49b69c19ef14ad2 efbe4786384f25e3 0fc19dc68b8cd5b5 240ca1cc77ac9c65"
        "2de92c6f592b0275 4a7484aa6ea6e483 5cb0a9dcbd41fbd4 76f988da831153b5"
        "983e5152ee66dfab a831c66d2db43210 b00327c898fb213f bf597fc7beef0ee4"
        "c6e00bf33da88fc2 d5a79147930aa725 06ca6351e003826f 142929670a0e6e70"
        "27b70a8546d22ffc 2e1b21385c26c926 4d2c6dfc5ac42aed 53380d139d95b3df"
        "650a73548baf63de 766a0abb3c77b2a8 81c2c92e47edaee6 92722c851482353b"
        "a2bfe8a14cf10364 a81a664bbc423001 c24b8b70d0f89791 c76c51a30654be30"
        "d192e819d6ef5218 d69906245565a910 f40e35855771202a 106aa07032bbd1b8"
        "19a4c116b8d2d0c8 1e376c085141ab53 2748774cdf8eeb99 34b0bcb5e19b48a8"
        "391c0cb3c5c95a63 4ed8aa4ae3418acb 5b9cca4f7763e373 682e6ff3d6b2b8a3"
        "748f82ee5defb2fc 78a5636f43172f60 84c87814a1f0ab72 8cc702081a6439ec"
        "90befffa23631e28 a4506cebde82bde9 bef9a3f7b2c67915 c67178f2e372532b"
        "ca273eceea26619c d186b8c721c0c207 eada7dd6cde0eb1e f57d4f7fee6ed178"
        "06f067aa72176fba 0a637dc5a2c898a6 113f9804bef90dae 1b710b35131c471b"
        "28db77f523047d84 32caab7b40c72493 3c9ebe0a15c9bebc 431d67c49c100d4c"
        "4cc5d4becb3e42b6 597f299cfc657e2a 5fcb6fab3ad6faec 6c44198c4a475817"
    ).replace(" ", "")
)

# §5.3.5: the first 64 bits of the fractional parts of the square roots of the first 8 primes.
_H0 = (
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
    0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179,
)  # fmt: skip


class sha512:
    def __init__(self, data=b""):
        self._h = list(_H0)
        self._w = [0] * 80  # message schedule W0..W79 (§6.4.2 step 1)
        self._buf = bytearray(_BLOCK)
        self._fill = 0  # bytes waiting in _buf
        self._length = 0  # message bytes so far
        if data:
            self.update(data)

    def update(self, data):
        data = memoryview(data)
        n = len(data)
        self._length += n
        i = 0
        if self._fill:
            take = min(n, _BLOCK - self._fill)
            self._buf[self._fill : self._fill + take] = data[:take]
            self._fill += take
            i = take
            if self._fill < _BLOCK:
                return
            self._compress(self._buf, 0)
            self._fill = 0
        while n - i >= _BLOCK:  # whole blocks straight from the caller's bytes
            self._compress(data, i)
            i += _BLOCK
        self._buf[: n - i] = data[i:]
        self._fill = n - i

    def digest(self):
        """The 64-byte digest of everything so far; the object stays usable (§5.1.2 padding is
        applied to a copy)."""
        h = self._h[:]
        buf = bytearray(self._buf)
        fill = self._fill
        # §5.1.2: a 1 bit, zeros, then the message length in bits as a 128-bit number.
        buf[fill] = 0x80
        for j in range(fill + 1, _BLOCK):
            buf[j] = 0
        if fill >= _BLOCK - 16:
            self._compress(buf, 0, h)
            for j in range(_BLOCK):
                buf[j] = 0
        struct.pack_into(">QQ", buf, _BLOCK - 16, self._length >> 61, (self._length << 3) & _MASK)
        self._compress(buf, 0, h)
        return struct.pack(">8Q", *h)

    def _compress(self, block, offset, h=None):
        """§6.4.2: fold the 128-byte block at block[offset:] into the hash value `h`."""
        if h is None:
            h = self._h
        w = self._w
        k = _K
        mask = _MASK
        for t, word in enumerate(struct.unpack_from(">16Q", block, offset)):
            w[t] = word
        # A rotation right by n is the low 64 bits of (x | x << 64) >> n. The bits above 64 left
        # in σ and Σ are harmless: they only go into sums, which are cut to 64 bits.
        for t in range(16, 80):
            x = w[t - 15]
            y = w[t - 2]
            x2 = x | x << 64
            y2 = y | y << 64
            s0 = (x2 >> 1) ^ (x2 >> 8) ^ (x >> 7)  # σ0 (4.12)
            s1 = (y2 >> 19) ^ (y2 >> 61) ^ (y >> 6)  # σ1 (4.13)
            w[t] = (w[t - 16] + s0 + w[t - 7] + s1) & mask
        a, b, c, d, e, f, g, hh = h
        for t in range(80):
            # T1 = h + Σ1(e) + Ch(e, f, g) + K[t] + W[t], with Ch(e, f, g) written without a NOT;
            # T2 = Σ0(a) + Maj(a, b, c)
            e2 = e | e << 64
            a2 = a | a << 64
            t1 = (
                hh
                + ((e2 >> 14) ^ (e2 >> 18) ^ (e2 >> 41))
                + (g ^ (e & (f ^ g)))
                + unpack_from(">Q", k, t << 3)[0]
                + w[t]
            )
            t2 = ((a2 >> 28) ^ (a2 >> 34) ^ (a2 >> 39)) + ((a & b) | (c & (a | b)))
            hh = g
            g = f
            f = e
            e = (d + t1) & mask
            d = c
            c = b
            b = a
            a = (t1 + t2) & mask
        for j, v in enumerate((a, b, c, d, e, f, g, hh)):
            h[j] = (h[j] + v) & mask
