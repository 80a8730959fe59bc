"""The ESP image format: build one, and check one as the second-stage bootloader does.

Layout (ESP-IDF `esp_app_format.h`, esptool `bin_image.py`), little endian:

    header     24 bytes: magic 0xE9, segment count, SPI mode, flash size/speed, entry point,
               then the extended header: WP pin, SPI drive settings, chip id (bytes 12-13),
               chip revisions, hash_appended (byte 23)
    segments   each a {load address, length} header and `length` bytes, a multiple of 4
    checksum   XOR of all segment data seeded with 0xEF, in the last byte of a 16-byte block
    SHA-256    of everything before it, present when hash_appended is 1

An app's first segment starts with its `esp_app_desc_t` (magic 0xABCD5432, then the version
string at byte 16 of it, file offset 0x30). MicroPython release builds leave that version
empty (CONFIG_APP_EXCLUDE_PROJECT_VER_VAR), so the MicroPython banner carries the release.
"""

import hashlib
import struct

MAGIC = 0xE9
CHIP_ID_ESP32 = 0x0000
MAX_SEGMENTS = 16
APP_DESC_MAGIC = 0xABCD5432
CHECKSUM_SEED = 0xEF

# magic, segment count, SPI mode, size/speed, entry, WP pin, SPI drive, chip id,
# legacy min revision, min revision (major*100+minor), max revision, reserved, hash_appended
_HEADER = struct.Struct("<BBBBIB3sHBHH4sB")
_SEGMENT = struct.Struct("<II")  # load address, length
# magic, secure version, reserved, version, project name, time, date, IDF version
_APP_DESC = struct.Struct("<II8s32s32s16s16s32s")
_APP_DESC_SIZE = 256
_SPI_DIO = 2
_SIZE_4MB_40MHZ = 0x20
_MAX_CHIP_REVISION = 399  # v3.99, as IDF builds for ESP32 declare
_DROM = 0x3F400020  # where the app descriptor is mapped in a MicroPython build

SPI_MODES = {0: "QIO", 1: "QOUT", 2: "DIO", 3: "DOUT", 4: "FAST_READ", 5: "SLOW_READ"}
CLOCK_DIVIDERS = {0x0: 2, 0x1: 3, 0x2: 4, 0xF: 1}  # 40, 26, 20, 80 MHz from the 80 MHz clock


class ImageError(ValueError):
    """The bootloader would refuse this image; the message is the line ESP-IDF logs."""


class Header:
    def __init__(self, data):
        (
            self.magic,
            self.segment_count,
            self.spi_mode,
            self.size_speed,
            self.entry,
            _wp,
            _drive,
            self.chip_id,
            _rev,
            _min_rev,
            _max_rev,
            _reserved,
            self.hash_appended,
        ) = _HEADER.unpack_from(data)


class AppImage:
    """A checked image: its length and the version its app descriptor names (b"" if none)."""

    def __init__(self, length, version, date):
        self.length = length
        self.version = version
        self.date = date


# -- building


def build(segments, entry, chip_id=CHIP_ID_ESP32):
    """An image of [(load address, data)] with its checksum and SHA-256, as esptool writes it."""
    header = _HEADER.pack(
        MAGIC,
        len(segments),
        _SPI_DIO,
        _SIZE_4MB_40MHZ,
        entry,
        0xEE,  # no WP pin
        bytes(3),
        chip_id,
        0,
        0,
        _MAX_CHIP_REVISION,
        bytes(4),
        1,
    )
    image = bytearray(header)
    for address, data in segments:
        image += _SEGMENT.pack(address, len(data)) + data
    image += bytes(15 - len(image) % 16)
    image.append(checksum(b"".join(data for _, data in segments)))
    return bytes(image + hashlib.sha256(image).digest())


