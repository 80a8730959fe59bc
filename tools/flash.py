"""Write MicroPython and a unit's filesystem to an ESP32 over its serial port.

esptool is the protocol layer (reset into download mode, chip detection, the flasher stub,
compressed block writes, MD5); this module decides what is safe to write and says so in words a
technician can act on. `qrfleet flash` and `qrfleet provision` are built on it.

    with open_unit("/dev/ttyUSB0") as unit:      # or rfc2217://HOST:PORT
        unit.check_fits([(FIRMWARE_OFFSET, firmware), (VFS_OFFSET, vfs)])
        unit.write(FIRMWARE_OFFSET, firmware, on_progress)   # verified by MD5
        unit.hard_reset()

A MicroPython build for ESP32 is one `.bin` (bootloader, partition table, app) written at
0x1000; the filesystem (LittleFS2) goes in the `vfs` partition at 0x200000.

Exceptions, each with a message that says what to do:

    FlashError
     +-- NoSerialPort        the port does not exist or cannot be opened
     +-- NotInDownloadMode   the unit did not answer the bootloader's sync
     +-- WrongChip           the unit, or the .bin, is for another chip
     +-- DoesNotFit          images overlap each other or pass the end of the flash
     +-- LinkLost            the serial link dropped mid-write and the block's retries failed
     +-- VerifyFailed        the flash's MD5 differs from what was written
"""

import contextlib
import hashlib
import queue
import struct
import threading
import zlib

import serial
import serial.rfc2217
from esptool.cmds import detect_chip
from esptool.logger import log as esptool_log
from esptool.targets import CHIP_DEFS
from esptool.util import FatalError
from littlefs import LittleFS, UserContext

from tools.vboard import flash as layout

FIRMWARE_OFFSET = layout.BOOTLOADER_OFFSET
VFS_OFFSET, VFS_SIZE = 0x200000, 0x200000
EXPECTED_CHIP = "ESP32"
FAST_BAUD = 460800  # what CP210x/CH340 bridges on dev boards sustain
_CONNECT_ATTEMPTS = 3
_BLOCK_ATTEMPTS = 2  # a block is sent again once after a lost answer, then the unit fails
_COMPRESS_LEVEL = 9
_READ_CHUNK = 256  # reads cost by the byte: serial time, or pyserial RFC 2217 per-byte queueing
_IMAGE_MAGIC = 0xE9
_IMAGE_CHIP_ID = struct.Struct("<H")  # bytes 12-13 of an ESP image: the chip it was built for
_IMAGE_CHIP_ID_AT = 12


class FlashError(Exception):
    """A unit could not be flashed; the message says why and what to do."""


class NoSerialPort(FlashError):
    pass


class NotInDownloadMode(FlashError):
    pass


class WrongChip(FlashError):
    pass


class DoesNotFit(FlashError):
    pass


class LinkLost(FlashError):
    pass


class VerifyFailed(FlashError):
    pass


class _ReceivedBytes:
    """What the RFC 2217 client's reader thread fills, one byte per put(): a bytearray behind
    a lock instead of pyserial's Queue of one-byte items, whose put/get per byte was most of the
    CPU of reading flash with several units at once."""

    def __init__(self):
        self._data = bytearray()
        self._closed = False
        self._ready = threading.Condition()

    def put(self, item):
        with self._ready:
            if item is None:  # the connection ended
                self._closed = True
            else:
                self._data += item
            self._ready.notify()

    def qsize(self):
        return len(self._data)

    def get(self, block=True, timeout=None):
        return self.take(1, timeout if block else 0) or _raise_empty()

    def take(self, size, timeout):
        """Up to `size` bytes, waiting up to `timeout` s (None: for ever) for the first."""
        with self._ready:
            self._ready.wait_for(lambda: self._data or self._closed, timeout)
            out = bytes(self._data[:size])
            del self._data[:size]
            return out


def _raise_empty():
    raise queue.Empty


class _Rfc2217Port(serial.rfc2217.Serial):
    """pyserial's RFC 2217 client renegotiates every line setting, sleeping for the acks, on any
    timeout change, and esptool changes the timeout for every command (~0.2 s each). Only a
    change of the line settings themselves is sent here. Received bytes are kept in a
    _ReceivedBytes and read() takes them in slices."""

    _negotiated = None

    @property
    def _read_buffer(self):
        return self.__received

    @_read_buffer.setter
    def _read_buffer(self, _queue):  # pyserial makes a Queue on open(): keep ours instead
        self.__received = _ReceivedBytes() if _queue is not None else None

    def read(self, size=1):
        if not self.is_open:
            raise serial.PortNotOpenError()
        data = bytearray()
        timeout = serial.Timeout(self._timeout)
        while len(data) < size:
            if self._thread is None or not self._thread.is_alive():
                if not self._read_buffer.qsize():
                    raise serial.SerialException("connection failed (reader thread died)")
            chunk = self._read_buffer.take(size - len(data), timeout.time_left())
            data += chunk
            if not chunk or timeout.expired():
                break
        return bytes(data)

    def _reconfigure_port(self):
        settings = (
            self._baudrate,
            self._bytesize,
            self._parity,
            self._stopbits,
            self._rtscts,
            self._xonxoff,
        )
        if settings != self._negotiated:
            super()._reconfigure_port()
            self._negotiated = settings

    def close(self):
        self._negotiated = None
        super().close()


