"""Virtual panels: the firmware's own drivers against the panel models, then boards with a real
panel profile showing their QRs to zxing-cpp.

The first part runs the drivers on CPython (tools/framebuf.py stands in for framebuf) with the
HAL calls answered as the port layer answers them on a board: pin levels and bus bytes go to
the panel, which checks them against its board's wiring (panels.BOARDS, the oracle).
"""

import asyncio
from types import SimpleNamespace

import pytest
import zxingcpp
from PIL import Image, ImageChops

from tools import framebuf

framebuf.install()

from firmware.display import INK, PAPER, profiles  # noqa: E402
from firmware.display.render import Renderer  # noqa: E402
from firmware.display.st7789 import ST7789  # noqa: E402
from tests.tools.vboard.port.conftest import run  # noqa: E402
from tools.background import BackgroundLoop, wait_for  # noqa: E402
from tools.harness.benches import wait_online  # noqa: E402
from tools.serverproc import running_server  # noqa: E402
from tools.vboard import fleet, panels  # noqa: E402
from tools.vboard.screen import decode_qr  # noqa: E402

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


class Bench:
    """A board's panel on the bench, and the HAL calls profiles.build makes, answered as the
    port layer answers them (tools/vboard/port/machine.py)."""

    def __init__(self, board):
        self.warnings = []
        self.panel = panels.Panel(panels.BOARDS[board], self.warnings.append)
        self.panel.chip_reset("power-on")

    def pin(self, number):
        return lambda level: self.panel.pin(number, level)

    def spi(self, bus, baudrate, polarity, phase, sck, mosi):
        self.panel.spi_init(bus, baudrate, polarity, phase, 0, sck, mosi)
        return SimpleNamespace(write=lambda buf: self.panel.spi_write(bus, bytes(buf)))

    def i2c(self, bus, scl, sda, freq):
        hw = self.panel.hw

        def writevto(addr, bufs):
            if (sda, scl, addr) != (hw.pins["sda"], hw.pins["scl"], hw.i2c_address):
                raise OSError(19)  # no acknowledgement
            self.panel.i2c_write(addr, b"".join(bytes(b) for b in bufs))

        return SimpleNamespace(writeto=lambda addr, buf: writevto(addr, [buf]), writevto=writevto)

    def screen(self):
        """display.pbm's picture: black where the glass is dark."""
        view = self.panel.view()
        return Image.frombytes("1", view.size, panels.pbm_rows(view), "raw", "1;I")


def drawn(display):
    """The driver's framebuffer as a picture: INK black, PAPER white."""
    frame = Image.new("1", (display.width, display.height), 255)
    for y in range(display.height):
        for x in range(display.width):
            if display.pixel(x, y) == INK:
                frame.putpixel((x, y), 0)
    return frame


def same(a, b):
    return a.size == b.size and ImageChops.difference(a, b).getbbox() is None


def all_black(picture):
    return picture.convert("L").getextrema() == (0, 0)


def build(board):
    bench = Bench(board)
    return bench, profiles.build(board, bench)


def draw_asymmetric(display):
    """Something whose every mirror, rotation and shift differs from it."""
    display.fill(PAPER)
    display.fill_rect(0, 0, 12, 5, INK)
    display.text("qr", 2, 10, INK)
    display.pixel(display.width - 1, display.height - 1, INK)
    display.show()


# ---- the drivers on the panels


@pytest.mark.parametrize("board", sorted(panels.BOARDS))
def test_the_glass_shows_exactly_the_frame_the_driver_drew(board):
    bench, display = build(board)
    assert same(bench.screen(), Image.new("1", bench.panel.view_size, 255))  # cleared: all paper
    draw_asymmetric(display)
    assert same(bench.screen(), drawn(display))
    assert bench.warnings == []


@pytest.mark.parametrize("board", ["ttgo-t-display", "esp32-2432s028"])
def test_colour_panels_show_true_black_and_white(board):
    bench, display = build(board)
    draw_asymmetric(display)
    assert {colour for _, colour in bench.panel.view().getcolors()} == {WHITE, BLACK}