def app(chip_id=CHIP_ID_ESP32, version=b"", note=b"", date=b"Apr  6 2026"):
    """An app image whose first segment is an esp_app_desc_t (then `note`, as code would be)."""
    desc = _APP_DESC.pack(
        APP_DESC_MAGIC, 0, bytes(8), version, b"", b"00:00:00", date, b"v5.5.1"
    ).ljust(_APP_DESC_SIZE, b"\0")
    data = desc + note
    return build([(_DROM, data + bytes(-len(data) % 4))], 0x40082000, chip_id)


def bootloader(chip_id=CHIP_ID_ESP32):
    """A second-stage bootloader image with the segments of MicroPython's (the ROM logs them)."""
    segments = [(0x3FFF0030, 4892), (0x40078000, 14896), (0x40080400, 4), (0x40080404, 3372)]
    return build([(address, bytes(length)) for address, length in segments], 0x400805B0, chip_id)


def checksum(data):
    """XOR of all bytes seeded with 0xEF, folding halves: XOR is associative, so this equals
    the bootloader's byte-by-byte loop at a fraction of its cost in Python."""
    while len(data) > 1:
        half = (len(data) + 1) // 2
        low = int.from_bytes(data[:half], "little")
        high = int.from_bytes(data[half:], "little")
        data = (low ^ high).to_bytes(half, "little")
    return CHECKSUM_SEED ^ (data[0] if data else 0)


# -- reading


def segments(data):
    """(load address, length) of each segment whose header lies within `data`."""
    header = Header(data)
    found = []
    pos = _HEADER.size
    for _ in range(min(header.segment_count, MAX_SEGMENTS)):
        if pos + _SEGMENT.size > len(data):
            break
        address, length = _SEGMENT.unpack_from(data, pos)
        found.append((address, length))
        pos += _SEGMENT.size + length
    return found


def check(data, offset, chip_id=CHIP_ID_ESP32):
    """Check the image at the start of `data` (a partition that starts at flash `offset`) as
    esp_image_verify does; returns an AppImage or raises ImageError."""
    if not data or data[0] != MAGIC:
        raise ImageError(f"image at 0x{offset:x} has invalid magic byte (nothing flashed here?)")
    header = Header(data)
    if header.segment_count > MAX_SEGMENTS:
        raise ImageError(
            f"image at 0x{offset:x} segment count {header.segment_count} exceeds max {MAX_SEGMENTS}"
        )
    if header.chip_id != chip_id:
        raise ImageError(f"mismatch chip ID, expected {chip_id}, found {header.chip_id}")
    pos = _HEADER.size
    spans = []
    for _ in range(header.segment_count):
        if pos + _SEGMENT.size > len(data):
            raise _too_long(pos + _SEGMENT.size, len(data))
        _address, length = _SEGMENT.unpack_from(data, pos)
        if length % 4:
            raise ImageError(f"unaligned segment length 0x{length:x}")
        pos += _SEGMENT.size
        if pos + length > len(data):
            raise _too_long(pos + length, len(data))
        spans.append((pos, pos + length))
        pos += length
    end = pos + 16 - pos % 16  # the checksum is the last byte of a 16-byte block
    length = end + 32 * bool(header.hash_appended)
    if length > len(data):
        raise _too_long(length, len(data))
    calculated = checksum(b"".join(data[start:stop] for start, stop in spans))
    if calculated != data[end - 1]:
        raise ImageError(f"Checksum failed. Calculated 0x{calculated:x} read 0x{data[end - 1]:x}")
    if header.hash_appended and hashlib.sha256(data[:end]).digest() != data[end:length]:
        raise ImageError("Image hash failed - image is corrupt")
    version, date = b"", b""
    if spans and spans[0][1] - spans[0][0] >= _APP_DESC.size:
        magic, _sv, _r, version, _name, _time, date, _idf = _APP_DESC.unpack_from(data, spans[0][0])
        if magic != APP_DESC_MAGIC:
            version, date = b"", b""
    return AppImage(length, version.split(b"\0")[0], date.split(b"\0")[0])


def _too_long(length, partition_size):
    return ImageError(f"Image length {length} doesn't fit in partition length {partition_size}")
