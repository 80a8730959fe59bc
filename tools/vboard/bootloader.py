"""The virtual board's download mode: the ESP32 ROM serial bootloader and esptool's flasher stub.

Sans-I/O: feed the serial bytes to `RomBootloader.receive_data()`, write what
`data_to_send()` returns back to the port, and reset the board when
`reboot_requested` turns true. The chip behind it (registers, eFuse MAC, UART,
flash) is modelled in `chip`; READ_REG, WRITE_REG, CHANGE_BAUDRATE and the
flash commands act on it.

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

from tools.partitions import SECTOR

from . import slip
from .chip import ROM_BANNER, Chip

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
_ROM_SYNC_VALUE = 0x20120707  # any non-zero value tells esptool it talks to the ROM
_ROM_READ_BLOCK = 64  # READ_FLASH_SLOW always answers 64 bytes
_MAX_READ_PACKET = 0x1000  # the stub's READ_FLASH buffer
_BLOCK_HEADER = struct.Struct("<IIII")  # data length, sequence number, 2 reserved words

_BOOT_BANNER = (
    ROM_BANNER.format(rst="{}", boot="0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))")
    + "waiting for download\r\n"
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
        self._chip = Chip(flash, mac, chip)
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
        self._chip.reset()
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
        return self._chip.read_register(address), b""

    def _write_reg(self, data, chk):
        if not data or len(data) % 16:
            raise Refused(*NOT_ENOUGH_DATA)
        for offset in range(0, len(data), 16):
            address, value, mask, _delay_us = struct.unpack_from("<IIII", data, offset)
            self._chip.write_register(address, value, mask)

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
            self._chip.baud = baud  # answered at the old rate, then switched

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
        if not self._chip.in_flash(offset, length):
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
            self._chip.erase_sectors(offset, size)

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
        if self._stub and op.written == 0 and address % SECTOR:  # first block: sector head
            head = address - address % SECTOR
            self._chip.flash.erase(head, address - head)
        self._chip.flash.write(address, data)
        op.written = max(op.written, address - op.offset + len(data))
        end = op.offset + op.size
        if self._stub and op.written == op.size and end % SECTOR:  # last block: sector tail
            self._chip.flash.erase(end, min(-end % SECTOR, self._chip.flash.size - end))

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
        digest = self._chip.flash_md5(address, size)
        return 0, (digest if self._stub else digest.hex().encode())

    def _read_flash_slow(self, data, chk):
        if len(data) != 8:
            raise Refused(*BAD_LENGTH)
        address, length = struct.unpack("<II", data)
        if length > _ROM_READ_BLOCK:
            raise Refused(*READ_TOO_LONG)
        self._check_range(address, length, FLASH_READ_FAILED)
        return 0, self._chip.flash.read(address, length).ljust(_ROM_READ_BLOCK, b"\0")

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
        chunk = self._chip.flash.read(reader.offset, min(reader.packet_size, reader.remaining))
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
        self._chip.flash.erase(0, self._chip.flash.size)

    def _erase_region(self, data, chk):
        if len(data) != 8:
            raise Refused(*BAD_LENGTH)
        address, size = struct.unpack("<II", data)
        if address % SECTOR or size % SECTOR:
            raise Refused(*BAD_LENGTH)
        self._check_range(address, size, FLASH_WRITE_FAILED)
        self._chip.flash.erase(address, size)

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
