"""The panels wired to virtual boards: controller, glass and wiring, behind the real buses.

A board's hardware, not the firmware's config, decides which panel sits on which pins. BOARDS
is written from the boards' own wiring (their schematics and vendor pin maps), independently
of firmware/display/profiles.py, so a wrong pin, bus or offset in a profile shows up as a
black or wrong screen:

    ssd1306-i2c      ESP32 DevKit + 0.96" SSD1306 module, I2C on SDA 21 / SCL 22, address 0x3C
    ssd1306-spi      ESP32 DevKit + the 7-pin SPI version of that module
    ttgo-t-display   LilyGO TTGO T-Display: ST7789, 135x240 IPS glass at RAM (52, 40)
    st7789-240       ESP32 DevKit + 1.3" ST7789 240x240 IPS module without CS (SPI mode 3)
    esp32-2432s028   "cheap yellow display": ILI9341, 240x320 glass mounted landscape,
                     RST tied to EN

The port layer (tools/vboard/port/machine.py) sends what the ESP32's pins and buses carry:
levels of the wired pins, SPI bytes with the clock and mode they went out at, I2C transfers to
an address that acknowledges. `Panel` plays the PCB: it hands bytes to the controller only
when the signals would get them there (the right pins, CS low, RST high, a clock and SPI mode
the controller latches), and renders what the glass shows as mounted in the board's case.

The controllers follow their datasheets (SSD1306 rev 1.1, ST7789V v1.6, ILI9341 v1.11): the
panel keeps its own memory (noise at power-on: a driver must clear it before showing it),
commands take effect once all their parameter bytes arrived, pixels land in RAM whether or not
the display is on. Where a real controller would do something other than what the driver
meant, the panel does it too and also says so on the board's serial port, once per reset, as a
line starting `panel: ` (a short parameter list, pixels in the reset colour format, a window
beyond RAM, a write while CS is high, a command the model does not know, ...).

DCS address mapping (ST7789V 8.12 "Address control", ILI9341 9.3): the host writes a window
of columns (CASET) by rows (RASET), column first. MV exchanges the two, so CASET then counts
RAM rows; after that MX mirrors RAM columns (the 240 direction) and MY RAM rows (the 320).

Colour truth: a colour panel's glass shows RAM colours as they are when the controller's
inversion state matches how the glass is made. The ST7789 modules here are IPS ("normally
black"): they show true colours with INVON, and inverted ones without it; the ILI9341 glass is
TN and shows true colours with INVOFF. The glass's RGB/BGR order is compared with MADCTL's BGR
bit the same way. display.pbm is the view thresholded at half brightness (dark = black);
display.png is the view in the panel's colours.
"""

import os
from dataclasses import dataclass

from PIL import Image, ImageChops

_DARK = (0, 0, 0)


@dataclass(frozen=True)
class Hardware:
    """A board with its panel: controller, bus, wiring, and where the glass sits."""

    description: str
    controller: str  # "ssd1306", "st7789" or "ili9341"
    pins: dict  # signal -> GPIO; a signal not listed is tied: CS low, RST to EN, backlight on
    glass: tuple  # (width, height, x, y): the glass's window in the controller's RAM
    i2c_address: int = None  # on I2C (pins sda/scl); otherwise SPI (pins sck/mosi)
    ips: bool = False  # glass made to be driven inverted (INVON shows true colours)
    bgr: bool = False  # glass wired B-G-R: MADCTL's BGR bit shows true colours
    columns_reversed: bool = False  # the module routes RAM column 0 to the glass's right edge
    mounting: int = 0  # the case turns the glass by this many degrees, counter-clockwise

    @property
    def i2c(self):
        return self.i2c_address is not None


