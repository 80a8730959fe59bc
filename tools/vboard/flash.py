"""The virtual board's SPI flash: a 4 MiB image file laid out like MicroPython's generic ESP32 build.

    0x001000  bootloader      (ESP image, magic 0xE9)
    0x008000  partition table (32-byte entries, then an MD5 entry)
    0x009000  nvs             data/nvs
    0x00F000  phy_init        data/phy
    0x010000  factory         app/factory (ESP image, magic 0xE9)
    0x200000  vfs             data/fat, holding a LittleFS2 filesystem with 4096-byte blocks

A fresh board gets placeholder bootloader and app headers (a real MicroPython build can be
flashed over them) and a LittleFS filesystem holding the firmware files.
"""

import hashlib
import os
import struct

from littlefs import LittleFS, UserContext

FLASH_SIZE = 4 * 1024 * 1024
SECTOR = 4096
BOOTLOADER_OFFSET = 0x1000
PARTITION_TABLE_OFFSET = 0x8000
_PARTITION_TABLE_MAX = 0xC00

_ENTRY = struct.Struct("<2sBBII16sI")
_ENTRY_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb"
_TYPE_APP, _TYPE_DATA = 0x00, 0x01

# (label, type, subtype, offset, size) as in MicroPython's partitions-4MiB.csv
GENERIC_4MIB = (
    ("nvs", _TYPE_DATA, 0x02, 0x9000, 0x6000),
    ("phy_init", _TYPE_DATA, 0x01, 0xF000, 0x1000),
    ("factory", _TYPE_APP, 0x00, 0x10000, 0x1F0000),
    ("vfs", _TYPE_DATA, 0x81, 0x200000, 0x200000),
)

ESP_IMAGE_MAGIC = 0xE9
CHIP_ID_ESP32 = 0


class FlashLayoutError(ValueError):
    """The image has no usable partition table or no `vfs` partition."""


def partition_table(partitions=GENERIC_4MIB):
    """The binary partition table as the ESP-IDF bootloader reads it."""
    entries = b"".join(
        _ENTRY.pack(_ENTRY_MAGIC, ptype, subtype, offset, size, label.encode(), 0)
        for label, ptype, subtype, offset, size in partitions
    )
    md5 = _MD5_MAGIC + b"\xff" * 14 + hashlib.md5(entries).digest()
    return (entries + md5).ljust(_PARTITION_TABLE_MAX, b"\xff")


def read_partitions(table):
    """Parse a partition table: {label: (type, subtype, offset, size)}."""
    found = {}
    for pos in range(0, _PARTITION_TABLE_MAX, _ENTRY.size):
        magic, ptype, subtype, offset, size, label, _flags = _ENTRY.unpack_from(table, pos)
        if magic != _ENTRY_MAGIC:
            break
        found[label.rstrip(b"\x00").decode("ascii", "replace")] = (ptype, subtype, offset, size)
    return found


def esp_image_header(chip_id=CHIP_ID_ESP32, note=b""):
    """A minimal ESP image header (no segments) that marks a region as holding an image.

    Bytes 0-7: magic, segment count, SPI mode (DIO), size/frequency (4MB, 40 MHz), entry point;
    bytes 8-23: the extended header, whose chip id (bytes 12-13) tells esptool which chip the
    image was built for.
    """
    header = struct.pack("<BBBBI", ESP_IMAGE_MAGIC, 0, 2, 0x20, 0x40080000)
    # Extended header: WP pin (0xEE: none), 3 bytes of SPI drive settings, then the chip id.
    extended = struct.pack("<BBBBH", 0xEE, 0, 0, 0, chip_id)
    return (header + extended).ljust(24, b"\x00") + note


def littlefs_image(files, size):
    """A LittleFS2 filesystem of `size` bytes (4096-byte blocks) holding {path: bytes}."""
    fs = LittleFS(block_size=SECTOR, block_count=size // SECTOR, name_max=255)
    for path, data in sorted(files.items()):
        parent = os.path.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(data)
    return bytes(fs.context.buffer)


def read_littlefs(image_bytes):
    """Mount a LittleFS image (bytes) read-only-in-spirit; returns a LittleFS object."""
    context = UserContext(buffer=bytearray(image_bytes))
    return LittleFS(context=context, block_size=SECTOR, block_count=len(image_bytes) // SECTOR)


def build_image(files, partitions=GENERIC_4MIB, note=b"qrfleet virtual MicroPython"):
    """A whole flash image: placeholder bootloader and app, partition table, LittleFS vfs."""
    image = bytearray(b"\xff" * FLASH_SIZE)
    image[BOOTLOADER_OFFSET : BOOTLOADER_OFFSET + 24] = esp_image_header()
    table = partition_table(partitions)
    image[PARTITION_TABLE_OFFSET : PARTITION_TABLE_OFFSET + len(table)] = table
    by_label = {p[0]: p for p in partitions}
    app = esp_image_header(note=note)
    app_offset = by_label["factory"][3]
    image[app_offset : app_offset + len(app)] = app
    _, _, _, vfs_offset, vfs_size = by_label["vfs"]
    image[vfs_offset : vfs_offset + vfs_size] = littlefs_image(files, vfs_size)
    return bytes(image)


class FlashImage:
    """File-backed flash with the read/write/erase surface the ROM bootloader emulation uses."""

    def __init__(self, path):
        self.path = path
        self.size = os.path.getsize(path)

    def read(self, offset, length):
        self._check(offset, length)
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def write(self, offset, data):
        self._check(offset, len(data))
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def erase(self, offset, length):
        self.write(offset, b"\xff" * length)

    def _check(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(
                f"flash access 0x{offset:x}+0x{length:x} is outside the {self.size}-byte flash"
            )

    def partitions(self):
        return read_partitions(self.read(PARTITION_TABLE_OFFSET, _PARTITION_TABLE_MAX))

    def vfs_partition(self):
        """(offset, size) of the `vfs` partition; FlashLayoutError if the table has none."""
        parts = self.partitions()
        if "vfs" not in parts:
            raise FlashLayoutError(
                "no 'vfs' partition in the partition table at 0x8000; "
                "flash a MicroPython build for ESP32 (4 MiB) or erase the board to recreate it"
            )
        _, _, offset, size = parts["vfs"]
        return offset, size

    def has_image_at(self, offset):
        return self.read(offset, 1)[0] == ESP_IMAGE_MAGIC

    def app_offset(self):
        """Offset of the app the bootloader would run, or None when there is nothing bootable."""
        if not self.has_image_at(BOOTLOADER_OFFSET):
            return None
        for ptype, _subtype, offset, _size in self.partitions().values():
            if ptype == _TYPE_APP and self.has_image_at(offset):
                return offset
        return None

    def filesystem(self):
        """The vfs partition's LittleFS, read from the image as it is now."""
        offset, size = self.vfs_partition()
        return read_littlefs(self.read(offset, size))
