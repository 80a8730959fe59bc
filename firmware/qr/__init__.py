"""QR Code model 2 encoder for the unit (ISO/IEC 18004:2015), allocation-conscious.

    encode(data, ecc="M", version=None, mask=None, workspace=None) -> QRCode
        .version .size .ecc .mask .module(x, y) .matrix (packed bytearray, see QRCode)
    fit(data, ecc="M") -> the version encode() would pick, without building the symbol
    capacity(version, ecc, mode) -> most chars of one segment ("numeric"/"alphanumeric"/"byte")

Exceptions:

    ValueError
     └── QRError   data too long (names the capacity) or an argument out of range

Modules, in the spec's order: segments (modes, optimal split), bitstream (data bits), rs
(Reed-Solomon), matrix (geometry, function patterns, format and version information),
placement (codewords into modules, interleaved), masks (mask patterns, penalty), tables
(constants), emv (EMVCo merchant-presented payloads). The hot loops are viper functions on
MicroPython and plain Python on CPython (see firmware.compat); there, _cpython replaces the
two mask loops with faster equivalents.

Memory: the symbol is built in its packed matrix (size * ((size + 7) // 8) bytes, 4 KB at
version 40) and no buffer is larger, so a fragmented heap does not stop a large symbol.
Between encodes, the function patterns of the last version stay cached (two such buffers).
A unit allocates all of these once, as a Workspace for the largest version its panel shows.
"""

from .encoder import QRCode, QRError, Workspace, capacity, encode, fit

__all__ = ["QRCode", "QRError", "Workspace", "capacity", "encode", "fit"]
