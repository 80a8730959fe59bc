"""The chip behind the virtual board's download mode: identity, registers and SPI flash.

What esptool learns and changes through the loader is state of the chip, kept here; the
serial protocol that reaches it is in `bootloader`. (esptool draws the same line: loader.py
speaks the protocol, targets/ holds what differs per chip.)

Chip detection and identity come from registers esptool reads with READ_REG: the chip magic
word, the eFuse words (MAC, package, revision, features) and the SPI controller, which
esptool drives with WRITE_REG to send the flash chip commands RDID, RDSR and SFDP reads (see
`SpiNorFlash`). `CHIPS` names the chips a board can be: a full ESP32, and an ESP32-S2
identity for testing that tools refuse a unit of the wrong chip.

The flash contents are any object with `size`, `read(offset, length)`, `write(offset,
data)` and `erase(offset, length)`, such as the board's `flash.FlashImage`.
"""

import hashlib
import struct

from tools.partitions import SECTOR

ROM_BAUD = 115200  # what the ROM's UART runs at after a reset
# The ROM's first lines after a reset; the date is that of the revision 3 mask ROM.
ROM_BANNER = "ets Jul 29 2019 12:21:46\r\n\r\nrst:{rst},boot:{boot}\r\n"
_MD5_CHUNK = 0x10000

# ---------------------------------------------------------------------------
# The ESP32's registers as esptool reads them (targets/esp32.py)

CHIP_DETECT_MAGIC_REG = 0x40001000
ESP32_MAGIC = 0x00F01D83
EFUSE_BLK0 = 0x3FF5A000  # read registers EFUSE_BLK0_RDATA0..6, one 32-bit word each
APB_CTL_DATE_REG = 0x3FF6607C
UART_CLKDIV_REG = 0x3FF40014
RTCCALICFG1_REG = 0x3FF5F06C
GPIO_STRAP_REG = 0x3FF44038
XTAL_HZ = 40_000_000

SPI_BASE = 0x3FF42000  # SPI1, the flash controller
SPI_CMD_REG = SPI_BASE + 0x00
SPI_ADDR_REG = SPI_BASE + 0x04
SPI_USR_REG = SPI_BASE + 0x1C
SPI_USR1_REG = SPI_BASE + 0x20
SPI_USR2_REG = SPI_BASE + 0x24
SPI_MOSI_DLEN_REG = SPI_BASE + 0x28
SPI_MISO_DLEN_REG = SPI_BASE + 0x2C
SPI_W0_REG = SPI_BASE + 0x80  # W0..W15: 64 bytes of data buffer
SPI_CMD_USR = 1 << 18
SPI_USR_ADDR = 1 << 30
SPI_USR_MISO = 1 << 28
SPI_USR_MOSI = 1 << 27
SPI_USR_ADDR_LEN_SHIFT = 26


def mac_crc8(mac: bytes) -> int:
    """CRC-8 (reflected polynomial 0x8C) that the eFuse block stores beside the MAC."""
    crc = 0
    for byte in mac:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


