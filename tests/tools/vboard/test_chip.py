"""The chip behind download mode keeps its identity, answers for its flash and follows the UART.

esptool reaches all of this through the loader (tests/tools/vboard/test_bootloader.py); these
tests read and write the registers directly, as esptool's READ_REG and WRITE_REG do.
"""

import os

import pytest

from tools.vboard.chip import (
    EFUSE_BLK0,
    ROM_BAUD,
    SPI_CMD_REG,
    SPI_CMD_USR,
    SPI_MISO_DLEN_REG,
    SPI_USR2_REG,
    SPI_USR_MISO,
    SPI_USR_REG,
    SPI_W0_REG,
    UART_CLKDIV_REG,
    XTAL_HZ,
    Chip,
)
from tools.vboard.flash import FlashImage

MAC = bytes.fromhex("240ac4a1b2c3")
MiB = 1024 * 1024


def blank_flash(directory, size):
    path = directory / "flash.bin"
    path.write_bytes(b"")
    os.truncate(path, size)
    return FlashImage(str(path))


def spi_read(chip, opcode, length):
    """A read command through the SPI controller, the registers set the way esptool sets them."""
    chip.write_register(SPI_USR_REG, SPI_USR_MISO, 0xFFFFFFFF)
    chip.write_register(SPI_USR2_REG, 7 << 28 | opcode, 0xFFFFFFFF)
    chip.write_register(SPI_MISO_DLEN_REG, length * 8 - 1, 0xFFFFFFFF)
    chip.write_register(SPI_CMD_REG, SPI_CMD_USR, 0xFFFFFFFF)
    assert not chip.read_register(SPI_CMD_REG) & SPI_CMD_USR, "the transfer did not finish"
    return chip.read_register(SPI_W0_REG).to_bytes(4, "little")[:length]


def test_efuse_words_hold_the_mac_and_cannot_be_written(tmp_path):
    chip = Chip(blank_flash(tmp_path, 4 * MiB), MAC)
    words = [EFUSE_BLK0 + 4, EFUSE_BLK0 + 8]
    before = [chip.read_register(address) for address in words]
    assert before[0] == 0xC4A1B2C3 and before[1] & 0xFFFF == 0x240A
    for address in words:
        chip.write_register(address, 0, 0xFFFFFFFF)
    assert [chip.read_register(address) for address in words] == before


@pytest.mark.parametrize("size_mib, capacity_id", [(4, 0x16), (16, 0x18)])
def test_flash_chip_reports_the_capacity_of_the_flash_behind_it(tmp_path, size_mib, capacity_id):
    chip = Chip(blank_flash(tmp_path, size_mib * MiB), MAC)
    assert spi_read(chip, 0x9F, 3) == bytes((0xEF, 0x40, capacity_id))  # RDID: Winbond 25Q


def test_uart_divider_follows_the_baud_rate_until_a_reset(tmp_path):
    chip = Chip(blank_flash(tmp_path, 4 * MiB), MAC)
    assert chip.read_register(UART_CLKDIV_REG) == XTAL_HZ // ROM_BAUD
    chip.baud = 460800
    assert chip.read_register(UART_CLKDIV_REG) == XTAL_HZ // 460800
    chip.reset()
    assert chip.read_register(UART_CLKDIV_REG) == XTAL_HZ // ROM_BAUD


def test_mac_of_the_wrong_length_is_refused_with_an_example(tmp_path):
    with pytest.raises(ValueError, match="6 bytes"):
        Chip(blank_flash(tmp_path, 4 * MiB), b"\x24\x0a")


def test_unknown_chip_is_refused_naming_the_emulated_ones(tmp_path):
    with pytest.raises(ValueError, match="esp32"):
        Chip(blank_flash(tmp_path, 4 * MiB), MAC, name="esp8266")
