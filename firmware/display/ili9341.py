"""ILI9341 TFT, 240x320 glass shown as 320x240 on ESP32-2432S028 ("cheap yellow display").

Init per the ILI9341 datasheet (v1.11): SWRESET, then 120 ms before SLPOUT; SLPOUT, then
120 ms; COLMOD (PIXSET) 0x55; NORON. Power, VCOM and gamma stay at their reset defaults,
which is enough for black and white. MADCTL per rotation, BGR bit set because the glass
is wired BGR: MX|BGR, MV|BGR, MY|BGR, MY|MX|MV|BGR.
"""

from firmware.display.colour import COLMOD, NORON, SLPOUT, SWRESET, ColourPanel


class ILI9341(ColourPanel):
    INIT = (
        (SWRESET, b"", 120),
        (SLPOUT, b"", 120),
        (COLMOD, b"\x55", 0),
        (NORON, b"", 0),
    )
    MADCTL = (0x48, 0x28, 0x88, 0xE8)
