"""Hypothesis strategies for encoder cases: payloads of every mode that fit a given symbol.

Long payloads come from a random generator seeded by hypothesis (drawing thousands of
characters one by one would be slow and exhaust its entropy buffer); the length is drawn
directly, so failures still shrink towards short data.
"""

import random

from hypothesis import strategies as st

from firmware.qr import capacity

ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
# Characters for mixed payloads: digits, alphanumerics and byte-only ASCII, in runs.
RUNS = ("0123456789", ALNUM, "abcdefghijklmnopqrstuvwxyz?&=_#@")
# Non-ASCII text: Latin-1, Devanagari, CJK, emoji (1 to 4 UTF-8 bytes).
WIDE = "éüß€₹नमस्ते中文字😀🙂"

KINDS = ("numeric", "alphanumeric", "byte", "text", "mixed")

generators = st.integers(0, 2**32 - 1).map(random.Random)


def make_payload(kind, n, rnd):
    """A payload of `kind` with at most `n` characters (bytes for byte/text) for one segment."""
    if kind == "numeric":
        return "".join(rnd.choice(ALNUM[:10]) for _ in range(n))
    if kind == "alphanumeric":
        return "".join(rnd.choice(ALNUM) for _ in range(n))
    if kind == "byte":
        return bytes(rnd.randrange(256) for _ in range(n))
    if kind == "text":
        # UTF-8 length at most n - 2: the ECI 26 header takes 12 bits.
        out = []
        used = 0
        while True:
            c = rnd.choice(WIDE) if rnd.random() < 0.5 else chr(rnd.randrange(32, 127))
            size = len(c.encode())
            if used + size > n - 2:
                break
            out.append(c)
            used += size
        return "".join(out)
    out = []  # mixed: runs of each class, never more bits than bytes of the same length
    while len(out) < n:
        alphabet = rnd.choice(RUNS)
        out.extend(rnd.choice(alphabet) for _ in range(min(n - len(out), rnd.randint(1, 30))))
    return "".join(out)


@st.composite
def cases(draw, versions=(1, 40), masks=True):
    """(data, ecc, version, mask) with data that fits `version` at `ecc`."""
    ecc = draw(st.sampled_from("LMQH"))
    version = draw(st.integers(*versions))
    kind = draw(st.sampled_from(KINDS))
    mode = kind if kind in ("numeric", "alphanumeric") else "byte"
    n = draw(st.integers(0, capacity(version, ecc, mode)))
    data = make_payload(kind, n, draw(generators))
    mask = draw(st.integers(0, 7)) if masks else None
    return data, ecc, version, mask
