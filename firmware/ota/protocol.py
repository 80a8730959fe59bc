"""The update commands' fields (docs/updates.md), in firmware.proto.messages' terms. The tables
are added to SERVER_MESSAGES the first time an update command is encoded or decoded: a unit
that is not updating keeps their heap for its QRs. Position `file` 0 is the manifest, 1.. its
files (firmware/ota/update.py).
"""

from firmware.compat import const
from firmware.proto.messages import _ID, _MAX_ID, _REQUIRED, _count, _hex, _text

MAX_MANIFEST = const(16384)  # an update's manifest, sent in chunks like its files


def add_to(table):
    table["update_offer"] = (
        ("id", _ID, _REQUIRED),
        ("version", _text(1, 32), _REQUIRED),
        ("size", _count(1, MAX_MANIFEST), _REQUIRED),
        ("sig", _hex(128), _REQUIRED),
        ("min_free", _count(0, _MAX_ID), _REQUIRED),  # as the manifest says
    )
    table["update_chunk"] = (
        ("id", _ID, _REQUIRED),
        ("file", _count(0, 0xFFFF), _REQUIRED),
        ("offset", _count(0, _MAX_ID), _REQUIRED),
        ("data", _text(4, 4096), _REQUIRED),  # base64, as much as the unit's message takes
    )
    table["update_switch"] = (("id", _ID, _REQUIRED),)
    table["update_commit"] = (("id", _ID, _REQUIRED),)