BOARDS = {
    "ssd1306-i2c": Hardware(
        "ESP32 DevKit with a 0.96in SSD1306 OLED module on I2C",
        "ssd1306",
        {"sda": 21, "scl": 22},
        (128, 64, 0, 0),
        i2c_address=0x3C,
        mounting=180,  # header pins at the top: SEG0 and COM0 at the bottom right
    ),
    "ssd1306-spi": Hardware(
        "ESP32 DevKit with a 0.96in SSD1306 OLED module on SPI",
        "ssd1306",
        {"sck": 18, "mosi": 23, "dc": 16, "rst": 17, "cs": 5},
        (128, 64, 0, 0),
        mounting=180,
    ),
    "ttgo-t-display": Hardware(
        "LilyGO TTGO T-Display (ST7789, 1.14in IPS 135x240)",
        "st7789",
        {"sck": 18, "mosi": 19, "dc": 16, "cs": 5, "rst": 23, "bl": 4},
        (135, 240, 52, 40),
        ips=True,
    ),
    "st7789-240": Hardware(
        "ESP32 DevKit with a 1.3in ST7789 240x240 IPS module without CS",
        "st7789",
        {"sck": 18, "mosi": 23, "dc": 16, "rst": 17, "bl": 4},
        (240, 240, 0, 0),
        ips=True,
    ),
    "esp32-2432s028": Hardware(
        "ESP32-2432S028 (ILI9341, 2.8in 240x320, mounted landscape)",
        "ili9341",
        {"sck": 14, "mosi": 13, "dc": 2, "cs": 15, "bl": 21},
        (240, 320, 0, 0),
        bgr=True,
        columns_reversed=True,
        mounting=90,
    ),
}

# A signal's level while the ESP32 does not drive its pin (after a chip reset): the modules'
# pull-ups hold RST and CS high, the backlight transistor is off.
_UNDRIVEN = {"dc": 0, "cs": 1, "rst": 1, "bl": 0}


class UnknownBoard(ValueError):
    pass


def hardware(name):
    if name not in BOARDS:
        raise UnknownBoard(
            f"no virtual board with the panel {name!r}: boards with a panel are {', '.join(BOARDS)}"
        )
    return BOARDS[name]


class Controller:
    """What the panel controllers share: warnings, once per reset, and power-on noise."""

    NAME = ""
    MAX_SPI_HZ = 0  # fastest serial write clock the datasheet allows

    def __init__(self, warn):
        self._warn = warn
        self._warned = set()

    def warn(self, text):
        if text not in self._warned:
            self._warned.add(text)
            self._warn(text)

    def reset(self):
        """RST low, or SWRESET: registers to their reset values; the memory keeps its content."""
        self._warned.clear()

    def receive(self, is_data, data):
        raise NotImplementedError

    def picture(self, hw):
        """What the glass shows (RGB, as the controller scans it), or None when it is dark."""
        raise NotImplementedError


# ---- SSD1306 (datasheet rev 1.1, section 9 command table, section 10 command descriptions)

_SSD1306_COLUMNS = 128
_SSD1306_PAGES = 8
_SSD1306_ROWS = 64
# Commands with parameters -> their parameter count. Parameters come as command bytes too.
_SSD1306_PARAMS = {
    0x20: 1,  # memory addressing mode
    0x21: 2,  # column window
    0x22: 2,  # page window
    0x26: 6,  # horizontal scroll setup (right, left)
    0x27: 6,
    0x29: 5,  # vertical and horizontal scroll setup
    0x2A: 5,
    0x81: 1,  # contrast
    0x8D: 1,  # charge pump
    0xA3: 2,  # vertical scroll area
    0xA8: 1,  # multiplex ratio
    0xD3: 1,  # display offset
    0xD5: 1,  # clock divide / oscillator
    0xD9: 1,  # precharge period
    0xDA: 1,  # COM pins hardware configuration
    0xDB: 1,  # VCOMH deselect level
}
# Single-byte commands with no effect on what the glass shows here.
_SSD1306_SILENT = {0x2E, 0xE3}  # deactivate scroll (the reset state), NOP
_HORIZONTAL, _VERTICAL, _PAGE = 0, 1, 2
_COM_PINS_OF_THE_MODULE = 0x12  # 128x64 modules route the glass's rows for the alternative mode


