"""The unit's screens, drawn onto any display driver: payment QR, pairing QR, status, result.

Every screen is laid out, and every QR encoded and checked against the panel, before the
framebuffer is touched: a payload that does not fit raises PayloadTooLarge and the screen
keeps showing what it showed. Each draw returns a Drawn (screen name, QR symbol, module
size) so the firmware can report exactly what is on the glass.

QR layout: the module size is the largest whole number of pixels at which the symbol plus
a quiet zone of MIN_QUIET (2) modules on each side fits the panel's short side; the symbol
is centred, and whatever the panel leaves over widens the quiet zone (4 modules and more
wherever it fits). A caption goes below the symbol on portrait and square panels, beside
it on landscape ones, only where it costs the symbol neither module size nor quiet zone.

Text is the framebuf 8x8 font, drawn scaled by whole pixels where the space allows;
characters outside printable ASCII show as "?" (the font has no others).

Exceptions:

    ValueError
     ├── PayloadTooLarge   the QR cannot be drawn: names the largest payload that can
     │                     (or, on a board, that the encoder ran out of heap)
     └── (unknown status or result names: ValueError naming the known ones)
"""

import gc

import framebuf

from firmware.compat import utf8
from firmware.display import INK, PAPER
from firmware.proto.messages import pairing_uri

MIN_QUIET = 2  # modules of light margin a scanner needs at the least (the spec asks 4)
# The largest QR version a unit shows, whatever its panel: up to it, a unit has the heap to
# receive, encode and draw its largest payload (docs/displays.md, Memory). Version 20 holds
# 858 bytes at ECC L, 666 at M; payment payloads are a few hundred.
MAX_QR_VERSION = 20
_GAP = 2  # pixels between text lines
_PAD = 4  # pixels around a title band, and half the space between title and detail
_MIN_STRIP = 48  # pixels: a side strip narrower than 6 characters shows only fragments

_STATUS_TITLES = {
    "unprovisioned": "Not set up",
    "booting": "Starting",
    "wifi": "Wi-Fi",
    "bridge": "No bridge",
    "connecting": "Connecting",
    "offline": "Offline",
    "untrusted": "Server not trusted",
    "clock": "Clock not set",
    "ready": "Ready",
    "updating": "Updating",
}
_RESULT_TITLES = {"paid": "PAID", "cancelled": "CANCELLED", "expired": "EXPIRED"}
# firmware.qr, imported by the first Renderer that draws QRs: a unit in update mode draws none
# and keeps the encoder's ~16 KB of code out of its heap.
qr = None


class PayloadTooLarge(ValueError):
    pass


class Drawn:
    """What a screen put on the display: `screen`, and for QR screens `qr` and `scale`
    (pixels per module)."""

    def __init__(self, screen, symbol=None, scale=0):
        self.screen = screen
        self.qr = symbol
        self.scale = scale


def module_scale(size, width, height):
    """Pixels per module for a `size`-module symbol with a MIN_QUIET zone; 0 if it cannot fit."""
    return min(width, height) // (size + 2 * MIN_QUIET)