def _open_port(port):
    """The port esptool should use: a URL or device name, or an opened RFC 2217 client."""
    if not port.startswith("rfc2217://"):
        return port
    try:
        return _Rfc2217Port(port)
    except (serial.SerialException, OSError) as e:
        raise NoSerialPort(
            f"cannot open {port}: {e}. Check the URL and that the serial "
            "server for the unit is running."
        ) from None


def chip_name(chip_id):
    """The chip an ESP image header's chip id stands for ("ESP32-S2", ...)."""
    for cls in CHIP_DEFS.values():
        if cls.IMAGE_CHIP_ID == chip_id:
            return cls.CHIP_NAME
    return f"an unknown chip (id {chip_id})"


def check_firmware(firmware, name="the firmware", chip=EXPECTED_CHIP):
    """Refuse a .bin that is not an ESP image built for `chip`."""
    if len(firmware) < 24 or firmware[0] != _IMAGE_MAGIC:
        raise WrongChip(
            f"{name} is not an ESP firmware image (it must start with byte 0xE9): "
            f"use the MicroPython .bin for {chip}, not an .elf, .uf2 or .zip"
        )
    built_for = chip_name(_IMAGE_CHIP_ID.unpack_from(firmware, _IMAGE_CHIP_ID_AT)[0])
    if built_for != chip:
        raise WrongChip(
            f"{name} is built for {built_for}, but this unit is an {chip}: "
            f"download the {chip} build of MicroPython"
        )


def check_fits(regions, flash_size):
    """Refuse (offset, data) regions that overlap or pass the end of a `flash_size` flash."""
    end_of_previous, previous = 0, None
    for offset, data in sorted(regions, key=lambda r: r[0]):
        end = offset + len(data)
        if offset < end_of_previous:
            raise DoesNotFit(
                f"{len(data)} bytes at 0x{offset:x} overlap the image at "
                f"0x{previous:x}, which ends at 0x{end_of_previous:x}: the .bin "
                "is too big for this partition layout (4 MiB ESP32 build)"
            )
        if end > flash_size:
            raise DoesNotFit(
                f"{len(data)} bytes at 0x{offset:x} end at 0x{end:x}, past the "
                f"end of this unit's {flash_size // 1048576} MiB flash: use a "
                "build made for this flash size"
            )
        end_of_previous, previous = end, offset


class Unit:
    """A unit in download mode with esptool's flasher stub running on it."""

    def __init__(self, port, esp):
        self.port = port
        self.esp = esp
        self.bytes_sent = 0  # bytes written to the serial link for flash data

    @property
    def mac(self):
        return bytes(self.esp.read_mac())

    @property
    def flash_size(self):
        """Bytes, from the flash chip's JEDEC id (its capacity byte is log2 of the size)."""
        return 1 << ((self.esp.flash_id() >> 16) & 0xFF)

    def check_fits(self, regions):
        check_fits(regions, self.flash_size)

    def write(self, offset, data, on_progress=None):
        """Write `data` at `offset` compressed, block by block, then check the flash's MD5.

        on_progress(done, total) is called with uncompressed bytes as blocks land.
        """
        packed = zlib.compress(data, _COMPRESS_LEVEL)
        block_size = self.esp.FLASH_WRITE_SIZE
        blocks = self._call(
            "start the write", self.esp.flash_defl_begin, len(data), len(packed), offset
        )
        inflate = zlib.decompressobj()
        done = 0
        for seq in range(blocks):
            block = packed[seq * block_size : (seq + 1) * block_size]
            self._send_block(block, seq, offset)
            self.bytes_sent += len(block)
            done += len(inflate.decompress(block))
            if on_progress:
                on_progress(done, len(data))
        # The stub acknowledges a block before writing it; its answer to the end of the write
        # comes once the last block is in flash, so the MD5 below sees all of it.
        self._call("finish the write", self.esp.flash_defl_finish, False)
        self.verify(offset, data)

    def _send_block(self, block, seq, offset):
        for attempt in range(1, _BLOCK_ATTEMPTS + 1):
            try:
                self.esp.flash_defl_block(block, seq)
                return
            except (FatalError, serial.SerialException, OSError) as e:
                if attempt == _BLOCK_ATTEMPTS:
                    raise LinkLost(
                        f"the serial link to {self.port} dropped while writing block {seq} at "
                        f"0x{offset:x} ({e}); the block was sent {attempt} times. Check the "
                        "USB cable and hub, then run the command again for this unit"
                    ) from None

    def verify(self, offset, data):
        got = self._call("check the MD5", self.esp.flash_md5sum, offset, len(data))
        want = hashlib.md5(data).hexdigest()
        if got != want:
            raise VerifyFailed(
                f"the flash at 0x{offset:x} reads back with MD5 {got}, not "
                f"{want}: the write was corrupted; run the command again, and "
                "replace the unit if it fails twice"
            )

    def read(self, offset, length):
        return self._call("read the flash", self.esp.read_flash, offset, length)

    def partitions(self):
        """The partition table on the unit: {label: (type, subtype, offset, size)}."""
        return layout.read_partitions(self.read(layout.PARTITION_TABLE_OFFSET, 0xC00))

    def filesystem(self, offset=VFS_OFFSET, size=VFS_SIZE):
        """The LittleFS in the vfs partition, read block by block only as files are opened."""
        return LittleFS(
            context=_RemoteBlocks(self, offset),
            block_size=layout.SECTOR,
            block_count=size // layout.SECTOR,
            read_size=16,
            prog_size=16,
            cache_size=_READ_CHUNK,
            lookahead_size=16,
        )

    def hard_reset(self):
        """Leave download mode and boot what is in the flash."""
        self._call("reset the unit", self.esp.hard_reset)

    def _call(self, what, fn, *args):
        try:
            return fn(*args)
        except (FatalError, serial.SerialException, OSError) as e:
            raise LinkLost(
                f"could not {what} on {self.port}: {e}. Check the USB cable, then "
                "run the command again for this unit"
            ) from None