class SSD1306(Controller):
    NAME = "SSD1306"
    MAX_SPI_HZ = 10_000_000  # serial clock cycle time 100 ns (8.1.3)

    def __init__(self, warn):
        super().__init__(warn)
        self.gddram = bytearray(os.urandom(_SSD1306_COLUMNS * _SSD1306_PAGES))
        self._command = None
        self._params = bytearray()
        self.reset()

    def reset(self):
        super().reset()
        self._command = None
        self._params = bytearray()
        self.display_on = False
        self.inverse = False
        self.entire_on = False
        self.charge_pump = False
        self.mux = 63
        self.offset = 0
        self.start_line = 0
        self.segment_remap = False
        self.com_remap = False
        self.com_pins = 0x12
        self.mode = _PAGE
        self.columns = (0, 127)
        self.pages = (0, 7)
        self.column = 0
        self.page = 0
        self.page_mode_column = 0

    def receive(self, is_data, data):
        if is_data:
            if self._command is not None:
                self.warn(
                    f"display data while command 0x{self._command:02x} waits for parameters "
                    "(SSD1306 parameters are command bytes)"
                )
            self._write_ram(data)
        else:
            for byte in data:
                self._command_byte(byte)

    def _command_byte(self, byte):
        if self._command is not None:
            self._params.append(byte)
            if len(self._params) == _SSD1306_PARAMS[self._command]:
                command, self._command = self._command, None
                self._apply(command, bytes(self._params))
            return
        if byte in _SSD1306_PARAMS:
            self._command = byte
            self._params = bytearray()
        else:
            self._apply(byte, b"")

    def _apply(self, cmd, p):  # noqa: C901 - one branch per datasheet command
        if cmd <= 0x0F:
            self.page_mode_column = (self.page_mode_column & 0xF0) | cmd
            self.column = self.page_mode_column
        elif cmd <= 0x1F:
            self.page_mode_column = (self.page_mode_column & 0x0F) | (cmd & 0x07) << 4
            self.column = self.page_mode_column
        elif cmd == 0x20:
            if p[0] & 3 == 3:
                self.warn(
                    f"addressing mode 0x{p[0]:02x} is invalid (0 horizontal, 1 vertical, 2 page)"
                )
            else:
                self.mode = p[0] & 3
        elif cmd == 0x21:
            self.columns = (p[0] & 0x7F, p[1] & 0x7F)
            self.column = self.columns[0]
            self._check_range("column", p, 127)
        elif cmd == 0x22:
            self.pages = (p[0] & 7, p[1] & 7)
            self.page = self.pages[0]
            self._check_range("page", p, 7)
        elif 0x40 <= cmd <= 0x7F:
            self.start_line = cmd - 0x40
        elif cmd == 0x8D:
            self.charge_pump = bool(p[0] & 0x04)
        elif cmd in (0xA0, 0xA1):
            self.segment_remap = cmd == 0xA1
        elif cmd in (0xA4, 0xA5):
            self.entire_on = cmd == 0xA5
        elif cmd in (0xA6, 0xA7):
            self.inverse = cmd == 0xA7
        elif cmd == 0xA8:
            if p[0] & 0x3F < 15:
                self.warn(f"multiplex ratio {(p[0] & 0x3F) + 1} is below the minimum of 16")
            else:
                self.mux = p[0] & 0x3F
        elif cmd in (0xAE, 0xAF):
            self.display_on = cmd == 0xAF
        elif 0xB0 <= cmd <= 0xB7:
            self.page = cmd - 0xB0
        elif cmd in (0xC0, 0xC8):
            self.com_remap = cmd == 0xC8
        elif cmd == 0xD3:
            self.offset = p[0] & 0x3F
        elif cmd == 0xDA:
            self.com_pins = p[0] & 0x32
            if self.com_pins != _COM_PINS_OF_THE_MODULE:
                self.warn(
                    f"COM pins configuration 0x{p[0]:02x} does not match the module's wiring "
                    f"(0x{_COM_PINS_OF_THE_MODULE:02x}): rows come out interleaved"
                )
        elif cmd == 0x2F:
            self.warn("scrolling (0x2f) is not modelled by the virtual SSD1306; ignored")
        elif cmd in _SSD1306_PARAMS or cmd in _SSD1306_SILENT:
            pass  # timing, voltages and scroll setup: nothing the glass shows here
        else:
            self.warn(f"0x{cmd:02x} is not an SSD1306 command; ignored")

    def _check_range(self, name, p, top):
        if p[0] > top or p[1] > top or p[0] > p[1]:
            self.warn(f"{name} window {p[0]}..{p[1]} is outside 0..{top} or reversed")

    def _write_ram(self, data):
        """Bytes into GDDRAM at the pointer, which moves as the addressing mode says (10.1.3)."""
        i = 0
        while i < len(data):
            if self.mode == _VERTICAL:
                self.gddram[self.page * _SSD1306_COLUMNS + self.column] = data[i]
                i += 1
                self.page += 1
                if self.page > self.pages[1]:
                    self.page = self.pages[0]
                    self.column = (
                        self.column + 1 if self.column < self.columns[1] else self.columns[0]
                    )
                continue
            last = self.columns[1] if self.mode == _HORIZONTAL else _SSD1306_COLUMNS - 1
            run = min(len(data) - i, last - self.column + 1)
            if run <= 0:  # a window reversed by its command: the pointer stays on its column
                run = 1
            start = self.page * _SSD1306_COLUMNS + self.column
            self.gddram[start : start + run] = data[i : i + run]
            i += run
            self.column += run
            if self.column > last:
                if self.mode == _HORIZONTAL:
                    self.column = self.columns[0]
                    self.page = self.page + 1 if self.page < self.pages[1] else self.pages[0]
                else:
                    self.column = self.page_mode_column

    def _glass_row(self, r):
        """The glass row the controller's row counter r drives (10.1.12, 10.1.14-10.1.18)."""
        com = (r - self.offset) % _SSD1306_ROWS
        if self.com_remap:
            com = (self.mux - com) % _SSD1306_ROWS
        if self.com_pins & 0x10:  # alternative: even rows on COM0-31, odd rows on COM32-63
            pin = com // 2 + (32 if com & 1 else 0)
        else:
            pin = com
        if self.com_pins & 0x20:
            pin ^= 32  # left/right remap
        # The module's glass: row 2k on pin COMk, row 2k+1 on pin COM(32+k).
        return 2 * pin if pin < 32 else 2 * (pin - 32) + 1

    def picture(self, hw):
        if not (self.display_on and self.charge_pump):  # the module has no external VCC
            return None
        if self.entire_on:
            return Image.new("RGB", (_SSD1306_COLUMNS, _SSD1306_ROWS), (255, 255, 255))
        # MONO_VLSB pages -> one byte a pixel (255 = bit set): each GDDRAM byte is a row of 8
        # pixels of a tall image that, transposed, puts page p at x = 128p..128p+127.
        pages = Image.frombytes("1", (8, len(self.gddram)), bytes(self.gddram), "raw", "1;R")
        pages = pages.transpose(Image.Transpose.TRANSPOSE).convert("L")
        ram = Image.new("L", (_SSD1306_COLUMNS, _SSD1306_ROWS))
        for p in range(_SSD1306_PAGES):
            box = (p * _SSD1306_COLUMNS, 0, (p + 1) * _SSD1306_COLUMNS, 8)
            ram.paste(pages.crop(box), (0, 8 * p))
        ram_rows = ram.tobytes()
        width = _SSD1306_COLUMNS
        rows = [bytes(width)] * _SSD1306_ROWS  # a row the scan does not reach stays unlit
        for r in range(self.mux + 1):
            line = (r + self.start_line) % _SSD1306_ROWS
            rows[self._glass_row(r)] = ram_rows[line * width : (line + 1) * width]
        lit = Image.frombytes("L", (width, _SSD1306_ROWS), b"".join(rows))
        if self.inverse:
            lit = ImageChops.invert(lit)
        if self.segment_remap:  # column 127 drives SEG0
            lit = lit.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return lit.convert("RGB")