def max_version(width, height):
    """The largest QR version a width x height panel shows: at 1 pixel per module, and at most
    MAX_QR_VERSION (0: none)."""
    return max(0, min(MAX_QR_VERSION, (min(width, height) - 2 * MIN_QUIET - 17) // 4))


def wrap(text, columns):
    """Word-wrapped lines of at most `columns` characters; longer words are cut."""
    lines = []
    line = ""
    for word in text.split():
        while len(word) > columns:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:columns])
            word = word[columns:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= columns:
            line += " " + word
        elif word:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def fit_text(text, width, height, max_scale):
    """(scale, lines) for the largest text scale at which `text` fits width x height
    without cutting a word; at scale 1 words are cut and lines that do not fit dropped.
    None if not even one character fits."""
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    longest = max(len(word) for word in text.split()) if text.strip() else 0
    for scale in range(max_scale, 0, -1):
        columns = width // (8 * scale)
        rows = (height + _GAP) // (8 * scale + _GAP)
        if columns < 1 or rows < 1 or (scale > 1 and longest > columns):
            continue
        lines = wrap(text, columns)
        if len(lines) <= rows or scale == 1:
            return scale, lines[:rows]
    return None


class Renderer:
    def __init__(self, display, with_qr=True):
        """with_qr=False: status and result screens only (a unit in update mode), no heap taken for
        the QR encoder."""
        self.display = display
        self.width = display.width
        self.height = display.height
        self._glyph = bytearray(8)  # one character, MONO_HLSB, for scaled text
        self._glyph_fb = framebuf.FrameBuffer(self._glyph, 8, 8, framebuf.MONO_HLSB)
        most = max_version(self.width, self.height) if with_qr else 0
        self._workspace = None
        if most:
            global qr
            from firmware import qr

            # The encoder's buffers for the largest symbol this panel shows, taken now, while
            # the heap is whole, and reused by every QR screen.
            self._workspace = qr.Workspace(most)

    def largest_payload(self):
        """The most bytes a payment QR on this panel holds (at ECC L, 8-bit bytes)."""
        return qr.capacity(self._workspace.max_version, "L", "byte") if self._workspace else 0

    # ---- screens

    def payment(self, payload, caption=None, ecc="M"):
        """The payment QR for `payload`, with `caption` (amount, counter) where there is room."""
        return self._qr_screen("payment", payload, caption, ecc)

    def pairing(self, device_id, code, ecc="M"):
        """The pairing QR an unlinked unit shows, with its device id in text."""
        return self._qr_screen("pairing", pairing_uri(device_id, code), device_id, ecc)

    def status(self, state, detail=None):
        """unprovisioned / booting / wifi / bridge / clock / connecting / offline / ready /
        updating, with
        a detail such as the reason the unit is offline or the counter's name."""
        return self._message("status", _STATUS_TITLES, state, detail, False)

    def result(self, outcome, detail=None):
        """paid / cancelled / expired, the title in a dark band."""
        return self._message("result", _RESULT_TITLES, outcome, detail, True)

    # ---- QR screens

    def _qr_screen(self, screen, payload, caption, ecc):
        symbol = self._encode(payload, ecc)
        width, height = self.width, self.height
        scale = module_scale(symbol.size, width, height)
        # The box the symbol is centred in, and the strip left for the caption.
        box_w, box_h = width, height
        text = None
        if caption:
            footprint = (symbol.size + 2 * MIN_QUIET) * scale
            if width > height:
                strip = width - footprint
                text = fit_text(caption, strip, height, 2) if strip >= _MIN_STRIP else None
                if text:
                    box_w = footprint
            else:
                text = fit_text(caption, width, height - footprint, 2)
                if text:
                    box_h = height - _text_height(text)
        side = symbol.size * scale
        x = (box_w - side) // 2
        y = (box_h - side) // 2
        display = self.display
        display.fill(PAPER)
        self._draw_symbol(symbol, x, y, scale)
        if text:
            if box_w < width:
                self._lines(text, box_w, 0, width - box_w, height)
            else:
                self._lines(text, 0, box_h, width, height - box_h)
        display.show()
        return Drawn(screen, symbol, scale)

    def _encode(self, payload, ecc):
        """The symbol for `payload`, or PayloadTooLarge if this panel cannot show it."""
        if self._workspace is None:
            raise PayloadTooLarge(
                "a %dx%d display is too small for any QR code" % (self.width, self.height)
            )
        gc.collect()  # the payload's copies and segments need room: return the garbage first
        try:
            return qr.encode(payload, ecc, workspace=self._workspace)
        except qr.QRError:
            pass
        except MemoryError:
            raise PayloadTooLarge(
                "the QR for a payload of %d bytes needs more memory than this unit has free; "
                "shorten the payload" % _byte_length(payload)
            ) from None
        most = self._workspace.max_version
        raise PayloadTooLarge(
            "a payload of %d bytes does not fit %s at ECC %s: the largest it shows is %d bytes, "
            "%d alphanumeric characters or %d digits (QR version %d); shorten the payload or "
            "lower the ECC level"
            % (
                _byte_length(payload),
                "a %dx%d display" % (self.width, self.height),
                ecc,
                qr.capacity(most, ecc, "byte"),
                qr.capacity(most, ecc, "alphanumeric"),
                qr.capacity(most, ecc, "numeric"),
                most,
            )
        )

    def _draw_symbol(self, symbol, x0, y0, scale):
        """Dark modules as one fill_rect per horizontal run, read from the packed rows."""
        matrix = symbol.matrix
        size = symbol.size
        stride = (size + 7) >> 3
        fill_rect = self.display.fill_rect
        for row in range(size):
            base = row * stride
            y = y0 + row * scale
            start = -1
            for col in range(size + 1):
                dark = col < size and matrix[base + (col >> 3)] & (0x80 >> (col & 7))
                if dark:
                    if start < 0:
                        start = col
                elif start >= 0:
                    fill_rect(x0 + start * scale, y, (col - start) * scale, scale, INK)
                    start = -1

    # ---- text screens

    def _message(self, screen, titles, name, detail, band):
        if name not in titles:
            raise ValueError(
                "unknown %s %r: use one of %s" % (screen, name, ", ".join(sorted(titles)))
            )
        width, height = self.width, self.height
        title = fit_text(titles[name], width - 2 * _PAD, height // 2, 4)
        title_h = _text_height(title)
        body = None
        if detail:
            body = fit_text(detail, width - 2 * _PAD, height - title_h - 2 * _PAD, 2)
        body_h = _text_height(body) + 2 * _PAD if body else 0
        y = (height - title_h - body_h) // 2
        display = self.display
        display.fill(PAPER)
        if band:
            display.fill_rect(0, y - _PAD, width, title_h + 2 * _PAD, INK)
        self._lines(title, 0, y, width, title_h, PAPER if band else INK)
        if body:
            self._lines(body, 0, y + title_h + 2 * _PAD, width, body_h - 2 * _PAD)
        display.show()
        return Drawn(screen)

    # ---- text

    def _lines(self, text, x, y, width, height, colour=INK):
        """Lines of a fit_text() result, each centred in the width x height box."""
        scale, lines = text
        line_h = 8 * scale + _GAP
        y += (height - _text_height(text)) // 2
        for line in lines:
            self._text(line, x + (width - len(line) * 8 * scale) // 2, y, scale, colour)
            y += line_h

    def _text(self, line, x, y, scale, colour):
        display = self.display
        if scale == 1:
            display.text(line, x, y, colour)
            return
        glyph, fill_rect = self._glyph, display.fill_rect
        for ch in line:
            self._glyph_fb.fill(0)
            self._glyph_fb.text(ch, 0, 0, 1)
            for row in range(8):
                bits = glyph[row]
                col = 0
                while bits:
                    if bits & 0x80:
                        run = 0
                        while bits & 0x80:
                            run += 1
                            bits = (bits << 1) & 0xFF
                        fill_rect(x + (col * scale), y + row * scale, run * scale, scale, colour)
                        col += run
                    else:
                        bits = (bits << 1) & 0xFF
                        col += 1
            x += 8 * scale


def _byte_length(payload):
    return len(utf8(payload) if isinstance(payload, str) else payload)


def _text_height(text):
    scale, lines = text
    return len(lines) * (8 * scale + _GAP) - _GAP
