"""Write MicroPython and a unit's filesystem to an ESP32 over its serial port.

esptool is the protocol layer (reset into download mode, chip detection, the flasher stub,
compressed block writes, MD5); this module decides what is safe to write and says so in words a
technician can act on. `qrfleet flash` and `qrfleet provision` are built on it.

    table = check_firmware(firmware)             # the .bin's own partition table
    with open_unit("/dev/ttyUSB0") as unit:      # or rfc2217://HOST:PORT
        vfs = filesystem_partition(table, unit.flash_size, "the firmware")
        unit.write(FIRMWARE_OFFSET, firmware, on_progress)   # verified by MD5
        unit.write_filesystem(vfs.offset, littlefs_image(files, vfs.size), on_progress)
        unit.hard_reset()

A MicroPython build for ESP32 is one `.bin` (bootloader, partition table at 0x8000, app)
written at 0x1000. The filesystem (LittleFS2, 4096-byte blocks) goes where MicroPython mounts
it: the table's `vfs` partition (builds before 1.26), else the flash from the end of the last
partition to the end of the flash the unit reports (1.26 and newer, ports/esp32/main.c).
MicroPython refuses a LittleFS whose block count differs from its partition's, so the image
is built for exactly that partition, and only its sectors that hold data cross the link.

Exceptions, each with a message that says what to do:

    FlashError
     +-- NoSerialPort        the port does not exist or cannot be opened
     +-- NotInDownloadMode   the unit did not answer the bootloader's sync
     +-- WrongChip           the unit, or the .bin, is for another chip
     +-- BadFirmware         the .bin is not a whole MicroPython build, or is damaged
     +-- NoPartitionTable    the unit's flash holds no partition table: MicroPython is not on it
     +-- DoesNotFit          images overlap, pass the end of the flash, or leave no filesystem
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

from tools import esp_image, partitions
from tools.image import littlefs_image

FIRMWARE_OFFSET = partitions.BOOTLOADER_OFFSET
EXPECTED_CHIP = "ESP32"
FAST_BAUD = 460800  # what CP210x/CH340 bridges on dev boards sustain
_CONNECT_ATTEMPTS = 3
_BLOCK_ATTEMPTS = 2  # a block is sent again once after a lost answer, then the unit fails
_COMPRESS_LEVEL = 9
_READ_CHUNK = 256  # reads cost by the byte: serial time, or pyserial RFC 2217 per-byte queueing
_IMAGE_MAGIC = 0xE9
_IMAGE_CHIP_ID = struct.Struct("<H")  # bytes 12-13 of an ESP image: the chip it was built for
_IMAGE_CHIP_ID_AT = 12
_BLANK_SECTOR = b"\xff" * partitions.SECTOR


class FlashError(Exception):
    """A unit could not be flashed; the message says why and what to do."""


class NoSerialPort(FlashError):
    pass


class NotInDownloadMode(FlashError):
    pass


class WrongChip(FlashError):
    pass


class BadFirmware(FlashError):
    pass


class NoPartitionTable(FlashError):
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


# How a port another program holds refuses a second user: pyserial's lock on Linux and macOS,
# and Windows' one user per port.
_IN_USE = ("exclusively lock", "access is denied", "resource busy")
_HELD = (
    "Another program holds the port: stop it first (`qrfleet bridge`, as a service "
    "`systemctl --user stop qrfleet-bridge`; mpremote; a serial terminal)"
)
# A serial server that cannot be reached, as against one that took the connection and then
# dropped it or would not negotiate (a virtual board's drops a second client).
_UNREACHABLE = ("refused", "timed out", "no route", "name or service", "nodename")


def _cannot_open(port, error, advice):
    """NoSerialPort for a port that would not open: `advice`, or, when another program holds
    it, what to stop (a bridge running as a service holds its units' ports for good)."""
    if any(sign in error.lower() for sign in _IN_USE):
        advice = _HELD
    return NoSerialPort(f"cannot open {port}: {error}. {advice}")


def _open_port(port):
    """The port esptool should use: a URL or device name, or an opened RFC 2217 client."""
    if not port.startswith("rfc2217://"):
        return port
    try:
        return _Rfc2217Port(port)
    except (serial.SerialException, OSError) as e:
        error = str(e) or type(e).__name__
        if any(sign in error.lower() for sign in _UNREACHABLE):
            advice = "Check the URL and that the serial server for the unit is running."
        else:
            advice = f"{_HELD}, or the URL is not the unit's serial server"
        raise _cannot_open(port, error, advice) from None


def chip_name(chip_id):
    """The chip an ESP image header's chip id stands for ("ESP32-S2", ...)."""
    for cls in CHIP_DEFS.values():
        if cls.IMAGE_CHIP_ID == chip_id:
            return cls.CHIP_NAME
    return f"an unknown chip (id {chip_id})"


def check_firmware(firmware, name="the firmware", chip=EXPECTED_CHIP):
    """Refuse a .bin that is not a whole MicroPython build for `chip` to write at 0x1000, or
    whose bootloader or app a unit would refuse to boot; return its partition table."""
    _check_chip(firmware, name, chip)
    at = partitions.TABLE_OFFSET - FIRMWARE_OFFSET
    try:
        table = partitions.parse_table(firmware[at : at + partitions.TABLE_SIZE])
    except partitions.LayoutError:
        raise BadFirmware(
            f"{name} holds no usable partition table at 0x{partitions.TABLE_OFFSET:x}: use "
            "the MicroPython .bin that is written at 0x1000 (bootloader, partition table and "
            "app in one file), not an app-only image"
        ) from None
    apps = partitions.find(table, partitions.TYPE_APP)
    if not apps:
        raise BadFirmware(f"the partition table of {name} has no app partition to boot")
    app = apps[0]
    if FIRMWARE_OFFSET + len(firmware) > app.end:
        raise DoesNotFit(
            f"{name} runs to 0x{FIRMWARE_OFFSET + len(firmware):x}, past the end of its "
            f"`{app.label}` partition at 0x{app.end:x}: the .bin is bigger than its own "
            "partition table leaves room for"
        )
    for what, start, end in (
        ("bootloader", FIRMWARE_OFFSET, partitions.TABLE_OFFSET),
        ("app", app.offset, app.end),
    ):
        try:
            esp_image.check(firmware[start - FIRMWARE_OFFSET : end - FIRMWARE_OFFSET], start)
        except esp_image.ImageError as e:
            raise BadFirmware(
                f"{name} is cut short or damaged: its {what} fails the bootloader's check "
                f"({e}); download the .bin again"
            ) from None
    return table


def _check_chip(firmware, name, chip):
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
                "is bigger than its own partition table leaves room for"
            )
        if end > flash_size:
            raise DoesNotFit(
                f"{len(data)} bytes at 0x{offset:x} end at 0x{end:x}, past the "
                f"end of this unit's {flash_size // 1048576} MiB flash: use a "
                "build made for this flash size"
            )
        end_of_previous, previous = end, offset