# ---- ST7789 and ILI9341: MIPI DCS over 4-wire SPI

_RAM_COLUMNS = 240
_RAM_ROWS = 320
_MY, _MX, _MV, _BGR = 0x80, 0x40, 0x20, 0x08
_RAMWR, _RAMWRC = 0x2C, 0x3C
_FORMATS = {5: 2, 6: 3}  # COLMOD interface format -> bytes a pixel: RGB565, RGB666
_RESET_COLMOD = 0x66

# Commands both controllers share (DCS 1.02) -> (name, parameter count). RAMWR/RAMWRC stream.
_DCS = {
    0x00: ("NOP", 0),
    0x01: ("SWRESET", 0),
    0x10: ("SLPIN", 0),
    0x11: ("SLPOUT", 0),
    0x13: ("NORON", 0),
    0x20: ("INVOFF", 0),
    0x21: ("INVON", 0),
    0x26: ("GAMSET", 1),
    0x28: ("DISPOFF", 0),
    0x29: ("DISPON", 0),
    0x2A: ("CASET", 4),
    0x2B: ("RASET", 4),
    0x2C: ("RAMWR", None),
    0x34: ("TEOFF", 0),
    0x35: ("TEON", 1),
    0x36: ("MADCTL", 1),
    0x3A: ("COLMOD", 1),
    0x3C: ("RAMWRC", None),
    0x51: ("WRDISBV", 1),
    0x53: ("WRCTRLD", 1),
    0x55: ("WRCACE", 1),
}


