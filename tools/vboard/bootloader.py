"""The virtual board's download mode: the ESP32 ROM serial bootloader and esptool's flasher stub.

Sans-I/O: feed the serial bytes to `RomBootloader.receive_data()`, write what
`data_to_send()` returns back to the port, and reset the board when
`reboot_requested` turns true. The board's flash is any object with `size`,
`read(offset, length)`, `write(offset, data)` and `erase(offset, length)`.

Protocol (esptool's loader.py speaks the other side). Every packet is SLIP
framed. A request is `00 op len:u16 checksum:u32 data`; the checksum is the XOR
of the payload of data blocks, seeded with 0xEF. A response is
`01 op len:u16 value:u32 data status`, where the status is

    ROM    4 bytes: failed (0/1), error code, 2 reserved zero bytes
    stub   2 bytes: a big-endian 16-bit code, 0 for success (0xC100 = bad checksum, ...)

The ROM answers SYNC with a non-zero value and the stub with 0, the ROM's
SPI_FLASH_MD5 is 32 hex digits and the stub's 16 raw bytes, and only the stub
has READ_FLASH (data packets the host acknowledges one by one, then the MD5),
ERASE_FLASH and ERASE_REGION. The stub runs once esptool has uploaded it with
MEM_BEGIN/MEM_DATA/MEM_END; it greets with the packet `OHAI`.

Chip detection and identity come from registers esptool reads with READ_REG:
the chip magic word, the eFuse words (MAC, package, revision, features) and the
SPI controller, which esptool drives with WRITE_REG to send the flash chip
commands RDID, RDSR and SFDP reads (see `SpiNorFlash`). `CHIPS` names the
chips a board can be: a full ESP32, and an ESP32-S2 identity for testing that
tools refuse a unit of the wrong chip.

Leaving download mode: FLASH_END (or FLASH_DEFL_END) sent to the ROM runs the
app in flash or reboots, so `reboot_requested` turns true and further input
is ignored. The stub told to reboot comes back up as the ROM loader (this is
esptool's `--after no-reset`) and prints the software-reset banner.

Flash writes (`flash.write` replaces bytes; `flash.erase` sets them to 0xFF):
the ROM erases the whole target region at FLASH_BEGIN, as the mask ROM does
(esptool's erase-region without the stub relies on it). The stub writes block
by block and erases only what the image does not cover in its first and last
sectors, as those blocks land, so a line cut mid-transfer leaves the flash
beyond the blocks already acknowledged as it was. A block is applied only when
its whole packet has arrived and its checksum matches; a block sent again
after a lost answer is acknowledged without being applied twice.
"""

import functools
import hashlib
import operator
import struct
import zlib

from . import slip

# Commands (esptool loader.py, ESP_CMDS).
FLASH_BEGIN = 0x02
FLASH_DATA = 0x03
FLASH_END = 0x04
MEM_BEGIN = 0x05
MEM_END = 0x06
MEM_DATA = 0x07
SYNC = 0x08
WRITE_REG = 0x09
READ_REG = 0x0A
SPI_SET_PARAMS = 0x0B
SPI_ATTACH = 0x0D
READ_FLASH_SLOW = 0x0E
CHANGE_BAUDRATE = 0x0F
FLASH_DEFL_BEGIN = 0x10
FLASH_DEFL_DATA = 0x11
FLASH_DEFL_END = 0x12
SPI_FLASH_MD5 = 0x13
GET_SECURITY_INFO = 0x14
ERASE_FLASH = 0xD0
ERASE_REGION = 0xD1
READ_FLASH = 0xD2

CHECKSUM_SEED = 0xEF
SYNC_PAYLOAD = b"\x07\x07\x12\x20" + 32 * b"\x55"
SECTOR_SIZE = 0x1000
ROM_BAUD = 115200
_ROM_SYNC_VALUE = 0x20120707  # any non-zero value tells esptool it talks to the ROM
_ROM_READ_BLOCK = 64  # READ_FLASH_SLOW always answers 64 bytes
_MAX_READ_PACKET = 0x1000  # the stub's READ_FLASH buffer
_MD5_CHUNK = 0x10000
_BLOCK_HEADER = struct.Struct("<IIII")  # data length, sequence number, 2 reserved words

_BOOT_BANNER = (
    "ets Jun  8 2016 00:22:57\r\n\r\n"
    "rst:{},boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\r\n"
    "waiting for download\r\n"
)
_POWER_ON = "0x1 (POWERON_RESET)"
_SOFTWARE_RESET = "0x3 (SW_RESET)"


