"""What an ESP32 does between a reset and MicroPython, on the board's flash.

The ROM loads the second-stage bootloader from 0x1000 (and prints "invalid header" when no
ESP image is there); the bootloader reads the partition table at 0x8000, picks the app with
the OTA data (tools/partitions.select_boot: rollback included, its OTA data writes applied
here), checks the app's image and runs it, or logs why none is bootable and resets. Log
lines are those of MicroPython's builds: the bootloader logs at WARN level, so only its
errors appear. This is the one place that reads the OTA data at a reset.

`start(flash)` works on any object with `size`, `read(offset, length)`, `write(offset, data)`
and `erase(offset, length)`, such as the board's `flash.FlashImage`; it returns a `Startup`
with the serial output and the app to run, or none (the chip resets and tries again).
"""

import struct
import time

from tools import esp_image, partitions
from tools.vboard.chip import ROM_BANNER

_BOOTLOADER_MAX = partitions.TABLE_OFFSET - partitions.BOOTLOADER_OFFSET
_INVALID_HEADER_LINES = 8  # per cycle, before the RTC watchdog resets the chip
_ROM_DONE_MS = 30  # the bootloader's log clock starts about here

_FLASH_BOOT = "0x13 (SPI_FAST_FLASH_BOOT)"
# The reset each failure ends in (ROM register values and names as the ROM prints them).
RTC_WATCHDOG_RESET = "0x10 (RTCWDT_RTC_RESET)"
SOFTWARE_RESET = "0x3 (SW_RESET)"

VERSION = "v1.29.0"  # the MicroPython the Unix port runs, for images that name no version
BUILD_DATE = "2026-07-05"
_BOARD_NAMES = ("Generic ESP32 module", "Generic ESP32 module with OTA")
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


class Startup:
    """What one reset came to: the serial output, then either an app partition to run (with
    the partition table, its checked image and the banner MicroPython prints) or
    `retry_reset`, the reset the chip goes through before trying again."""

    def __init__(self, output, app=None, table=None, image=None, banner=None, retry_reset=None):
        self.output = output
        self.app = app
        self.table = table
        self.image = image
        self.banner = banner
        self.retry_reset = retry_reset


def start(flash, now_ms=None):
    started = time.monotonic()
    clock = now_ms or (lambda: _ROM_DONE_MS + int((time.monotonic() - started) * 1000))
    out = []

    def error(tag, message):
        out.append(f"E ({clock()}) {tag}: {message}\r\n")

    loader = flash.read(partitions.BOOTLOADER_OFFSET, _BOOTLOADER_MAX)
    if loader[0] != esp_image.MAGIC:
        word = struct.unpack_from("<I", loader)[0]
        out.append(f"invalid header: 0x{word:08x}\r\n" * _INVALID_HEADER_LINES)
        return Startup("".join(out), retry_reset=RTC_WATCHDOG_RESET)
    out.append(_rom_loading(loader))
    table = _read_table(flash, error)
    if table is None:
        return Startup("".join(out), retry_reset=SOFTWARE_RESET)
    otadata = _otadata(flash, table)
    boot = partitions.select_boot(table, otadata and flash.read(otadata.offset, otadata.size))
    _write_ota(flash, otadata, boot.writes)
    for candidate in boot.candidates:
        try:
            image = esp_image.check(_read_partition(flash, candidate), candidate.offset)
        except esp_image.ImageError as e:
            error("esp_image", str(e))
            error("boot", f"{_app_name(candidate)} is not bootable")
            continue
        if candidate is boot.candidates[0]:
            _write_ota(flash, otadata, boot.on_first_boot)
        return Startup("".join(out), candidate, table, image, banner(image, table))
    error("boot", "No bootable app partitions in the partition table")
    return Startup("".join(out), retry_reset=SOFTWARE_RESET)


def rom_banner(reset, download=False):
    """The ROM's first lines after a reset, from flash or (GPIO0 held low) for download."""
    boot = "0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))" if download else _FLASH_BOOT
    return ROM_BANNER.format(rst=reset, boot=boot)


def banner(image, table):
    """MicroPython's first banner line: the image's own version where its app descriptor
    names one, and the board name of the build that carries this partition table."""
    version, date = VERSION, BUILD_DATE
    if image.version:
        version = image.version.decode(errors="replace")
        date = _iso_date(image.date) or date
    ota = bool(partitions.find(table, partitions.TYPE_DATA, partitions.SUBTYPE_OTA_DATA))
    return f"MicroPython {version} on {date}; {_BOARD_NAMES[ota]} with ESP32"


def _iso_date(compiled):
    """__DATE__ ("Aug  9 2025") as MicroPython's build date ("2025-08-09"), or None."""
    words = compiled.decode(errors="replace").split()
    if len(words) != 3 or words[0] not in _MONTHS or not (words[1] + words[2]).isdigit():
        return None
    return f"{words[2]}-{_MONTHS.index(words[0]) + 1:02d}-{int(words[1]):02d}"


def _rom_loading(loader):
    """What the ROM prints while it loads the bootloader: flash settings, then its segments."""
    header = esp_image.Header(loader)
    mode = esp_image.SPI_MODES.get(header.spi_mode, str(header.spi_mode))
    divider = esp_image.CLOCK_DIVIDERS.get(header.size_speed & 0x0F, 2)
    lines = [
        "configsip: 0, SPIWP:0xee\r\n",
        "clk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00\r\n",
        f"mode:{mode}, clock div:{divider}\r\n",
    ]
    for n, (address, length) in enumerate(esp_image.segments(loader)):
        lines.append(f"load:0x{address:08x},len:{length}\r\n")
        if n == 0:
            lines.append("ho 0 tail 12 room 4\r\n")
    lines.append(f"entry 0x{header.entry:08x}\r\n")
    return "".join(lines)


def _read_table(flash, error):
    """The partitions, or None after logging why the bootloader cannot use the table."""
    data = flash.read(partitions.TABLE_OFFSET, partitions.TABLE_SIZE)
    if data[:2] == b"\xff\xff":
        return []  # an erased table is a valid, empty one
    try:
        return partitions.parse_table(data)
    except partitions.LayoutError:
        if data[:2] == b"\xaa\x50":
            error("flash_parts", "Incorrect MD5 checksum")
        else:
            magic = struct.unpack_from("<H", data)[0]
            error("flash_parts", f"partition 0 invalid magic number 0x{magic:x}")
        error("boot", "Failed to verify partition table")
        error("boot", "load partition table error!")
        return None


def _read_partition(flash, partition):
    """The partition's bytes, cut where the flash ends (a table may describe a bigger chip)."""
    length = max(0, min(partition.size, flash.size - partition.offset))
    return flash.read(partition.offset, length) if length else b""


def _otadata(flash, table):
    found = partitions.find(table, partitions.TYPE_DATA, partitions.SUBTYPE_OTA_DATA)
    if not found or found[0].size < 2 * partitions.SECTOR or found[0].end > flash.size:
        return None
    return found[0]


def _write_ota(flash, otadata, writes):
    """Each write erases its entry's sector, then writes the 32-byte entry."""
    for index, entry in writes:
        at = otadata.offset + index * partitions.SECTOR
        flash.erase(at, partitions.SECTOR)
        flash.write(at, entry)


def _app_name(partition):
    if partition.subtype == partitions.SUBTYPE_FACTORY:
        return "Factory app partition"
    return f"OTA app partition slot {partition.subtype - partitions.SUBTYPE_OTA_0}"