class _RemoteBlocks(UserContext):
    """LittleFS read from the unit's flash on demand, in small chunks: mounting walks every
    directory's metadata, but only the start of each block holds any."""

    def __init__(self, unit, offset):
        super().__init__(buffsize=0)
        self._unit, self._offset, self._chunks = unit, offset, {}

    def read(self, cfg, block, off, size):
        start = block * cfg.block_size + off
        out = bytearray()
        for chunk in range(start // _READ_CHUNK, (start + size - 1) // _READ_CHUNK + 1):
            if chunk not in self._chunks:
                self._chunks[chunk] = self._unit.read(
                    self._offset + chunk * _READ_CHUNK, _READ_CHUNK
                )
            out += self._chunks[chunk]
        skip = start % _READ_CHUNK
        return out[skip : skip + size]

    def prog(self, cfg, block, off, data):
        raise OSError("the unit's filesystem is read here, never written")

    def erase(self, cfg, block):
        raise OSError("the unit's filesystem is read here, never written")


@contextlib.contextmanager
def open_unit(port, chip=EXPECTED_CHIP, baud=FAST_BAUD):
    """Reset the unit on `port` into download mode and yield it as a `Unit`; close the port after.

    esptool's own output is silenced: the caller reports progress.
    """
    esptool_log.set_verbosity("silent")
    esp = None
    try:
        try:
            esp = detect_chip(_open_port(port), connect_attempts=_CONNECT_ATTEMPTS)
        except FatalError as e:
            raise _connect_error(port, str(e)) from None
        except serial.SerialException as e:
            raise NoSerialPort(
                f"cannot open {port}: {e}. Plug the unit in, check the port name "
                "(`qrfleet provision --all` finds Espressif USB serial ports)"
            ) from None
        if esp.CHIP_NAME != chip:
            raise WrongChip(
                f"the unit on {port} is an {esp.CHIP_NAME}, not an {chip}: "
                f"qrfleet units are {chip} boards; set this one aside"
            )
        esp = esp.run_stub()
        if not port.startswith("rfc2217://"):  # a network port has no line speed to raise
            esp.change_baud(baud)
        yield Unit(port, esp)
    finally:
        if esp is not None:
            esp._port.close()


def _connect_error(port, message):
    if "could not open" in message.lower() or "doesn't exist" in message:
        return NoSerialPort(
            f"no serial port {port}: plug the unit in and check the port name "
            "(`qrfleet provision --all` finds Espressif USB serial ports)"
        )
    return NotInDownloadMode(
        f"the unit on {port} did not enter download mode ({message.splitlines()[0]}). Hold "
        "BOOT, press and release EN, release BOOT, then run the command again; if it still "
        "fails, use a data (not charge-only) USB cable"
    )


def flash_firmware(port, firmware, vfs_image, on_progress=None, chip=EXPECTED_CHIP):
    """`qrfleet flash`: check, write and verify the MicroPython .bin and the filesystem, reset.

    on_progress(stage, done, total) with stage "firmware" or "filesystem". Returns the MAC.
    """
    check_firmware(firmware, chip=chip)
    regions = [(FIRMWARE_OFFSET, firmware), (VFS_OFFSET, vfs_image)]
    with open_unit(port, chip) as unit:
        unit.check_fits(regions)
        mac = unit.mac
        for stage, (offset, data) in zip(("firmware", "filesystem"), regions, strict=True):
            unit.write(offset, data, _stage(on_progress, stage))
        unit.hard_reset()
        return mac


def _stage(on_progress, stage):
    if on_progress is None:
        return None
    return lambda done, total: on_progress(stage, done, total)