class Refused(Exception):
    """A command the loader answers with an error status: the ROM's error byte and the stub's code."""

    def __init__(self, rom_error, stub_code):
        super().__init__(rom_error, stub_code)
        self.rom_error = rom_error
        self.stub_code = stub_code


# (ROM error byte, stub code) per failure; esptool prints both tables' meanings.
BAD_LENGTH = (0x05, 0xC000)
BAD_CHECKSUM = (0x07, 0xC100)
BAD_BLOCK_SIZE = (0x05, 0xC200)
INVALID_COMMAND = (0x05, 0xC300)
FLASH_WRITE_FAILED = (0x08, 0xC400)
FLASH_READ_FAILED = (0x09, 0xC400)
READ_TOO_LONG = (0x0A, 0xC000)
NOT_IN_FLASH_MODE = (0x06, 0xC600)
INFLATE_FAILED = (0x0B, 0xC700)
NOT_ENOUGH_DATA = (0x06, 0xC800)
TOO_MUCH_DATA = (0x05, 0xC900)
OUT_OF_SEQUENCE = (0x06, 0xC000)
RAM_OVERFLOW = (0x0E, 0xC900)  # more MEM_DATA than MEM_BEGIN announced
NOT_IMPLEMENTED = (0x05, 0xFF00)


def checksum(data: bytes) -> int:
    """The ROM's checksum of a data block."""
    return functools.reduce(operator.xor, data, CHECKSUM_SEED)


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


# ---------------------------------------------------------------------------
# Transfers in progress


class _FlashWrite:
    """One FLASH_BEGIN (or FLASH_DEFL_BEGIN) up to its END."""

    def __init__(self, offset, size, num_blocks, block_size, compressed):
        self.offset = offset
        self.size = size
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.inflater = zlib.decompressobj() if compressed else None
        self.next_seq = 0
        self.written = 0  # bytes of the image in flash so far
        self.last_block = None  # (seq, payload): a resend of it is acknowledged, not reapplied


class _FlashReader:
    """The stub's READ_FLASH: one data packet at a time, each acknowledged, then the MD5."""

    def __init__(self, offset, length, packet_size):
        self.offset = offset
        self.remaining = length
        self.length = length
        self.packet_size = packet_size
        self.md5 = hashlib.md5()


# ---------------------------------------------------------------------------