def test_a_payment_screen_reads_back_on_the_landscape_yellow_display():
    bench, display = build("esp32-2432s028")
    payload = "upi://pay?pa=cafe@bank&pn=Cafe&am=4.20&cu=INR"
    Renderer(display).payment(payload, "4.20 INR")
    assert same(bench.screen(), drawn(display))
    picture = bench.screen().convert("L").resize((640, 480), Image.NEAREST)
    assert [r.text for r in zxingcpp.read_barcodes(picture)] == [payload]


def test_before_the_driver_runs_the_glass_is_dark_and_the_ram_holds_noise():
    bench = Bench("ttgo-t-display")
    assert all_black(bench.panel.view())
    assert len(bench.panel.controller.ram.getcolors(1 << 20)) > 1000


def test_a_wrong_madctl_shows_the_frame_mirrored(monkeypatch):
    monkeypatch.setattr(ST7789, "MADCTL", (0x40, 0x60, 0xC0, 0xA0))  # MX at rotation 0
    bench, display = build("ttgo-t-display")
    draw_asymmetric(display)
    assert same(bench.screen(), drawn(display).transpose(Image.Transpose.FLIP_LEFT_RIGHT))


@pytest.mark.parametrize("board", ["ttgo-t-display", "esp32-2432s028"])
def test_a_window_one_column_off_shifts_the_picture(board):
    bench, display = build(board)
    start = int.from_bytes(display._caset[:2], "big") + 1
    end = int.from_bytes(display._caset[2:], "big") + 1
    display._caset = start.to_bytes(2, "big") + end.to_bytes(2, "big")
    draw_asymmetric(display)
    assert not same(bench.screen(), drawn(display))


def test_a_window_beyond_the_ram_is_reported():
    bench, display = build("st7789-240")
    display._caset = bytes((0, 1, 0, 240))  # columns 1..240: RAM ends at 239
    draw_asymmetric(display)
    assert "panel: CASET 1..240 goes beyond RAM (0..239); pixels there are lost" in bench.warnings
    assert not same(bench.screen(), drawn(display))


def without(init, command):
    return tuple(step for step in init if step[0] != command)


def test_without_slpout_the_pixels_land_in_ram_but_the_glass_stays_dark(monkeypatch):
    monkeypatch.setattr(ST7789, "INIT", without(ST7789.INIT, 0x11))
    bench, display = build("st7789-240")
    draw_asymmetric(display)
    assert all_black(bench.panel.view())
    ram = bench.panel.controller.ram.crop((0, 0, 240, 240))
    assert same(ram.convert("L").convert("1", dither=Image.Dither.NONE), drawn(display))


def test_pixels_before_colmod_come_out_garbled_and_are_reported(monkeypatch):
    monkeypatch.setattr(ST7789, "INIT", without(ST7789.INIT, 0x3A))
    bench, display = build("ttgo-t-display")
    draw_asymmetric(display)
    assert not same(bench.screen(), drawn(display))
    assert any("RGB565 needs COLMOD 0x55 first" in w for w in bench.warnings)


def test_a_profile_on_the_wrong_clock_pin_leaves_the_glass_dark(monkeypatch):
    panel, size, rotation, bus = profiles.PROFILES["esp32-2432s028"]
    moved = dict(bus, sck=18)
    monkeypatch.setitem(profiles.PROFILES, "esp32-2432s028", (panel, size, rotation, moved))
    bench, display = build("esp32-2432s028")
    draw_asymmetric(display)
    assert all_black(bench.panel.view())


def test_a_profile_with_dc_on_the_wrong_pin_garbles_the_commands(monkeypatch):
    panel, size, rotation, bus = profiles.PROFILES["ttgo-t-display"]
    monkeypatch.setitem(
        profiles.PROFILES, "ttgo-t-display", (panel, size, rotation, dict(bus, dc=17))
    )
    bench, display = build("ttgo-t-display")
    draw_asymmetric(display)
    assert not same(bench.screen(), drawn(display))
    assert bench.warnings


