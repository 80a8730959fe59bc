"""A unit's screen as the dashboard shows it: an SVG drawn from what the unit last verified.

`Device.shown` keeps enough to draw a screen again: a QR's text with the ECC level, version
and mask the unit reported, so re-encoding it with that version and mask gives the very symbol
the unit drew and the server checked (not merely one that reads the same). Results and status
screens are text. The picture is the unit's screen in content, not pixel for pixel: one
portrait layout for every panel, the QR with a quiet zone of QUIET modules and its caption
below, the title of a result in a dark band as the unit draws it.

The SVG keeps to a few plain shapes: `rect`s, one `path` of dark module runs
(`M x y h w v m h -w z` each, whole pixels) and `text`. Every text is escaped.
"""

import textwrap
from collections import OrderedDict
from html import escape

from firmware import qr

WIDTH, HEIGHT = 240, 290
QR_BOX = WIDTH  # the square the symbol is centred in; the caption goes below it
QUIET = 4  # modules of light margin around the symbol, as the QR spec asks
INK, PAPER = "#000", "#fff"
_CAPTION_COLUMNS = 24  # characters per caption line at _CAPTION_PX
_CAPTION_PX = 15
CACHED_SYMBOLS = 256
RESULT_TITLES = {"paid": "PAID", "cancelled": "CANCELLED", "expired": "EXPIRED"}
STATUS_TITLES = {"ready": "Ready"}

# Re-encoding a verified symbol takes a few ms at the largest version a unit shows; the same
# screen is asked for by every open dashboard, so the module runs are kept.
_runs_cache = OrderedDict()


def describe(shown, online=True):
    """The screen in words, for an image's alt text (static/dashboard.js says it the same way)."""
    kind = (shown or {}).get("screen")
    if kind == "payment":
        caption = shown.get("caption")
        text = f"Payment QR: {caption}" if caption else "Payment QR"
    elif kind == "pairing":
        text = "Pairing QR"
    elif kind == "result":
        text = "Result: " + RESULT_TITLES.get(shown.get("result"), str(shown.get("result")))
    elif kind == "status":
        title = STATUS_TITLES.get(shown.get("state"), str(shown.get("state")))
        text = f"{title}: {shown['detail']}" if shown.get("detail") else title
    elif kind:
        text = f"Screen {kind}"
    else:
        text = "No screen reported"
    return text if online else f"{text} (offline)"


def screen_svg(shown, online=True):
    """The SVG (bytes) of the screen `shown` (Device.shown, or None: nothing reported yet),
    dimmed and marked "offline" when the unit is not online."""
    shown = shown or {}
    kind = shown.get("screen")
    parts = [_rect(0, 0, WIDTH, HEIGHT, PAPER)]
    if kind == "payment":
        parts += _qr_screen(shown.get("payload"), shown, shown.get("caption"))
    elif kind == "pairing":
        parts += _qr_screen(shown.get("uri"), shown, _device_of(shown.get("uri")))
    elif kind == "result":
        title = RESULT_TITLES.get(shown.get("result"), str(shown.get("result", "")).upper())
        parts += [_rect(0, HEIGHT // 2 - 34, WIDTH, 68, INK), _text(title, HEIGHT // 2, 30, PAPER)]
    elif kind == "status":
        parts.append(_text(STATUS_TITLES.get(shown.get("state"), str(shown.get("state"))), 120, 32))
        parts += _lines(shown.get("detail"), 160)
    else:
        parts += _lines(f"Screen {kind}" if kind else "No screen reported", HEIGHT // 2)
    if not online:
        parts += [
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="{PAPER}" fill-opacity="0.6"/>',
            _rect(0, HEIGHT - 44, WIDTH, 44, "#444"),
            _text("offline", HEIGHT - 15, 22, PAPER),
        ]
    title = escape(describe(shown, online))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" shape-rendering="crispEdges">'
        f"<title>{title}</title>{''.join(parts)}</svg>"
    ).encode()


def _qr_screen(data, shown, caption):
    try:
        size, runs = _module_runs(
            data, shown.get("ecc") or "M", shown.get("version"), shown.get("mask")
        )
    except (qr.QRError, TypeError, ValueError):
        return _lines("The QR the unit reported cannot be drawn again.", QR_BOX // 2)
    module = max(1, QR_BOX // (size + 2 * QUIET))
    x0 = y0 = (QR_BOX - size * module) // 2
    d = "".join(
        f"M{x0 + col * module} {y0 + row * module}h{run * module}v{module}h-{run * module}z"
        for row, col, run in runs
    )
    return [f'<path fill="{INK}" d="{d}"/>', *_lines(caption, QR_BOX + 18, _CAPTION_PX, 2)]


def _module_runs(data, ecc, version, mask):
    """(size, [(row, column, length) of each horizontal run of dark modules])."""
    if not isinstance(data, str) or not data:
        raise ValueError("no QR text")
    key = (data, ecc, version, mask)
    cached = _runs_cache.get(key)
    if cached is None:
        symbol = qr.encode(data, ecc, version=version, mask=mask)
        runs = []
        for row in range(symbol.size):
            start = None
            for col in range(symbol.size + 1):
                dark = col < symbol.size and symbol.module(col, row)
                if dark and start is None:
                    start = col
                elif not dark and start is not None:
                    runs.append((row, start, col - start))
                    start = None
        cached = _runs_cache[key] = (symbol.size, runs)
        if len(_runs_cache) > CACHED_SYMBOLS:
            _runs_cache.popitem(last=False)
    _runs_cache.move_to_end(key)
    return cached


def _device_of(uri):
    """The device id in a pairing URI, the caption a unit shows under its pairing QR."""
    _, found, rest = (uri or "").partition("device=")
    return rest.partition("&")[0] if found else None


def _lines(text, y, px=16, most=3):
    """`text` wrapped into at most `most` centred lines, the first on baseline `y`."""
    if not text:
        return []
    columns = _CAPTION_COLUMNS * _CAPTION_PX // px
    lines = textwrap.wrap(str(text), columns)
    if len(lines) > most:  # the whole text is in the image's alt text and on the unit's page
        lines = lines[:most]
        lines[-1] = lines[-1][: columns - 1] + "…"
    return [_text(line, y + i * (px + 4), px) for i, line in enumerate(lines)]


def _rect(x, y, width, height, fill):
    return f'<rect x="{x}" y="{y}" width="{width}" height="{height}" fill="{fill}"/>'


def _text(text, y, px, fill=INK):
    return (
        f'<text x="{WIDTH // 2}" y="{y}" font-family="monospace" font-size="{px}" '
        f'font-weight="bold" text-anchor="middle" fill="{fill}">{escape(text)}</text>'
    )
