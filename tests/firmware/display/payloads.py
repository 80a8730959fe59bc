"""Test payloads of each QR mode, built the same way on CPython and on the Unix port."""

ALPHABETS = {
    "numeric": "0123456789",
    "alphanumeric": "PAY 12.50 EUR/$%*+-:",
    "byte": "pay?amount=12.50&ref=a7;",
    "utf8": "€ü日a",
}


def payload(mode, length):
    """`length` characters of `mode` (for utf8: `length` bytes once encoded).

    Filled into one preallocated buffer: on the Unix port's test heap, growing a buffer or
    joining 7000 strings would leave holes a version-40 symbol then cannot use.
    """
    out = bytearray(length)
    used = 0
    while used < length:
        for ch in ALPHABETS[mode]:
            piece = ch.encode()
            if used + len(piece) <= length:
                out[used : used + len(piece)] = piece
                used += len(piece)
    return out.decode()
