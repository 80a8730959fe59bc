"""The ESP32 flash layout as MicroPython builds use it: partition tables, the `vfs` partition a
unit mounts, and the OTA data that decides which app boots.

One owner for these facts, because three parts must agree on them: the field tools (where
to write a filesystem on a unit), the virtual board's supervisor (what its ROM and bootloader
boot) and the virtual board's `esp32` module (what `esp32.Partition` answers). The module
runs on CPython and on the MicroPython Unix port, so it uses only struct, hashlib and
binascii, and every function is pure: bytes in, records or bytes out.

Sources: ESP-IDF `esp_flash_partitions.h` (table and OTA entry formats),
`bootloader_utility.c` (boot selection with rollback), `esp_ota_ops.c` (set_boot, mark
valid); MicroPython `ports/esp32/partitions-*.csv` and `main.c` (the runtime `vfs` rule).
"""

import binascii
import hashlib
import struct

SECTOR = 4096
BOOTLOADER_OFFSET = 0x1000  # where the ROM loads the second-stage bootloader from
TABLE_OFFSET = 0x8000
TABLE_SIZE = 0xC00  # the bootloader reads at most this much of the table sector

TYPE_APP = 0x00
TYPE_DATA = 0x01
SUBTYPE_FACTORY = 0x00
SUBTYPE_OTA_0 = 0x10  # ota_N is 0x10 + N, up to ota_15
SUBTYPE_OTA_DATA = 0x00
SUBTYPE_PHY = 0x01
SUBTYPE_NVS = 0x02
SUBTYPE_FAT = 0x81
SUBTYPE_ANY = 0xFF

_ENTRY = "<2sBBII16sI"  # magic, type, subtype, offset, size, label, flags
_ENTRY_SIZE = 32
_ENTRY_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb"


class LayoutError(ValueError):
    """The flash holds no usable partition table, or no room for a filesystem."""


class Partition:
    def __init__(self, label, type, subtype, offset, size, flags=0):
        self.label = label
        self.type = type
        self.subtype = subtype
        self.offset = offset
        self.size = size
        self.flags = flags

    @property
    def end(self):
        return self.offset + self.size

    def __eq__(self, other):
        return isinstance(other, Partition) and self.key() == other.key()

    def key(self):
        return (self.label, self.type, self.subtype, self.offset, self.size)

    def __repr__(self):
        return "Partition({!r}, 0x{:02x}, 0x{:02x}, 0x{:x}, 0x{:x})".format(*self.key())


def _p(label, type, subtype, offset, size):
    return Partition(label, type, subtype, offset, size)


# MicroPython 1.26 and newer, ESP32_GENERIC: partitions-4MiBplus.csv (no `vfs`: main.c
# registers it at boot from the end of `factory` to the end of the flash it detects).
GENERIC = (
    _p("nvs", TYPE_DATA, SUBTYPE_NVS, 0x9000, 0x6000),
    _p("phy_init", TYPE_DATA, SUBTYPE_PHY, 0xF000, 0x1000),
    _p("factory", TYPE_APP, SUBTYPE_FACTORY, 0x10000, 0x1F0000),
)
# ESP32_GENERIC-OTA: partitions-4MiB-ota.csv.
GENERIC_OTA = (
    _p("nvs", TYPE_DATA, SUBTYPE_NVS, 0x9000, 0x4000),
    _p("otadata", TYPE_DATA, SUBTYPE_OTA_DATA, 0xD000, 0x2000),
    _p("phy_init", TYPE_DATA, SUBTYPE_PHY, 0xF000, 0x1000),
    _p("ota_0", TYPE_APP, SUBTYPE_OTA_0, 0x10000, 0x180000),
    _p("ota_1", TYPE_APP, SUBTYPE_OTA_0 + 1, 0x190000, 0x180000),
)
# Before 1.26 (partitions-4MiB.csv): the same, with `vfs` in the table.
LEGACY_GENERIC = GENERIC + (_p("vfs", TYPE_DATA, SUBTYPE_FAT, 0x200000, 0x200000),)