def filesystem_partition(table, flash_size, source):
    """The partition MicroPython mounts on a unit with this table and `flash_size` bytes of
    flash; DoesNotFit when the table passes the end of the flash or leaves no room for it.
    `source` names where the table comes from, for the message."""
    try:
        partitions.check_fits(table, flash_size)
    except partitions.LayoutError as e:
        raise DoesNotFit(
            f"the partition table of {source} does not fit: {e}; use a build made for "
            "this flash size"
        ) from None
    vfs = partitions.vfs_partition(table, flash_size)
    if vfs is None:
        raise DoesNotFit(
            f"the partition table of {source} fills the unit's {flash_size >> 20} MiB flash "
            "and leaves no room for a filesystem: use a unit with more flash, or a build "
            "whose table leaves room"
        )
    if vfs.label != "vfs":
        raise DoesNotFit(
            f"the partition table of {source} has a FAT `{vfs.label}` partition (TinyUF2 "
            "layout) and no `vfs`: qrfleet puts LittleFS in `vfs`; use a MicroPython build "
            "without TinyUF2"
        )
    return vfs


def _written_runs(fs_image):
    """[(offset, bytes)] of the image's runs of sectors that are not erased (all 0xFF)."""
    runs = []
    for at in range(0, len(fs_image), partitions.SECTOR):
        sector = fs_image[at : at + partitions.SECTOR]
        if sector == _BLANK_SECTOR:
            continue
        if runs and runs[-1][0] + len(runs[-1][1]) == at:
            runs[-1][1].extend(sector)
        else:
            runs.append((at, bytearray(sector)))
    return [(at, bytes(data)) for at, data in runs]