class RomBootloader:
    """An ESP32 in download mode: the ROM loader until esptool starts its flasher stub."""

    def __init__(self, flash, mac: bytes, chip="esp32"):
        if chip not in CHIPS:
            raise ValueError(f"chip {chip!r} is not emulated; use one of: {', '.join(CHIPS)}")
        if len(mac) != 6:
            raise ValueError(
                f"the eFuse MAC has 6 bytes, got {len(mac)}: pass e.g. bytes.fromhex('24 0a c4 12 34 56')"
            )
        self._flash = flash
        self._chip = CHIPS[chip]
        self._chip_registers = self._chip.registers(bytes(mac))
        self._spi_flash = SpiNorFlash(flash.size)
        self._slip = slip.SlipDecoder()
        self._out = bytearray()
        self.reboot_requested = False
        self._boot()

    # -- the interface the serial server drives

    def on_enter(self) -> None:
        """The board was reset into download mode: start afresh and print the ROM's banner."""
        self.reboot_requested = False
        self._boot()
        self._out += _BOOT_BANNER.format(_POWER_ON).encode()

    def receive_data(self, data: bytes) -> None:
        if self.reboot_requested:
            return  # the board has left download mode; the serial server resets it
        for packet in self._slip.feed(data):
            if self._reader is not None:
                self._acknowledge_read(packet)
            else:
                self._handle(packet)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def stub_running(self) -> bool:
        """True once esptool's flasher stub has been uploaded and started."""
        return self._stub

    # -- state

    def _boot(self):
        self._slip.reset()
        self._stub = False
        self._registers = dict(self._chip_registers)
        self._baud = ROM_BAUD
        self._write = None
        self._ram_remaining = None  # bytes a MEM_BEGIN announced and MEM_DATA has yet to bring
        self._reader = None
        self._after = None  # what to do once the response has been queued

    def _soft_reset(self):
        """FLASH_END asking the stub to reboot: the chip comes back up in the ROM loader."""
        self._boot()
        self._out += _BOOT_BANNER.format(_SOFTWARE_RESET).encode()

    def _start_stub(self):
        self._stub = True
        self._send(b"OHAI")

    def _leave_download_mode(self):
        self.reboot_requested = True

    # -- packets

    def _send(self, packet):
        self._out += slip.encode(packet)

    def _respond(self, op, value=0, payload=b"", refused=None):
        if self._stub:
            status = struct.pack(">H", refused.stub_code if refused else 0)
        else:
            status = bytes((1, refused.rom_error, 0, 0)) if refused else bytes(4)
        body = payload + status
        self._send(struct.pack("<BBHI", 1, op, len(body), value) + body)

    def _handle(self, packet):
        if len(packet) < 8 or packet[0] != 0:
            return  # not a request: the loader ignores it
        _, op, length, chk = struct.unpack_from("<BBHI", packet)
        data = packet[8:]
        self._after = None
        try:
            if length != len(data):
                raise Refused(*BAD_LENGTH)
            handler = (self._STUB_COMMANDS if self._stub else self._ROM_COMMANDS).get(op)
            if handler is None:
                raise Refused(*INVALID_COMMAND)
            value, payload = handler(self, data, chk) or (0, b"")
        except Refused as refused:
            self._respond(op, refused=refused)
            return
        self._respond(op, value, payload)
        if self._after is not None:
            self._after()

    # -- connection and registers

    def _sync(self, data, chk):
        if data != SYNC_PAYLOAD:
            raise Refused(*BAD_LENGTH)
        value = 0 if self._stub else _ROM_SYNC_VALUE
        for _ in range(7):  # eight answers in all, the last one from _handle
            self._respond(SYNC, value)
        return value, b""

    def _read_reg(self, data, chk):
        if len(data) != 4:
            raise Refused(*BAD_LENGTH)
        (address,) = struct.unpack("<I", data)
        return self._register(address), b""

    def _write_reg(self, data, chk):
        if not data or len(data) % 16:
            raise Refused(*NOT_ENOUGH_DATA)
        for offset in range(0, len(data), 16):
            address, value, mask, _delay_us = struct.unpack_from("<IIII", data, offset)
            self._store_register(address, value, mask)

    def _register(self, address):
        if address == UART_CLKDIV_REG:
            return XTAL_HZ // self._baud  # what the ROM's auto-baud measured
        return self._registers.get(address, 0)

    def _store_register(self, address, value, mask):
        if address in self._chip_registers:
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
        reply = self._spi_flash.transfer(opcode, address, mosi, min(miso_len, 64))
        reply = reply.ljust((len(reply) + 3) // 4 * 4, b"\0")
        for i in range(0, len(reply), 4):
            self._registers[SPI_W0_REG + i] = struct.unpack_from("<I", reply, i)[0]

    def _spi_attach(self, data, chk):
        if len(data) != (4 if self._stub else 8):  # the ROM takes an extra "is legacy" word
            raise Refused(*BAD_LENGTH)

    def _spi_set_params(self, data, chk):
        if len(data) != 24:
            raise Refused(*BAD_LENGTH)

    def _change_baudrate(self, data, chk):
        if len(data) != 8:
            raise Refused(*BAD_LENGTH)
        (baud,) = struct.unpack_from("<I", data)
        if baud == 0:
            raise Refused(*BAD_LENGTH)

        def switch():
            self._baud = baud  # answered at the old rate, then switched

        self._after = switch

    def _get_security_info(self, data, chk):
        if self._chip.security_info is None:
            raise Refused(*(NOT_IMPLEMENTED if self._stub else INVALID_COMMAND))
        return 0, self._chip.security_info

    # -- RAM download (how esptool starts its stub)

    def _mem_begin(self, data, chk):
        if len(data) != 16:
            raise Refused(*BAD_LENGTH)
        size, _blocks, _block_size, _address = struct.unpack("<IIII", data)
        self._ram_remaining = size

    def _mem_data(self, data, chk):
        if self._ram_remaining is None:
            raise Refused(*NOT_IN_FLASH_MODE)
        _seq, payload = self._block(data, chk)
        if len(payload) > self._ram_remaining:
            raise Refused(*RAM_OVERFLOW)
        self._ram_remaining -= len(payload)

    def _mem_end(self, data, chk):
        if len(data) != 8:
            raise Refused(*BAD_LENGTH)
        if self._ram_remaining is None:
            raise Refused(*NOT_IN_FLASH_MODE)
        if self._ram_remaining:
            raise Refused(*NOT_ENOUGH_DATA)
        (stay,) = struct.unpack_from("<I", data)
        self._ram_remaining = None
        if not stay and not self._stub:
            # The uploaded code runs; the only code emulated is esptool's flasher stub.
            self._after = self._start_stub

    def _block(self, data, chk):
        """Sequence number and payload of a data block, once its length and checksum are right."""
        if len(data) < _BLOCK_HEADER.size:
            raise Refused(*NOT_ENOUGH_DATA)
        length, seq, _, _ = _BLOCK_HEADER.unpack_from(data)
        payload = data[_BLOCK_HEADER.size :]
        if length != len(payload):
            raise Refused(*TOO_MUCH_DATA)
        if checksum(payload) != chk:
            raise Refused(*BAD_CHECKSUM)
        return seq, payload

    # -- flash writes

    def _check_range(self, offset, length, refusal):
        if offset + length > self._flash.size:
            raise Refused(*refusal)

    def _begin(self, data, compressed):
        accepted = (16, 20) if self._stub else (16,)  # the stub also takes an "encrypted" word
        if len(data) not in accepted:
            raise Refused(*BAD_LENGTH)
        size, num_blocks, block_size, offset = struct.unpack_from("<IIII", data)
        if len(data) == 20 and struct.unpack_from("<I", data, 16)[0]:
            raise Refused(*NOT_IMPLEMENTED)  # the virtual board has no flash encryption
        if block_size == 0 or block_size > slip.MAX_PACKET - 0x100:
            raise Refused(*BAD_BLOCK_SIZE)
        self._check_range(offset, size, FLASH_WRITE_FAILED)
        self._write = _FlashWrite(offset, size, num_blocks, block_size, compressed)
        if not self._stub and size:
            start = offset - offset % SECTOR_SIZE
            end = min(-(-(offset + size) // SECTOR_SIZE) * SECTOR_SIZE, self._flash.size)
            self._flash.erase(start, end - start)

    def _flash_begin(self, data, chk):
        self._begin(data, compressed=False)

    def _flash_defl_begin(self, data, chk):
        # The stub is given the image size; the ROM the size rounded up to whole blocks.
        self._begin(data, compressed=True)

    def _flash_data(self, data, chk):
        op, seq, payload = self._next_block(data, chk, compressed=False)
        if op is None:
            return
        start = seq * op.block_size
        if len(payload) > op.block_size or start >= op.size:
            raise Refused(*TOO_MUCH_DATA)
        self._program(op, op.offset + start, payload[: op.size - start])
        op.next_seq, op.last_block = seq + 1, (seq, payload)

    def _flash_defl_data(self, data, chk):
        op, seq, payload = self._next_block(data, chk, compressed=True)
        if op is None:
            return
        room = op.size - op.written
        try:
            image = op.inflater.decompress(payload, room + 1)
        except zlib.error:
            self._write = None
            raise Refused(*INFLATE_FAILED) from None
        if len(image) > room or op.inflater.unconsumed_tail:
            self._write = None
            raise Refused(*TOO_MUCH_DATA)
        if image:
            self._program(op, op.offset + op.written, image)
        op.next_seq, op.last_block = seq + 1, (seq, payload)

    def _next_block(self, data, chk, compressed):
        """The write a block belongs to, or None for a resent block already applied."""
        op = self._write
        if op is None or (op.inflater is not None) != compressed:
            raise Refused(*NOT_IN_FLASH_MODE)
        seq, payload = self._block(data, chk)
        if op.last_block == (seq, payload):
            return None, seq, payload
        if seq != op.next_seq:
            raise Refused(*OUT_OF_SEQUENCE)
        if seq >= op.num_blocks:
            raise Refused(*TOO_MUCH_DATA)
        return op, seq, payload

    def _program(self, op, address, data):
        if self._stub and op.written == 0 and address % SECTOR_SIZE:  # first block: sector head
            head = address - address % SECTOR_SIZE
            self._flash.erase(head, address - head)
        self._flash.write(address, data)
        op.written = max(op.written, address - op.offset + len(data))
        end = op.offset + op.size
        if self._stub and op.written == op.size and end % SECTOR_SIZE:  # last block: sector tail
            self._flash.erase(end, min(-end % SECTOR_SIZE, self._flash.size - end))

    def _end(self, data, compressed):
        if len(data) != 4:
            raise Refused(*BAD_LENGTH)
        (stay,) = struct.unpack("<I", data)
        op = self._write
        if self._stub:
            if op is None or (op.inflater is not None) != compressed:
                raise Refused(*NOT_IN_FLASH_MODE)
            if op.written != op.size:
                raise Refused(*BAD_LENGTH)
        self._write = None
        if not self._stub:
            self._after = self._leave_download_mode  # run the app (1) or reboot (0)
        elif not stay:
            self._after = self._soft_reset

    def _flash_end(self, data, chk):
        self._end(data, compressed=False)

    def _flash_defl_end(self, data, chk):
        self._end(data, compressed=True)

    # -- flash reads and erases

    def _spi_flash_md5(self, data, chk):
        if len(data) != 16:
            raise Refused(*BAD_LENGTH)
        address, size, _, _ = struct.unpack("<IIII", data)
        self._check_range(address, size, FLASH_READ_FAILED)
        md5 = hashlib.md5()
        for start in range(address, address + size, _MD5_CHUNK):
            md5.update(self._flash.read(start, min(_MD5_CHUNK, address + size - start)))
        return 0, (md5.digest() if self._stub else md5.hexdigest().encode())

    def _read_flash_slow(self, data, chk):
        if len(data) != 8:
            raise Refused(*BAD_LENGTH)
        address, length = struct.unpack("<II", data)
        if length > _ROM_READ_BLOCK:
            raise Refused(*READ_TOO_LONG)
        self._check_range(address, length, FLASH_READ_FAILED)
        return 0, self._flash.read(address, length).ljust(_ROM_READ_BLOCK, b"\0")

    def _read_flash(self, data, chk):
        if len(data) != 16:
            raise Refused(*BAD_LENGTH)
        address, length, packet_size, _in_flight = struct.unpack("<IIII", data)
        if not 0 < packet_size <= _MAX_READ_PACKET:
            raise Refused(*BAD_LENGTH)
        self._check_range(address, length, FLASH_READ_FAILED)
        self._reader = _FlashReader(address, length, packet_size)
        self._after = self._send_read_packet

    def _send_read_packet(self):
        reader = self._reader
        if not reader.remaining:
            self._send(reader.md5.digest())
            self._reader = None
            return
        chunk = self._flash.read(reader.offset, min(reader.packet_size, reader.remaining))
        reader.md5.update(chunk)
        reader.offset += len(chunk)
        reader.remaining -= len(chunk)
        self._send(chunk)

    def _acknowledge_read(self, packet):
        """The host's acknowledgement (bytes received so far) releases the next packet."""
        reader = self._reader
        if len(packet) != 4:
            reader.remaining = 0  # not an acknowledgement: the stub gives up and sends the MD5
            self._send_read_packet()
            return
        (received,) = struct.unpack("<I", packet)
        if reader.remaining or received >= reader.length:
            self._send_read_packet()

    def _erase_flash(self, data, chk):
        if data:
            raise Refused(*BAD_LENGTH)
        self._flash.erase(0, self._flash.size)

    def _erase_region(self, data, chk):
        if len(data) != 8:
            raise Refused(*BAD_LENGTH)
        address, size = struct.unpack("<II", data)
        if address % SECTOR_SIZE or size % SECTOR_SIZE:
            raise Refused(*BAD_LENGTH)
        self._check_range(address, size, FLASH_WRITE_FAILED)
        self._flash.erase(address, size)

    _ROM_COMMANDS = {
        SYNC: _sync,
        GET_SECURITY_INFO: _get_security_info,
        READ_REG: _read_reg,
        WRITE_REG: _write_reg,
        SPI_ATTACH: _spi_attach,
        SPI_SET_PARAMS: _spi_set_params,
        CHANGE_BAUDRATE: _change_baudrate,
        MEM_BEGIN: _mem_begin,
        MEM_DATA: _mem_data,
        MEM_END: _mem_end,
        FLASH_BEGIN: _flash_begin,
        FLASH_DATA: _flash_data,
        FLASH_END: _flash_end,
        FLASH_DEFL_BEGIN: _flash_defl_begin,
        FLASH_DEFL_DATA: _flash_defl_data,
        FLASH_DEFL_END: _flash_defl_end,
        SPI_FLASH_MD5: _spi_flash_md5,
        READ_FLASH_SLOW: _read_flash_slow,
    }
    _STUB_COMMANDS = {op: h for op, h in _ROM_COMMANDS.items() if op != READ_FLASH_SLOW}
    _STUB_COMMANDS.update(
        {READ_FLASH: _read_flash, ERASE_FLASH: _erase_flash, ERASE_REGION: _erase_region}
    )
