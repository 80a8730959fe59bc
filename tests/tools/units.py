"""What the flashing and provisioning tests share: stand-in firmware and boards to work on."""

import random
from contextlib import contextmanager

from tools import flash
from tools.vboard import flash as layout
from tools.vboard.board import VirtualBoard

STAND_IN_SIZE = 1536 * 1024  # about a MicroPython ESP32 build


def stand_in_firmware(chip_id=layout.CHIP_ID_ESP32, size=STAND_IN_SIZE, seed=1):
    """A MicroPython-shaped .bin for 0x1000: bootloader header, partition table, app header.

    The rest is random (incompressible, like real code). A virtual board boots the Unix port
    whatever the app bytes are, as long as those headers and the table are valid.
    """
    image = bytearray(random.Random(seed).randbytes(size))

    def put(flash_offset, data):
        at = flash_offset - flash.FIRMWARE_OFFSET
        image[at : at + len(data)] = data

    put(layout.BOOTLOADER_OFFSET, layout.esp_image_header(chip_id))
    put(layout.PARTITION_TABLE_OFFSET, layout.partition_table())
    put(0x10000, layout.esp_image_header(chip_id, b"stand-in MicroPython"))
    return bytes(image)


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
