"""What the flashing and provisioning tests share: stand-in firmware and boards to work on."""

import random
from contextlib import contextmanager

from littlefs import LittleFS, UserContext

from tools import esp_image, partitions
from tools.vboard.board import VirtualBoard

STAND_IN_CODE = 1400 * 1024  # about the code of a MicroPython ESP32 build (OTA: -Os)


def stand_in_firmware(
    table=partitions.GENERIC, chip_id=esp_image.CHIP_ID_ESP32, code_size=STAND_IN_CODE, seed=1
):
    """A MicroPython .bin for 0x1000 as micropython.org publishes them, well formed as a unit's
    ROM and bootloader check it: the bootloader, the partition table `table` at 0x8000 and an
    app in its first app partition, 0xFF between them. The app's code is random
    (incompressible, like real code)."""
    app = esp_image.app(chip_id, note=random.Random(seed).randbytes(code_size))
    app_offset = partitions.find(table, partitions.TYPE_APP)[0].offset
    image = bytearray(b"\xff" * (app_offset - partitions.BOOTLOADER_OFFSET)) + app

    def put(offset, data):
        at = offset - partitions.BOOTLOADER_OFFSET
        image[at : at + len(data)] = data

    put(partitions.BOOTLOADER_OFFSET, esp_image.bootloader(chip_id))
    put(partitions.TABLE_OFFSET, partitions.build_table(table))
    return bytes(image)


def filesystem_on(board):
    """The LittleFS a unit with the board's flash would mount, found as MicroPython finds it
    (the table at 0x8000, the flash size, the `vfs` rule), read from the board's flash file."""
    flash = (board.dir / "flash.bin").read_bytes()
    table = partitions.parse_table(flash[partitions.TABLE_OFFSET :])
    vfs = partitions.vfs_partition(table, len(flash))
    return LittleFS(
        context=UserContext(buffer=bytearray(flash[vfs.offset : vfs.end])),
        block_size=partitions.SECTOR,
        block_count=vfs.size // partitions.SECTOR,
    )


@contextmanager
def board_in_background(background, directory, chip="esp32"):
    """A VirtualBoard running in the test's background event loop (for options `qrfleet vboard`
    does not take, such as another chip)."""
    board = VirtualBoard(directory, chip=chip)
    background.run(board.start())
    try:
        yield board
    finally:
        background.run(board.stop())