class Esp32:
    """An ESP32-D0WD-V3 revision v3.1: dual core, 240 MHz, 40 MHz crystal, no security features."""

    security_info = None  # GET_SECURITY_INFO came with the ESP32-S2 ROM

    @staticmethod
    def registers(mac: bytes) -> dict:
        """The read-only registers esptool reads: chip magic, eFuse words, clocks, straps."""
        package_d0wd = 1
        word3 = (
            package_d0wd << 9  # CHIP_PACKAGE
            | 1 << 13  # CHIP_CPU_FREQ_RATED (and not CHIP_CPU_FREQ_LOW): 240 MHz
            | 1 << 15  # CHIP_VER_REV1: major revision bit 0
        )
        ck8m_freq = 80  # with the RTC calibration below the ROM computes exactly 40 MHz
        adc_vref = 0x0A
        word4 = adc_vref << 8 | ck8m_freq
        minor_revision = 1
        word5 = 1 << 20 | minor_revision << 24  # CHIP_VER_REV2: major revision bit 1
        efuse = [
            0,
            int.from_bytes(mac[2:6], "big"),
            mac_crc8(mac) << 16 | mac[0] << 8 | mac[1],
            word3,
            word4,
            word5,
            0,  # coding scheme none, no secure boot
        ]
        registers = {EFUSE_BLK0 + 4 * n: word for n, word in enumerate(efuse)}
        registers.update(
            {
                CHIP_DETECT_MAGIC_REG: ESP32_MAGIC,
                APB_CTL_DATE_REG: 1 << 31,  # major revision bit 2 (revision 3 = all three bits)
                # cali * 15625 * ck8m / 40 = 40 MHz: esptool then keeps the baud rate it asks for.
                RTCCALICFG1_REG: (40 * XTAL_HZ // (15625 * ck8m_freq)) << 7,
                GPIO_STRAP_REG: 0x03,  # GPIO0 low: download boot; MTDI low: 3.3 V flash
            }
        )
        return registers


class Esp32S2Identity:
    """A board that identifies as an ESP32-S2 and otherwise behaves as the ESP32 loader.

    Its chip magic word, eFuse MAC and GET_SECURITY_INFO answer are the
    ESP32-S2's, which is what esptool and a flashing tool check before they
    write anything: enough to show that a unit of the wrong chip is refused.
    """

    # flags, flash_crypt_cnt, 7 key purposes: no security features enabled
    security_info = bytes(12)

    @staticmethod
    def registers(mac: bytes) -> dict:
        mac_efuse = 0x3F41A044
        return {
            CHIP_DETECT_MAGIC_REG: 0x000007C6,
            mac_efuse: int.from_bytes(mac[2:6], "big"),
            mac_efuse + 4: mac[0] << 8 | mac[1],
        }


CHIPS = {"esp32": Esp32, "esp32s2": Esp32S2Identity}


class SpiNorFlash:
    """The flash chip's command set as esptool reaches it through the SPI controller.

    A Winbond-style 25Q part sized to the flash image: RDID, the three status
    registers with write enable, SFDP reads, and the reset/power commands as
    no-ops. Other opcodes read back as a floating bus (0xFF).
    """

    def __init__(self, size: int):
        self.jedec_id = bytes((0xEF, 0x40, size.bit_length() - 1))
        self.status = bytearray((0x00, 0x02, 0x60))  # SR1, SR2 (quad enable), SR3
        self.write_enabled = False
        self.sfdp = self._sfdp_table(size)

    @staticmethod
    def _sfdp_table(size):
        header = b"SFDP" + bytes((0x06, 0x01, 0x00, 0xFF))
        basic_parameters = bytes((0x00, 0x06, 0x01, 0x10, 0x80, 0x00, 0x00, 0xFF))  # at 0x80
        table = bytearray(header + basic_parameters).ljust(0x80, b"\xff")
        table += struct.pack("<II", 0xFFF120E5, size * 8 - 1)  # 4 KiB erase, density in bits
        return bytes(table)

    def transfer(self, opcode: int, address, mosi: bytes, miso_len: int) -> bytes:
        if opcode == 0x9F:  # RDID
            reply = self.jedec_id
        elif opcode in (0x05, 0x35, 0x15):  # RDSR, RDSR2, RDSR3
            index = (0x05, 0x35, 0x15).index(opcode)
            reply = bytes((self.status[index] | (2 if index == 0 and self.write_enabled else 0),))
        elif opcode == 0x5A:  # RDSFDP
            start = address or 0
            reply = self.sfdp[start : start + miso_len]
        else:
            self._control(opcode, mosi)
            reply = b""
        return reply.ljust(miso_len, b"\xff")[:miso_len]

    def _control(self, opcode, mosi):
        if opcode in (0x06, 0x50):  # WREN, volatile write enable
            self.write_enabled = True
        elif opcode == 0x04:  # WRDI
            self.write_enabled = False
        elif opcode in (0x01, 0x31, 0x11) and self.write_enabled:  # WRSR, WRSR2, WRSR3
            first = (0x01, 0x31, 0x11).index(opcode)
            for index, value in enumerate(mosi[: 3 - first], first):
                self.status[index] = value & 0xFC if index == 0 else value
            self.write_enabled = False


class Chip:
    """One chip as download mode reaches it: its registers, its UART's baud rate, its flash."""

    def __init__(self, flash, mac: bytes, name="esp32"):
        if name not in CHIPS:
            raise ValueError(f"chip {name!r} is not emulated; use one of: {', '.join(CHIPS)}")
        if len(mac) != 6:
            raise ValueError(
                f"the eFuse MAC has 6 bytes, got {len(mac)}: pass e.g. bytes.fromhex('24 0a c4 12 34 56')"
            )
        self.flash = flash
        self.security_info = CHIPS[name].security_info
        self._read_only = CHIPS[name].registers(bytes(mac))
        self._flash_chip = SpiNorFlash(flash.size)
        self.reset()

    def reset(self):
        """Registers and UART as after a reset; the flash keeps its contents and status."""
        self._registers = dict(self._read_only)
        self.baud = ROM_BAUD

    # -- registers

    def read_register(self, address: int) -> int:
        if address == UART_CLKDIV_REG:
            return XTAL_HZ // self.baud  # what the ROM's auto-baud measured
        return self._registers.get(address, 0)

    def write_register(self, address: int, value: int, mask: int) -> None:
        if address in self._read_only:
            return  # ROM, eFuse and strapping registers are read-only
        word = (self._registers.get(address, 0) & ~mask | value & mask) & 0xFFFFFFFF
        if address == SPI_CMD_REG and word & SPI_CMD_USR:
            self._run_spi_user_command()
            word &= ~SPI_CMD_USR  # the controller clears the bit when the transfer is done
        self._registers[address] = word

    def _run_spi_user_command(self):
        reg = self._registers.get
        usr = reg(SPI_USR_REG, 0)
        opcode = reg(SPI_USR2_REG, 0) & 0xFF
        address = None
        if usr & SPI_USR_ADDR:
            bits = (reg(SPI_USR1_REG, 0) >> SPI_USR_ADDR_LEN_SHIFT & 0x3F) + 1
            address = reg(SPI_ADDR_REG, 0) >> (32 - bits)  # sent from the register's MSB
        mosi = b""
        if usr & SPI_USR_MOSI:
            nbytes = (reg(SPI_MOSI_DLEN_REG, 0) + 8) // 8
            buffer = b"".join(struct.pack("<I", reg(SPI_W0_REG + 4 * i, 0)) for i in range(16))
            mosi = buffer[:nbytes]
        miso_len = (reg(SPI_MISO_DLEN_REG, 0) + 8) // 8 if usr & SPI_USR_MISO else 0
        reply = self._flash_chip.transfer(opcode, address, mosi, min(miso_len, 64))
        reply = reply.ljust((len(reply) + 3) // 4 * 4, b"\0")
        for i in range(0, len(reply), 4):
            self._registers[SPI_W0_REG + i] = struct.unpack_from("<I", reply, i)[0]

    # -- flash

    def in_flash(self, offset: int, length: int) -> bool:
        """Whether the region lies within the flash."""
        return offset + length <= self.flash.size

    def erase_sectors(self, offset: int, length: int) -> None:
        """Erase every sector the region touches, as the ROM does before it writes."""
        start = offset - offset % SECTOR
        end = min(-(-(offset + length) // SECTOR) * SECTOR, self.flash.size)
        self.flash.erase(start, end - start)

    def flash_md5(self, offset: int, length: int) -> bytes:
        md5 = hashlib.md5()
        for start in range(offset, offset + length, _MD5_CHUNK):
            md5.update(self.flash.read(start, min(_MD5_CHUNK, offset + length - start)))
        return md5.digest()
