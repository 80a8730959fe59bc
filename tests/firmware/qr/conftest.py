"""Helpers shared by the encoder tests: the reference encoder, rendering, decoding."""

import hashlib

import zxingcpp
from PIL import Image
from qrcodegen import QrCode, QrSegment

from firmware.qr import segments

REFERENCE_ECC = {
    "L": QrCode.Ecc.LOW,
    "M": QrCode.Ecc.MEDIUM,
    "Q": QrCode.Ecc.QUARTILE,
    "H": QrCode.Ecc.HIGH,
}


def source_of(data):
    """The bytes the encoder segments and whether it adds an ECI 26 header."""
    if isinstance(data, str):
        src = data.encode()
        return src, len(src) != len(data)
    return bytes(data), False


def reference(data, ecc, version, mask):
    """qrcodegen's symbol for `data` split into the same segments as firmware.qr splits it
    at `version` (each segment made by qrcodegen's own make_* functions)."""
    src, eci = source_of(data)
    segs = [QrSegment.make_eci(segments.ECI_UTF8)] if eci else []
    for span in segments.optimal(src, segments.group(version)):
        start, end, mode = segments.unpack(span)
        part = src[start:end]
        if mode == 1:
            segs.append(QrSegment.make_numeric(part.decode()))
        elif mode == 2:
            segs.append(QrSegment.make_alphanumeric(part.decode()))
        else:
            segs.append(QrSegment.make_bytes(part))
    return QrCode.encode_segments(
        segs, REFERENCE_ECC[ecc], version, version, -1 if mask is None else mask, False
    )


def packed(get, size):
    """Module matrix packed like QRCode.matrix, from a get(x, y) function."""
    stride = (size + 7) // 8
    out = bytearray(stride * size)
    for y in range(size):
        for x in range(size):
            if get(x, y):
                out[y * stride + x // 8] |= 0x80 >> (x % 8)
    return out


def digest(matrix, version, mask):
    return hashlib.sha256(bytes(matrix) + bytes([version, mask])).hexdigest()


def render(symbol, scale=6, quiet=4):
    """Grey image of a firmware.qr symbol: `quiet` light modules around, `scale` px each."""
    n = symbol.size + 2 * quiet
    img = Image.new("L", (n, n), 255)
    px = img.load()
    for y in range(symbol.size):
        for x in range(symbol.size):
            if symbol.module(x, y):
                px[x + quiet, y + quiet] = 0
    return img.resize((n * scale, n * scale), Image.NEAREST)


def decode(symbol, text_mode=zxingcpp.TextMode.HRI):
    """The single QR code zxing-cpp reads from the rendered symbol."""
    found = zxingcpp.read_barcodes(
        render(symbol), formats=zxingcpp.BarcodeFormat.QRCode, text_mode=text_mode
    )
    assert len(found) == 1, f"zxing-cpp found {len(found)} symbols in {symbol!r}"
    return found[0]
