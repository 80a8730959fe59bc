"""tools/framebuf.py draws exactly what the Unix port's framebuf draws."""

import pytest

DRAWING = """
import framebuf
fmt = framebuf.%s
buf = bytearray(%d)
fb = framebuf.FrameBuffer(buf, 37, 21, fmt)
fb.fill(0)
fb.text("Hi! ~{|}\\x7f é", -3, 2, 1)
fb.fill_rect(30, -2, 10, 6, 1)
fb.rect(1, 12, 20, 8, 1)
fb.hline(-5, 20, 50, 1)
fb.vline(36, 0, 30, 1)
fb.pixel(0, 0, 1)
stamp = framebuf.FrameBuffer(bytearray(8), 8, 8, framebuf.MONO_HLSB)
stamp.text("Q", 0, 0, 1)
palette = framebuf.FrameBuffer(bytearray(4), 2, 1, framebuf.RGB565)
palette.pixel(0, 0, 0x1234)
palette.pixel(1, 0, 0xABCD)
fb.blit(stamp, 25, 10, 0, palette)
fb.blit(stamp, -4, -4)
print(bytes(buf).hex(), fb.pixel(36, 5), fb.pixel(40, 40))
"""

FORMATS = {"MONO_HLSB": 5 * 21, "MONO_VLSB": 37 * 3, "RGB565": 37 * 21 * 2}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_stand_in_matches_the_unix_port_pixel_for_pixel(unix_port, capsys, fmt):
    code = DRAWING % (fmt, FORMATS[fmt])
    exec(code, {})
    assert capsys.readouterr().out == unix_port(code)