def test_spi_mode_0_on_the_module_without_cs_is_not_latched(monkeypatch):
    panel, size, rotation, bus = profiles.PROFILES["st7789-240"]
    mode0 = dict(bus, polarity=0, phase=0)
    monkeypatch.setitem(profiles.PROFILES, "st7789-240", (panel, size, rotation, mode0))
    bench, display = build("st7789-240")
    assert all_black(bench.panel.view())
    assert bench.warnings == [
        "panel: SPI mode 0 without a CS line: this ST7789 module needs mode 3; nothing is received"
    ]


def test_a_clock_faster_than_the_controller_latches_is_reported(monkeypatch):
    panel, size, rotation, bus = profiles.PROFILES["esp32-2432s028"]
    fast = dict(bus, baudrate=40_000_000)
    monkeypatch.setitem(profiles.PROFILES, "esp32-2432s028", (panel, size, rotation, fast))
    bench, display = build("esp32-2432s028")
    assert all_black(bench.panel.view())
    assert "faster than the ILI9341 latches (10 MHz)" in bench.warnings[0]


# ---- controller rules a driver could break, on the wire


def spi_bench(board="ttgo-t-display"):
    """A panel with its SPI bus set up as the profile does, and a way to send on it."""
    bench = Bench(board)
    pins = bench.panel.hw.pins
    bench.panel.spi_init(1, 40_000_000, 0, 0, 0, pins["sck"], pins["mosi"])
    for signal in ("rst", "bl"):
        bench.panel.pin(pins[signal], 1)

    def send(command, data=b"", cs=0):
        bench.panel.pin(pins["cs"], cs)
        bench.panel.pin(pins["dc"], 0)
        bench.panel.spi_write(1, bytes((command,)))
        if data:
            bench.panel.pin(pins["dc"], 1)
            bench.panel.spi_write(1, data)
        bench.panel.pin(pins["cs"], 1)

    return bench, send


def test_commands_with_the_wrong_number_of_parameters_are_reported_and_not_applied():
    bench, send = spi_bench()
    send(0x2A, b"\x00\x10")  # CASET with half its parameters
    send(0x2C)
    send(0x36, b"\x40\x00")  # MADCTL takes one byte
    assert bench.warnings == [
        "panel: CASET (0x2a) got 2 of its 4 parameter bytes; ignored",
        "panel: pixels in the reset colour format (COLMOD 0x66, 18-bit); RGB565 needs "
        "COLMOD 0x55 first",
        "panel: MADCTL (0x36) takes 1 parameter bytes, got more",
    ]
    assert bench.panel.controller.columns == (0, 239)
    assert bench.panel.controller.madctl == 0x40


def test_unknown_commands_and_stray_data_are_reported_once():
    bench, send = spi_bench()
    send(0xFF, b"\x01\x02")
    send(0x13, b"\x00")  # NORON takes nothing
    send(0x13, b"\x00")
    assert bench.warnings == [
        "panel: 0xff is not a ST7789 command this model knows; ignored",
        "panel: 1 data byte(s) that no command expects; ignored",
    ]


def test_bytes_sent_while_cs_is_high_are_not_heard():
    bench, send = spi_bench()
    send(0x11, cs=1)
    assert bench.panel.controller.asleep
    assert bench.warnings == [
        "panel: 1 byte(s) sent while CS (GPIO5) is high: the controller does not listen"
    ]


def test_ramwr_past_the_window_wraps_to_its_start_and_is_reported():
    bench, send = spi_bench()
    send(0x3A, b"\x55")
    send(0x2A, b"\x00\x00\x00\x01")
    send(0x2B, b"\x00\x00\x00\x00")
    send(0x2C, b"\xf8\x00" * 2 + b"\x00\x1f")  # three pixels into a window of two
    ram = bench.panel.controller.ram
    assert [ram.getpixel((x, 0)) for x in (0, 1)] == [(0, 0, 255), (255, 0, 0)]
    assert "panel: RAMWR ran past the end of the window (0..1, 0..0)" in bench.warnings[0]


