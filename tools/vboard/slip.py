"""SLIP framing (RFC 1055) as the ESP32 serial bootloader uses it.

Every packet is wrapped in 0xC0 delimiters; 0xC0 and 0xDB inside a packet are
sent as 0xDB 0xDC and 0xDB 0xDD. The decoder is sans-I/O: feed it whatever the
serial port delivered and it returns the packets completed so far. Bytes
between packets (boot noise, a torn packet) are dropped, as the ROM does.
"""

END = 0xC0
ESC = 0xDB
_END = b"\xc0"
_ESC = b"\xdb"
_UNESCAPE = {0xDC: END, 0xDD: ESC}

# The largest packet esptool sends is a 16 KiB stub flash block plus its
# 16-byte header; anything much longer is noise and would only eat memory.
MAX_PACKET = 0x8000


def encode(packet: bytes) -> bytes:
    """One packet as it goes on the wire."""
    escaped = packet.replace(_ESC, b"\xdb\xdd").replace(_END, b"\xdb\xdc")
    return _END + escaped + _END


def _unescape(raw: bytes) -> bytes | None:
    """The packet inside one frame, or None when an escape is malformed."""
    first, *rest = raw.split(_ESC)
    out = bytearray(first)
    for part in rest:
        if not part or part[0] not in _UNESCAPE:
            return None
        out.append(_UNESCAPE[part[0]])
        out += part[1:]
    return bytes(out)


class SlipDecoder:
    """Turns a byte stream into packets; keeps a torn packet until the next byte arrives."""

    def __init__(self):
        self._frame = None  # bytearray while inside a frame, None between frames

    def reset(self) -> None:
        """Forget a half-received packet (the line was cut or the board reset)."""
        self._frame = None

    def feed(self, data: bytes) -> list[bytes]:
        packets = []
        pos = 0
        while pos < len(data):
            end = data.find(_END, pos)
            stop = len(data) if end < 0 else end
            if self._frame is not None:
                self._frame += data[pos:stop]
                if len(self._frame) > 2 * MAX_PACKET:
                    self._frame = None
            if end < 0:
                break
            if self._frame:
                packet = _unescape(bytes(self._frame))
                if packet is not None:
                    packets.append(packet)
                self._frame = None
            else:
                # An opening delimiter, or two in a row: (re)start a frame here.
                self._frame = bytearray()
            pos = end + 1
        return packets
