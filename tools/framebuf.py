"""CPython stand-in for MicroPython's `framebuf`, so the display firmware runs on the host.

CPython has no `framebuf`; the host (verifying what a unit drew), the tools and the tests
call `install()` once, which registers this module as `sys.modules["framebuf"]` before any
`firmware.display` import. Only the subset the firmware uses is here, with the port's
semantics (clipping, the MONO_HLSB stride rounded up to 8 pixels, RGB565 stored
little-endian, `text` walking the UTF-8 bytes and drawing glyph 127 for anything outside
32..127, `blit` with a colour key and a palette):

    FrameBuffer(buffer, width, height, format, stride=width)
      .fill(c) .pixel(x, y[, c]) .fill_rect(x, y, w, h, c) .hline(x, y, w, c)
      .vline(x, y, h, c) .rect(x, y, w, h, c[, fill]) .text(s, x, y[, c])
      .blit(fbuf, x, y[, key[, palette]])

The 8x8 glyphs in `tools/framebuf_font.py` were read back from the real `framebuf.text`
on the Unix port: `python -m tools.framebuf` regenerates that file.
"""

import sys
from pathlib import Path

MONO_VLSB = 0
RGB565 = 1
MONO_HLSB = 3
MONO_HMSB = 4

_FONT_FILE = Path(__file__).with_name("framebuf_font.py")


def install():
    """Make `import framebuf` find this module (a no-op where a real framebuf exists)."""
    sys.modules.setdefault("framebuf", sys.modules[__name__])


class FrameBuffer:
    def __init__(self, buffer, width, height, format, stride=None):
        if format not in (MONO_VLSB, RGB565, MONO_HLSB, MONO_HMSB):
            raise ValueError("invalid format")
        stride = width if stride is None else stride
        if format in (MONO_HLSB, MONO_HMSB):
            stride = (stride + 7) & ~7
        self._buf = memoryview(buffer).cast("B")
        self.width = width
        self.height = height
        self._format = format
        self._stride = stride
        needed = {
            MONO_VLSB: ((height + 7) // 8) * stride,
            RGB565: height * stride * 2,
        }.get(format, height * stride // 8)
        if len(self._buf) < needed:
            raise ValueError("buffer too small")

    # Pixel access per format: (byte offset, bit) or an RGB565 word.

    def _get(self, x, y):
        fmt, buf = self._format, self._buf
        if fmt == RGB565:
            i = (x + y * self._stride) * 2
            return buf[i] | buf[i + 1] << 8
        if fmt == MONO_VLSB:
            return buf[(y >> 3) * self._stride + x] >> (y & 7) & 1
        i = (x + y * self._stride) >> 3
        shift = 7 - (x & 7) if fmt == MONO_HLSB else x & 7
        return buf[i] >> shift & 1

    def _set(self, x, y, c):
        fmt, buf = self._format, self._buf
        if fmt == RGB565:
            i = (x + y * self._stride) * 2
            buf[i] = c & 0xFF
            buf[i + 1] = c >> 8 & 0xFF
            return
        if fmt == MONO_VLSB:
            i, mask = (y >> 3) * self._stride + x, 1 << (y & 7)
        else:
            i = (x + y * self._stride) >> 3
            mask = 1 << (7 - (x & 7) if fmt == MONO_HLSB else x & 7)
        buf[i] = buf[i] | mask if c else buf[i] & ~mask  # any non-zero colour is "on"

    # Drawing, clipped to the buffer as the port clips.

    def fill(self, c):
        self.fill_rect(0, 0, self.width, self.height, c)

    def pixel(self, x, y, c=None):
        if not (0 <= x < self.width and 0 <= y < self.height):
            return None
        if c is None:
            return self._get(x, y)
        self._set(x, y, c)
        return None

    def fill_rect(self, x, y, w, h, c):
        if w < 1 or h < 1 or x + w <= 0 or y + h <= 0 or x >= self.width or y >= self.height:
            return
        x_end, y_end = min(self.width, x + w), min(self.height, y + h)
        x, y = max(x, 0), max(y, 0)
        for yy in range(y, y_end):
            for xx in range(x, x_end):
                self._set(xx, yy, c)

    def hline(self, x, y, w, c):
        self.fill_rect(x, y, w, 1, c)

    def vline(self, x, y, h, c):
        self.fill_rect(x, y, 1, h, c)

    def rect(self, x, y, w, h, c, fill=False):
        if fill:
            self.fill_rect(x, y, w, h, c)
            return
        self.fill_rect(x, y, w, 1, c)
        self.fill_rect(x, y + h - 1, w, 1, c)
        self.fill_rect(x, y, 1, h, c)
        self.fill_rect(x + w - 1, y, 1, h, c)

    def text(self, s, x, y, c=1):
        from tools.framebuf_font import GLYPHS

        for code in str(s).encode():
            if code == 0:
                break
            if code < 32 or code > 127:
                code = 127
            glyph = (code - 32) * 8
            for col in range(8):
                bits = GLYPHS[glyph + col]
                xx = x + col
                for row in range(8):
                    if bits >> row & 1 and 0 <= xx < self.width and 0 <= y + row < self.height:
                        self._set(xx, y + row, c)
            x += 8

    def blit(self, fbuf, x, y, key=-1, palette=None):
        if x >= self.width or y >= self.height or -x >= fbuf.width or -y >= fbuf.height:
            return
        x0, y0 = max(x, 0), max(y, 0)
        sx0, sy = max(-x, 0), max(-y, 0)
        x_end, y_end = min(self.width, x + fbuf.width), min(self.height, y + fbuf.height)
        for yy in range(y0, y_end):
            sx = sx0
            for xx in range(x0, x_end):
                c = fbuf._get(sx, sy)
                if palette is not None:
                    c = palette._get(c, 0)
                if c != key:
                    self._set(xx, yy, c)
                sx += 1
            sy += 1


_GLYPH_DUMP = """
import framebuf
cell = bytearray(8)
fb = framebuf.FrameBuffer(cell, 8, 8, framebuf.MONO_VLSB)
out = []
for code in range(32, 128):
    fb.fill(0)
    fb.text(chr(code), 0, 0, 1)
    out.append(bytes(cell).hex())
print("".join(out))
"""


def regenerate_font():
    """Read every glyph back from the Unix port's framebuf and rewrite `framebuf_font.py`."""
    from tools import micropython

    done = micropython.run(_GLYPH_DUMP, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode("utf-8", "replace"))
    data = bytes.fromhex(done.stdout.decode().strip())
    rows = "\n".join(f"    {data[i : i + 16]!r}" for i in range(0, len(data), 16))
    _FONT_FILE.write_text(
        '"""8x8 glyphs of MicroPython\'s framebuf font, characters 32..127, 8 column bytes each\n'
        "(bit 0 = top row). Generated by `python -m tools.framebuf` from the Unix port; do not edit.\n"
        '"""\n\n'
        f"GLYPHS = (\n{rows}\n)\n"
    )
    return len(data) // 8


if __name__ == "__main__":
    print(f"wrote {regenerate_font()} glyphs to {_FONT_FILE}")
