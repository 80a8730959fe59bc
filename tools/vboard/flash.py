"""The virtual board's SPI flash: an image file laid out as MicroPython's ESP32 builds lay it out.

    0x001000  second-stage bootloader (ESP image)
    0x008000  partition table         (tools/partitions.py: GENERIC, GENERIC_OTA, ...)
    0x010000  the app                 (ESP image; `factory`, or `ota_0` on the OTA variant)
    ...       vfs                     a LittleFS2 filesystem with 4096-byte blocks, where
                                      MicroPython finds it (tools/partitions.vfs_partition:
                                      after the last partition up to the end of the flash,
                                      unless the table names a `vfs` partition)

A fresh board gets a bootloader and an app image that pass the bootloader's checks (a real
MicroPython build can be flashed over them) and a LittleFS filesystem holding the firmware
files. Which app runs, and whether it can, is decided at each reset (see `startup`).
"""

import os

from tools import esp_image, partitions
from tools.image import littlefs_image, read_littlefs

FLASH_SIZE = partitions.FLASH_SIZES["4MB"]  # a fresh board's, unless asked otherwise


def build_image(files, flash_size=FLASH_SIZE, table=partitions.GENERIC):
    """A whole flash image: bootloader, `table`, an app in its first app partition, and
    the runtime vfs holding `files`."""
    partitions.check_fits(table, flash_size)
    image = bytearray(b"\xff" * flash_size)

    def put(offset, data):
        image[offset : offset + len(data)] = data

    put(partitions.BOOTLOADER_OFFSET, esp_image.bootloader())
    put(partitions.TABLE_OFFSET, partitions.build_table(table))
    app = partitions.find(table, partitions.TYPE_APP)[0]
    put(app.offset, esp_image.app(note=b"qrfleet virtual MicroPython"))
    vfs = partitions.vfs_partition(table, flash_size)
    put(vfs.offset, littlefs_image(files, vfs.size))
    return bytes(image)


class FlashImage:
    """File-backed flash with the read/write/erase surface the ROM and bootloader use."""

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
        """The partition table at 0x8000; LayoutError when there is none."""
        return partitions.parse_table(self.read(partitions.TABLE_OFFSET, partitions.TABLE_SIZE))

    def vfs_partition(self):
        """The partition MicroPython mounts, as main.c finds it; None when none is left."""
        return partitions.vfs_partition(self.partitions(), self.size)

    def filesystem(self):
        """The vfs partition's LittleFS, read from the image as it is now."""
        vfs = self.vfs_partition()
        if vfs is None:
            raise partitions.LayoutError("the partition table leaves no room for a filesystem")
        return read_littlefs(self.read(vfs.offset, vfs.size))