class DCSController(Controller):
    """A 240x320 RGB controller driven by DCS commands; subclasses add their panel commands
    (power, porch, gamma: no effect on what a black-and-white picture looks like here)."""

    COMMANDS = _DCS

    def __init__(self, warn):
        super().__init__(warn)
        noise = os.urandom(_RAM_COLUMNS * _RAM_ROWS * 3)
        self.ram = Image.frombytes("RGB", (_RAM_COLUMNS, _RAM_ROWS), noise)
        self.reset()

    def reset(self):
        super().reset()
        self.asleep = True
        self.display_on = False
        self.inverted = False
        self.madctl = 0
        self.colmod = _RESET_COLMOD
        self.colmod_set = False
        self.columns = (0, _RAM_COLUMNS - 1)
        self.rows = (0, _RAM_ROWS - 1)
        self.x, self.y = 0, 0
        self._command = None  # the command whose parameters come next
        self._params = bytearray()
        self._writing = False
        self._command_unknown = False
        self._partial = b""

    def receive(self, is_data, data):
        if not is_data:
            for byte in data:
                self._command_byte(byte)
        elif self._writing:
            self._write_pixels(data)
        elif self._command is not None:
            self._parameters(data)
        elif not self._command_unknown:  # (an unknown command's parameters: reported)
            self.warn(f"{len(data)} data byte(s) that no command expects; ignored")

    def _command_byte(self, byte):
        self._finish_command()
        self._writing = False
        self._command_unknown = False
        if byte not in self.COMMANDS:
            self._command_unknown = True
            self.warn(f"0x{byte:02x} is not a {self.NAME} command this model knows; ignored")
            return
        name, count = self.COMMANDS[byte]
        if count is None:  # RAMWR / RAMWRC: pixels follow
            self._start_write(byte)
        elif count == 0:
            self._apply(byte, b"")
        else:
            self._command = byte
            self._params = bytearray()

    def _finish_command(self):
        if self._command is not None:
            name, count = self.COMMANDS[self._command]
            self.warn(
                f"{name} (0x{self._command:02x}) got {len(self._params)} of its {count} "
                "parameter bytes; ignored"
            )
            self._command = None

    def _parameters(self, data):
        name, count = self.COMMANDS[self._command]
        take = count - len(self._params)
        self._params += data[:take]
        if len(self._params) < count:
            return
        command, self._command = self._command, None
        self._apply(command, bytes(self._params))
        if len(data) > take:
            self.warn(f"{name} (0x{command:02x}) takes {count} parameter bytes, got more")

    def _apply(self, cmd, p):
        if cmd == 0x01:
            self.reset()
        elif cmd in (0x10, 0x11):
            self.asleep = cmd == 0x10
        elif cmd in (0x20, 0x21):
            self.inverted = cmd == 0x21
        elif cmd in (0x28, 0x29):
            self.display_on = cmd == 0x29
        elif cmd in (0x2A, 0x2B):
            self._set_window(cmd, int.from_bytes(p[:2], "big"), int.from_bytes(p[2:], "big"))
        elif cmd == 0x36:
            self.madctl = p[0]
        elif cmd == 0x3A:
            self.colmod = p[0]
            self.colmod_set = True
            if p[0] & 7 not in _FORMATS:
                self.warn(f"COLMOD 0x{p[0]:02x}: only 16- and 18-bit pixels are modelled")

    def _set_window(self, cmd, start, end):
        name = "CASET" if cmd == 0x2A else "RASET"
        # CASET addresses RAM columns, or RAM rows once MV exchanges them (8.12).
        addresses_columns = (cmd == 0x2A) != bool(self.madctl & _MV)
        top = (_RAM_COLUMNS if addresses_columns else _RAM_ROWS) - 1
        if start > end:
            self.warn(f"{name} {start}..{end}: start after end; ignored")
            return
        if end > top:
            self.warn(f"{name} {start}..{end} goes beyond RAM (0..{top}); pixels there are lost")
        if cmd == 0x2A:
            self.columns = (start, end)
        else:
            self.rows = (start, end)

    def _start_write(self, cmd):
        self._writing = True
        self._partial = b""
        if cmd == _RAMWR:
            self.x, self.y = self.columns[0], self.rows[0]
        if not self.colmod_set:
            self.warn(
                f"pixels in the reset colour format (COLMOD 0x{_RESET_COLMOD:02x}, 18-bit); "
                "RGB565 needs COLMOD 0x55 first"
            )

    def _write_pixels(self, data):
        """Pixels into the window at the pointer, column first, as many rows at a time as fit."""
        size = _FORMATS.get(self.colmod & 7)
        if size is None:
            return
        if self._partial:
            data = self._partial + bytes(data)
        count = len(data) // size
        self._partial = bytes(data[count * size :])
        (x0, x1), (y0, y1) = self.columns, self.rows
        width = x1 - x0 + 1
        at = 0
        while count:
            if self.y > y1:  # the last pixel went to the window's end and more follow
                self.warn(
                    f"RAMWR ran past the end of the window ({x0}..{x1}, {y0}..{y1}); the "
                    "controller wraps to its start"
                )
                self.y = y0
            if self.x == x0 and count >= width:
                n, rows = width, min(count // width, y1 - self.y + 1)
            else:
                n, rows = min(count, x1 - self.x + 1), 1
            end = at + n * rows * size
            self._put(data[at:end], size, self.x, self.y, n, rows)
            at, count = end, count - n * rows
            self.x += n
            if self.x > x1:
                self.x, self.y = x0, self.y + rows

    def _put(self, chunk, size, x, y, n, rows):
        """n x rows pixels whose top-left is window address (x, y), placed per MADCTL."""
        if size == 2:  # big-endian RGB565 on the wire; Pillow's BGR;16 reads little-endian
            swapped = bytearray(len(chunk))
            swapped[0::2] = chunk[1::2]
            swapped[1::2] = chunk[0::2]
            block = Image.frombytes("RGB", (n, rows), bytes(swapped), "raw", "BGR;16")
        else:  # RGB666: one byte a channel, its top 6 bits
            block = Image.frombytes("RGB", (n, rows), bytes(chunk))
        col0, row0 = x, y
        if self.madctl & _MV:
            block = block.transpose(Image.Transpose.TRANSPOSE)
            col0, row0 = y, x
        if self.madctl & _MX:
            block = block.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            col0 = _RAM_COLUMNS - col0 - block.width
        if self.madctl & _MY:
            block = block.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
            row0 = _RAM_ROWS - row0 - block.height
        self.ram.paste(block, (col0, row0))  # Pillow clips what falls outside RAM

    def picture(self, hw):
        if self.asleep or not self.display_on:
            return None
        width, height, x, y = hw.glass
        shown = self.ram.crop((x, y, x + width, y + height))
        if hw.columns_reversed:
            shown = shown.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if bool(self.madctl & _BGR) != hw.bgr:
            red, green, blue = shown.split()
            shown = Image.merge("RGB", (blue, green, red))
        if self.inverted != hw.ips:
            shown = ImageChops.invert(shown)
        return shown


class ST7789(DCSController):
    NAME = "ST7789"
    MAX_SPI_HZ = 62_500_000  # serial write cycle 16 ns
    COMMANDS = _DCS | {
        0xB2: ("PORCTRL", 5),
        0xB7: ("GCTRL", 1),
        0xBB: ("VCOMS", 1),
        0xC0: ("LCMCTRL", 1),
        0xC2: ("VDVVRHEN", 2),
        0xC3: ("VRHS", 1),
        0xC4: ("VDVS", 1),
        0xC6: ("FRCTRL2", 1),
        0xD0: ("PWCTRL1", 2),
        0xE0: ("PVGAMCTRL", 14),
        0xE1: ("NVGAMCTRL", 14),
    }


class ILI9341(DCSController):
    NAME = "ILI9341"
    MAX_SPI_HZ = 10_000_000  # serial write cycle 100 ns
    COMMANDS = _DCS | {
        0xB1: ("FRMCTR1", 2),
        0xB4: ("INVTR", 1),
        0xB6: ("DISCTRL", 4),
        0xC0: ("PWCTR1", 1),
        0xC1: ("PWCTR2", 1),
        0xC5: ("VMCTR1", 2),
        0xC7: ("VMCTR2", 1),
        0xCB: ("Power control A", 5),
        0xCF: ("Power control B", 3),
        0xE0: ("PGAMCTRL", 15),
        0xE1: ("NGAMCTRL", 15),
        0xE8: ("Driver timing control A", 3),
        0xEA: ("Driver timing control B", 2),
        0xED: ("Power on sequence control", 4),
        0xF2: ("Enable 3G", 1),
        0xF7: ("Pump ratio control", 1),
    }


_CONTROLLERS = {"ssd1306": SSD1306, "st7789": ST7789, "ili9341": ILI9341}


@dataclass
class _SPIConfig:
    baudrate: int
    polarity: int
    phase: int
    firstbit: int
    pins: tuple  # (sck, mosi)


class Panel:
    """The panel on a board: its controller behind the board's wiring.

    `warn(line)` gets each warning line; `changed` is set whenever what the glass shows may
    have changed (the board publishes the view and clears it).
    """

    def __init__(self, hw, warn):
        self.hw = hw
        self.warn = warn
        self.changed = True
        self.powered = False
        self.controller = None
        self.levels = {}
        self._spi = {}

    def port_environment(self):
        """What the port layer needs to know of the wiring (tools/vboard/port/link.py)."""
        env = {"QRFLEET_WIRED_PINS": ",".join(str(p) for p in self.hw.pins.values())}
        if self.hw.i2c:
            pins = self.hw.pins
            env["QRFLEET_I2C_DEVICES"] = f"{pins['sda']}:{pins['scl']}:{self.hw.i2c_address}"
        return env

    def _warn(self, text):
        self.warn("panel: " + text)

    # -- power and reset

    def power_on(self):
        """Power comes up: the controller resets with noise in its memory; pins undriven."""
        self.powered = True
        self.controller = _CONTROLLERS[self.hw.controller](self._warn)
        self._release_pins()

    def power_off(self):
        self.powered = False
        self.controller = None
        self.changed = True

    def chip_reset(self, cause):
        """The ESP32 reset (`cause` as board.py names it): its pins stop driving; an EN reset
        also resets a controller whose RST is tied to EN; a power-on powers the panel up."""
        if cause == "power-on" or not self.powered:
            self.power_on()
            return
        if cause == "hard" and "rst" not in self.hw.pins:
            self.controller.reset()
        self._release_pins()

    def _release_pins(self):
        self.levels = {signal: _UNDRIVEN[signal] for signal in self.hw.pins if signal in _UNDRIVEN}
        self._spi = {}
        self.changed = True

    # -- signals from the port layer

    def pin(self, gpio, level):
        if not self.powered:
            return
        for signal, wired in self.hw.pins.items():
            if wired == gpio and signal in _UNDRIVEN:
                if signal == "rst" and level == 0 and self.levels["rst"] == 1:
                    self.controller.reset()
                self.levels[signal] = level
                self.changed = True

    def spi_init(self, host, baudrate, polarity, phase, firstbit, sck, mosi):
        self._spi[host] = _SPIConfig(baudrate, polarity, phase, firstbit, (sck, mosi))

    def spi_write(self, host, data):
        config = self._spi.get(host)
        pins = self.hw.pins
        if config is None or self.hw.i2c or config.pins != (pins["sck"], pins["mosi"]):
            return  # the bytes go out on pins the panel is not on
        if not self._spi_latched(config):
            return
        if self.levels.get("cs", 0):
            self.controller.warn(
                f"{len(data)} byte(s) sent while CS (GPIO{pins['cs']}) is high: the "
                "controller does not listen"
            )
            return
        if not self._listening():
            return
        self.controller.receive(self.levels["dc"] == 1, data)
        self.changed = True

    def _spi_latched(self, config):
        """Whether the controller reads what the ESP32 sends at this clock and mode."""
        ctl = self.controller
        mode = config.polarity << 1 | config.phase
        if config.baudrate > ctl.MAX_SPI_HZ:
            problem = (
                f"SPI clock {config.baudrate / 1e6:g} MHz is faster than the {ctl.NAME} "
                f"latches ({ctl.MAX_SPI_HZ / 1e6:g} MHz)"
            )
        elif mode not in (0, 3):
            problem = f"SPI mode {mode}: the {ctl.NAME} samples on the rising edge (mode 0 or 3)"
        elif mode == 0 and "cs" not in self.hw.pins:
            problem = f"SPI mode 0 without a CS line: this {ctl.NAME} module needs mode 3"
        elif config.firstbit:
            problem = f"SPI sends LSB first: the {ctl.NAME} reads MSB first"
        else:
            return True
        ctl.warn(problem + "; nothing is received")
        return False

    def i2c_write(self, address, data):
        if not self.hw.i2c or address != self.hw.i2c_address or not self._listening():
            return
        # Each transfer is control bytes (Co bit 7, D/C# bit 6) and what they announce (8.1.5.2).
        i = 0
        while i < len(data):
            control = data[i]
            if control & 0x3F:
                self.controller.warn(f"I2C control byte 0x{control:02x} has bits 5-0 set")
            is_data = bool(control & 0x40)
            if control & 0x80:  # Co = 1: one byte, then another control byte
                self.controller.receive(is_data, data[i + 1 : i + 2])
                i += 2
            else:
                self.controller.receive(is_data, data[i + 1 :])
                break
        self.changed = True

    def _listening(self):
        if not self.powered:
            return False
        if self.levels.get("rst", 1) == 0:
            self.controller.warn("bytes sent while RST is low (held in reset); ignored")
            return False
        return True

    # -- what the user sees

    @property
    def view_size(self):
        width, height = self.hw.glass[:2]
        return (height, width) if self.hw.mounting in (90, 270) else (width, height)

    def view(self):
        """The screen as the user sees it in the case (RGB); black while dark."""
        picture = None
        if self.powered and self.levels.get("bl", 1):
            picture = self.controller.picture(self.hw)
        if picture is None:
            return Image.new("RGB", self.view_size, _DARK)
        if self.hw.mounting:
            picture = picture.rotate(self.hw.mounting, expand=True)
        return picture


def pbm_rows(view):
    """The view as PBM P4 rows (1 = black): a pixel is black when darker than half."""
    mono = view.convert("L").convert("1", dither=Image.Dither.NONE)
    return mono.tobytes("raw", "1;I")
