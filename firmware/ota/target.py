"""Which units a release is for: the board and MicroPython version of this unit, and the check of
a manifest's "boards" and "micropython" against them. Kept apart from firmware/ota/manifest.py
(the format's every check, run where releases are built and published) so a unit loads only this.
"""

import sys

# sys.implementation._mpy >> 10 & 0xF: the native code architecture of the .mpy files it loads.
BOARDS = {10: "esp32", 2: "virtual"}  # xtensawin, x64


def board():
    """This interpreter's board name ("esp32", "virtual"), from the architecture of the native
    code it loads; None where it has none a release is built for (CPython has no _mpy)."""
    mpy = getattr(sys.implementation, "_mpy", None)
    if mpy is None:
        return None
    return BOARDS.get(mpy >> 10 & 0xF)


def mismatch(manifest, board, micropython):
    """Why the release of `manifest` does not run on `board` under MicroPython `micropython`
    (sys.implementation.version: a tuple, major and minor first), or None when it does."""
    if board not in manifest["boards"]:
        return "release %s is for %s, this unit is %s" % (
            manifest["version"],
            ", ".join(manifest["boards"]),
            board or "of no known board",
        )
    running = "%d.%d" % (micropython[0], micropython[1])
    if running not in manifest["micropython"]:
        return "release %s runs on MicroPython %s, this unit runs %s" % (
            manifest["version"],
            ", ".join(manifest["micropython"]),
            running,
        )
    return None