@pytest.mark.parametrize(
    ("madctl", "where"),
    [
        (0x00, [(0, 0), (1, 0), (0, 1)]),
        (0x40, [(239, 0), (238, 0), (239, 1)]),  # MX: columns mirrored
        (0x80, [(0, 319), (1, 319), (0, 318)]),  # MY: rows mirrored
        (0x20, [(0, 0), (0, 1), (1, 0)]),  # MV: the stream runs down RAM columns
        (0x60, [(239, 0), (239, 1), (238, 0)]),  # MV|MX: landscape, as rotation 90
    ],
)
def test_madctl_maps_the_pixel_stream_as_the_datasheet_draws_it(madctl, where):
    bench, send = spi_bench()
    send(0x3A, b"\x55")
    send(0x36, bytes((madctl,)))
    send(0x2A, b"\x00\x00\x00\x01")  # a 2x2 window at the origin of the host's view
    send(0x2B, b"\x00\x00\x00\x01")
    send(0x2C, b"\xf8\x00\x07\xe0\x00\x1f\xff\xff")  # red, green, blue, white
    ram = bench.panel.controller.ram
    assert [ram.getpixel(p) for p in where] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def test_a_reset_pulse_clears_the_controller_and_the_glass_goes_dark():
    bench, display = build("ttgo-t-display")
    draw_asymmetric(display)
    rst = bench.panel.hw.pins["rst"]
    bench.panel.pin(rst, 0)
    bench.panel.pin(rst, 1)
    assert all_black(bench.panel.view())
    assert bench.panel.controller.asleep and bench.panel.controller.colmod == 0x66


def test_on_the_yellow_display_en_resets_the_panel_and_a_software_reset_only_its_backlight():
    bench, display = build("esp32-2432s028")
    draw_asymmetric(display)
    frame = drawn(display)
    bench.panel.chip_reset("software")  # esp_restart: the pins float, the backlight goes off
    assert all_black(bench.panel.view())
    bench.panel.pin(bench.panel.hw.pins["bl"], 1)
    assert same(bench.screen(), frame)
    bench.panel.chip_reset("hard")  # EN, and RST with it
    bench.panel.pin(bench.panel.hw.pins["bl"], 1)
    assert all_black(bench.panel.view())


# ---- SSD1306


def i2c_bench():
    bench = Bench("ssd1306-i2c")

    def commands(*data):
        bench.panel.i2c_write(0x3C, b"\x00" + bytes(data))

    def pixels(data):
        bench.panel.i2c_write(0x3C, b"\x40" + bytes(data))

    return bench, commands, pixels


def test_ssd1306_addressing_modes_move_the_pointer_as_the_datasheet_says():
    bench, commands, pixels = i2c_bench()
    ram = bench.panel.controller.gddram
    commands(0xB2, 0x05, 0x10)  # page mode (the reset mode): page 2, column 5
    pixels(b"\x01\x02")
    assert ram[2 * 128 + 5 : 2 * 128 + 7] == b"\x01\x02"
    commands(0x20, 0x01, 0x21, 10, 11, 0x22, 6, 7)  # vertical, columns 10-11, pages 6-7
    pixels(b"\xa1\xa2\xa3\xa4\xa5")  # the fifth byte wraps to the window's start
    assert [ram[p * 128 + c] for c in (10, 11) for p in (6, 7)] == [0xA5, 0xA2, 0xA3, 0xA4]
    commands(0x20, 0x00, 0x21, 126, 127, 0x22, 0, 1)  # horizontal: wraps onto the next page
    pixels(b"\x11\x22\x33")
    assert (ram[126], ram[127], ram[128 + 126]) == (0x11, 0x22, 0x33)


def test_ssd1306_control_bytes_with_co_set_carry_one_byte_each():
    bench, commands, pixels = i2c_bench()
    bench.panel.i2c_write(0x3C, b"\x80\xaf\x80\x8d\x80\x14")  # Co=1: display on, charge pump
    controller = bench.panel.controller
    assert controller.display_on and controller.charge_pump


def test_ssd1306_without_its_charge_pump_stays_dark_and_wrong_com_pins_are_reported(monkeypatch):
    bench, display = build("ssd1306-i2c")
    bench.panel.i2c_write(0x3C, b"\x00\x8d\x10")  # charge pump off: no panel voltage
    assert all_black(bench.panel.view())
    bench.panel.i2c_write(0x3C, b"\x00\x8d\x14\x00\xda\x02")
    assert bench.warnings == [
        "panel: COM pins configuration 0x02 does not match the module's wiring (0x12): rows "
        "come out interleaved"
    ]
    draw_asymmetric(display)
    assert not same(bench.screen(), drawn(display))


