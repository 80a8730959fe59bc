"""The unit's screen: framebuf drivers, board profiles and the screen renderer.

Every driver is a `framebuf.FrameBuffer` with `show()` and `width`/`height`, and all of
them draw in two colours: `INK` (dark) and `PAPER` (light). A QR is dark modules on a
light background, so INK is black on every panel, whatever the panel's own idea of "on":

    ssd1306    MONO_VLSB pages, display inverted (0xA7) so a set bit is an unlit pixel
    st7789,    MONO_HLSB in RAM, expanded to RGB565 black/white row by row while sending
    ili9341    (a full RGB565 frame of 320x240 is 150 KB, more than the ESP32's heap)
    virtual    MONO_HLSB, which is byte for byte the raster of a binary PBM (1 = black)

profiles.build(name, hal) makes the display a board's config names; render.Renderer draws
the screens (payment QR, pairing QR, status, result) onto any of them.
"""

INK = 1
PAPER = 0