VARIANTS = {"generic": GENERIC, "ota": GENERIC_OTA}
FLASH_SIZES = {"4MB": 4 << 20, "8MB": 8 << 20, "16MB": 16 << 20}


def build_table(partitions):
    """The binary table as the ESP-IDF bootloader reads it: entries, an MD5 entry, 0xFF."""
    entries = b"".join(
        struct.pack(
            _ENTRY, _ENTRY_MAGIC, p.type, p.subtype, p.offset, p.size, p.label.encode(), p.flags
        )
        for p in partitions
    )
    md5 = _MD5_MAGIC + b"\xff" * 14 + hashlib.md5(entries).digest()
    table = entries + md5
    return table + b"\xff" * (TABLE_SIZE - len(table))


def parse_table(data):
    """Partitions in table order; LayoutError when `data` holds no table or a damaged one."""
    found = []
    pos = 0
    while pos + _ENTRY_SIZE <= min(len(data), TABLE_SIZE):
        magic, ptype, subtype, offset, size, label, flags = struct.unpack_from(_ENTRY, data, pos)
        if magic == _MD5_MAGIC:
            if hashlib.md5(data[:pos]).digest() != bytes(data[pos + 16 : pos + 32]):
                raise LayoutError("the partition table at 0x8000 fails its MD5 check")
            break
        if magic != _ENTRY_MAGIC:
            break
        label = bytes(label).split(b"\x00")[0].decode()
        found.append(Partition(label, ptype, subtype, offset, size, flags))
        pos += _ENTRY_SIZE
    if not found:
        raise LayoutError("no partition table at 0x8000: flash a MicroPython build for ESP32 first")
    return found


def find(partitions, type=None, subtype=SUBTYPE_ANY, label=None):
    """Like esp_partition_find: matching partitions in table order."""
    return [
        p
        for p in partitions
        if (type is None or p.type == type)
        and (subtype == SUBTYPE_ANY or p.subtype == subtype)
        and (label is None or p.label == label)
    ]


def vfs_partition(partitions, flash_size):
    """The filesystem partition MicroPython mounts, as ports/esp32/main.c finds it: a data
    partition labelled `vfs` (or TinyUF2's `ffat`) if the table has one; otherwise one it
    registers at boot, from the end of the last partition to the end of the flash. None when
    no flash is left over (a 2 MiB unit with a 1.26+ table)."""
    for label in ("vfs", "ffat"):
        named = find(partitions, TYPE_DATA, label=label)
        if named:
            return named[0]
    end = max(p.end for p in partitions)
    if flash_size <= end:
        return None
    return Partition("vfs", TYPE_DATA, SUBTYPE_FAT, end, flash_size - end)


def check_fits(partitions, flash_size):
    beyond = [p.label for p in partitions if p.end > flash_size]
    if beyond:
        raise LayoutError(
            "partitions {} end beyond the {} MiB flash".format(", ".join(beyond), flash_size >> 20)
        )


# -- OTA data: two 32-byte entries, one per sector of the `otadata` partition

OTA_NEW = 0
OTA_PENDING_VERIFY = 1
OTA_VALID = 2
OTA_INVALID = 3
OTA_ABORTED = 4
OTA_UNDEFINED = 0xFFFFFFFF

_OTA_ENTRY = "<I20sII"  # ota_seq, seq_label, ota_state, crc of ota_seq


def ota_entry(seq, state):
    return struct.pack(_OTA_ENTRY, seq, b"\xff" * 20, state, _seq_crc(seq))


def _seq_crc(seq):
    # esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4)
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF


def read_ota(otadata):
    """The two entries as [(seq, state)], None for an entry the bootloader would not use."""
    entries = []
    for i in (0, 1):
        seq, _label, state, crc = struct.unpack_from(_OTA_ENTRY, otadata, i * SECTOR)
        usable = (
            seq != 0xFFFFFFFF and state not in (OTA_INVALID, OTA_ABORTED) and crc == _seq_crc(seq)
        )
        entries.append((seq, state) if usable else None)
    return entries