class _Progress:
    """Uncompressed bytes landed so far, reported as on_progress(done, total)."""

    def __init__(self, total, on_progress):
        self.total, self.done, self._on_progress = total, 0, on_progress

    def add(self, count):
        self.done += count
        if self._on_progress:
            self._on_progress(self.done, self.total)


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
        self._send(offset, data, _Progress(len(data), on_progress).add)
        self.verify(offset, data)

    def write_filesystem(self, offset, fs_image, on_progress=None):
        """Write a filesystem image over its whole partition at `offset` without sending its
        blank sectors: erase the partition (one command), write only the runs of sectors that
        hold data, then check the MD5 of the whole partition. A filesystem of 14 MiB then costs
        the link what one of 2 MiB does.

        on_progress(done, total) counts the bytes of those runs.
        """
        runs = _written_runs(fs_image)
        progress = _Progress(sum(len(data) for _, data in runs), on_progress)
        progress.add(0)  # the erase takes a while on a large partition: show the bar already
        self._call("erase the filesystem partition", self.esp.erase_region, offset, len(fs_image))
        for at, data in runs:
            self._send(offset + at, data, progress.add)
        self.verify(offset, fs_image)

    def _send(self, offset, data, landed):
        """Compressed blocks as esptool sends them; landed(n) as n more bytes are in flash."""
        packed = zlib.compress(data, _COMPRESS_LEVEL)
        block_size = self.esp.FLASH_WRITE_SIZE
        blocks = self._call(
            "start the write", self.esp.flash_defl_begin, len(data), len(packed), offset
        )
        inflate = zlib.decompressobj()
        for seq in range(blocks):
            block = packed[seq * block_size : (seq + 1) * block_size]
            self._send_block(block, seq, offset)
            self.bytes_sent += len(block)
            landed(len(inflate.decompress(block)))
        # The stub acknowledges a block before writing it; its answer to the end of the write
        # comes once the last block is in flash, so an MD5 after it sees all of it.
        self._call("finish the write", self.esp.flash_defl_finish, False)

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
        """The partition table on the unit, in table order (tools.partitions.Partition)."""
        try:
            return partitions.parse_table(self.read(partitions.TABLE_OFFSET, partitions.TABLE_SIZE))
        except partitions.LayoutError as e:
            raise NoPartitionTable(
                f"the unit on {self.port}: {e}. To flash it: qrfleet flash --port {self.port} "
                "--firmware micropython.bin"
            ) from None

    def vfs_partition(self):
        """Where MicroPython on this unit mounts its filesystem (see filesystem_partition)."""
        return filesystem_partition(self.partitions(), self.flash_size, f"the unit on {self.port}")

    def filesystem(self, vfs):
        """The LittleFS in the partition `vfs`, read block by block only as files are opened."""
        return LittleFS(
            context=_RemoteBlocks(self, vfs.offset),
            block_size=partitions.SECTOR,
            block_count=vfs.size // partitions.SECTOR,
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
                f"the serial link to {self.port} failed as the tool tried to {what} ({e}). "
                "Check the USB cable, then run the command again for this unit"
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
            raise _cannot_open(port, str(e), _PLUG_IN) from None
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


_PLUG_IN = (
    "Plug the unit in and check the port name "
    "(`qrfleet provision --all` finds Espressif USB serial ports)"
)


def _connect_error(port, message):
    if "could not open" in message.lower() or "doesn't exist" in message:
        # esptool: "Could not open PORT, the port is busy or doesn't exist.", then pyserial's
        # reason in brackets on a line of its own, which tells the two apart.
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        reason = lines[1][1:-1] if len(lines) > 1 and lines[1].startswith("(") else lines[0]
        return _cannot_open(port, reason, _PLUG_IN)
    return NotInDownloadMode(
        f"the unit on {port} did not enter download mode ({message.splitlines()[0]}). Hold "
        "BOOT, press and release EN, release BOOT, then run the command again; if it still "
        "fails, use a data (not charge-only) USB cable"
    )


def flash_firmware(port, firmware, files, on_progress=None, chip=EXPECTED_CHIP):
    """`qrfleet flash`: check the MicroPython .bin, write it and a filesystem holding `files`
    ({path: bytes}) where MicroPython on this unit will mount it, verify both, reset.

    on_progress(stage, done, total) with stage "firmware" or "filesystem". Returns the MAC.
    """
    table = check_firmware(firmware, chip=chip)
    with open_unit(port, chip) as unit:
        vfs = filesystem_partition(table, unit.flash_size, "the firmware")
        fs_image = littlefs_image(files, vfs.size)
        unit.check_fits([(FIRMWARE_OFFSET, firmware), (vfs.offset, fs_image)])
        mac = unit.mac
        unit.write(FIRMWARE_OFFSET, firmware, _stage(on_progress, "firmware"))
        unit.write_filesystem(vfs.offset, fs_image, _stage(on_progress, "filesystem"))
        unit.hard_reset()
        return mac


def _stage(on_progress, stage):
    if on_progress is None:
        return None
    return lambda done, total: on_progress(stage, done, total)