# ---- boards with a panel, end to end

TOKEN = "panels-admin"


@pytest.fixture(scope="module")
def panel_boards(tmp_path_factory):
    """A server and one provisioned board per profile with a panel, all online."""
    directory = tmp_path_factory.mktemp("panel-boards")
    with running_server(directory, TOKEN, heartbeat_s=2) as server:
        admin = server.admin()
        admin.post("/api/locations", {"location_id": "shop", "name": "Shop", "policy": "strict"})
        provisioning = fleet.Provisioning([server.url], TOKEN, "shop")
        loop = BackgroundLoop()

        async def start_all():
            started = await asyncio.gather(
                *(
                    fleet.start_boards(
                        directory / name,
                        1,
                        provisioning=provisioning,
                        display=name,
                    )
                    for name in panels.BOARDS
                )
            )
            return dict(zip(panels.BOARDS, (b for (b,) in started), strict=True))

        async def stop_all(boards):
            await asyncio.gather(*(b.stop() for b in boards.values()))

        boards = loop.run(start_all(), 120)
        try:
            wait_online(admin, (b.device_id for b in boards.values()), 60)
            yield server, boards
        finally:
            loop.run(stop_all(boards), 60)
            loop.close()


@pytest.mark.parametrize("profile", sorted(panels.BOARDS))
def test_a_board_with_its_panel_shows_its_pairing_and_payment_qrs(panel_boards, profile):
    server, boards = panel_boards
    board = boards[profile]
    screen = board.dir / "display.pbm"
    found = []
    wait_for(
        lambda: (
            found.extend(t for t in decode_qr(screen) if t.startswith("qrfleet://pair?")) or found
        ),
        20,
        f"{profile}: the pairing QR",
    )
    assert f"device={board.device_id}" in found[0]
    agent_id = f"till-{profile}"
    token = server.admin().post(
        "/api/agents", {"agent_id": agent_id, "name": profile, "location_id": "shop"}
    )["token"]
    agent = server.client(token)
    agent.post(f"/api/agents/{agent_id}/devices", {"pairing": found[0]})
    payload = f"upi://pay?pa=cafe@bank&pn=Cafe&am=4.20&cu=INR&tn={profile}"
    shown = agent.post(f"/api/agents/{agent_id}/qr", {"payload": payload, "caption": "4.20 INR"})
    assert shown["verified"]
    wait_for(lambda: decode_qr(screen) == [payload], 10, f"{profile}: the payment QR")
    log = (board.dir / "serial.log").read_text(errors="replace")
    assert "panel: " not in log


# The firmware is interrupted from here on: these come last.


def test_on_the_i2c_board_only_the_panels_address_on_its_pins_acknowledges(panel_boards):
    _, boards = panel_boards
    said = run(
        boards["ssd1306-i2c"],
        "from machine import I2C, Pin\n"
        "print(I2C(0, scl=Pin(22), sda=Pin(21)).scan(), I2C(0).scan())\n"
        "for addr in (0x3C, 0x3D):\n"
        " try:\n  print(I2C(1, scl=22, sda=21).writeto(addr, b'\\x00\\xe3'))\n"
        " except OSError as e:\n  print(e)\n",
    )
    assert said.splitlines() == ["[60] []", "2", "[Errno 19] ENODEV"]


def test_a_panel_warning_reaches_the_boards_serial_port(panel_boards):
    _, boards = panel_boards
    board = boards["st7789-240"]
    run(
        board,
        "from machine import SPI, Pin\nSPI(2, 40000000, sck=Pin(18), mosi=Pin(23)).write(b'\\x29')",
    )
    wait_for(
        lambda: (
            "panel: SPI mode 0 without a CS line: this ST7789 module needs mode 3; nothing is "
            "received\n" in (board.dir / "serial.log").read_text(errors="replace")
        ),
        5,
        "the warning in the serial log",
    )