def _active(entries):
    """Index of the entry in force (the higher sequence), or None."""
    best = None
    for i, entry in enumerate(entries):
        if entry is not None and (best is None or entry[0] > entries[best][0]):
            best = i
    return best


class Boot:
    """What the second-stage bootloader decided: the app partitions to try in order, the OTA
    data it rewrites before trying them, and what it records once the first one boots. A
    write is (entry index, 32 bytes): erase that entry's sector, then write the entry."""

    def __init__(self, candidates, writes, on_first_boot=()):
        self.candidates = candidates
        self.writes = writes
        self.on_first_boot = list(on_first_boot)


def select_boot(partitions, otadata):
    """Boot selection with rollback enabled (MicroPython's sdkconfig.base turns it on).

    An app that booted as PENDING_VERIFY and did not mark itself valid before this reset is
    ABORTED, so the other slot boots; a NEW app becomes PENDING_VERIFY for this boot."""
    apps = find(partitions, TYPE_APP)
    slots = [p for p in apps if p.subtype != SUBTYPE_FACTORY]
    factory = [p for p in apps if p.subtype == SUBTYPE_FACTORY]
    if not slots or otadata is None:
        return Boot(factory + slots, [])
    writes = []
    entries = read_ota(otadata)
    for i, entry in enumerate(entries):
        if entry is not None and entry[1] == OTA_PENDING_VERIFY:
            writes.append((i, ota_entry(entry[0], OTA_ABORTED)))
            entries[i] = None
    active = _active(entries)
    if active is None:
        if factory:
            return Boot(factory + slots, writes)
        # No factory app: ota_0 first, and once it boots it is recorded as the valid one.
        return Boot(slots, writes, [(0, ota_entry(1, OTA_VALID))])
    seq, state = entries[active]
    if state == OTA_NEW:
        writes.append((active, ota_entry(seq, OTA_PENDING_VERIFY)))
    chosen = slots[(seq - 1) % len(slots)]
    others = [p for p in slots if p is not chosen]
    return Boot([chosen] + factory + others, writes)


def set_boot_writes(partitions, otadata, target):
    """The OTA data write that makes `target` boot next (esp_ota_set_boot_partition), as
    [(index, 32 bytes)]: a new sequence number in the entry not in force, state NEW."""
    slots = [p for p in find(partitions, TYPE_APP) if p.subtype != SUBTYPE_FACTORY]
    if target.subtype == SUBTYPE_FACTORY:
        return [(0, b"\xff" * 32), (1, b"\xff" * 32)]  # erased otadata: the factory app boots
    n = len(slots)
    wanted = slots.index(target)
    entries = read_ota(otadata)
    active = _active(entries)
    if active is None:
        return [(0, ota_entry(wanted + 1, OTA_NEW))]
    seq = entries[active][0]
    i = 0
    while seq > (wanted + 1) % n + i * n:
        i += 1
    new_seq = (wanted + 1) % n + i * n
    return [(1 - active, ota_entry(new_seq, OTA_NEW))]


def mark_valid_writes(otadata):
    """The write that cancels rollback for the running app, or [] when there is nothing to do."""
    entries = read_ota(otadata)
    active = _active(entries)
    if active is None or entries[active][1] == OTA_VALID:
        return []
    return [(active, ota_entry(entries[active][0], OTA_VALID))]


def next_update(partitions, running):
    """The OTA slot after `running` (esp_ota_get_next_update_partition), or None."""
    slots = [p for p in find(partitions, TYPE_APP) if p.subtype != SUBTYPE_FACTORY]
    if not slots:
        return None
    if running not in slots:
        return slots[0]
    return slots[(slots.index(running) + 1) % len(slots)]
