# esp32, as the ESP32 port has it (ports/esp32/esp32_partition.c, esp32_nvs.c), over the
# board's flash image. Layout facts (the table, the runtime `vfs`, OTA data) come from
# tools/partitions.py, which the supervisor's bootloader uses too. Errors take the port's
# forms: OSError(-code, "ESP_ERR_...") from ESP-IDF, OSError(ENOENT) for a missing partition.

import errno
import struct

import link
import partitions as _layout

_SECTOR = _layout.SECTOR
_FLASH_SIZE = link.flash.seek(0, 2)


def _esp_error(code, name):
    return OSError(-code, name)


def _read(offset, buf):
    link.flash.seek(offset)
    link.flash.readinto(buf)


def _write(offset, data):
    link.flash.seek(offset)
    link.flash.write(data)


_ERASED = b"\xff" * 256


def _erase(offset, length):
    for at in range(offset, offset + length, len(_ERASED)):
        _write(at, _ERASED)


def _load_table():
    table = bytearray(_layout.TABLE_SIZE)
    _read(_layout.TABLE_OFFSET, table)
    found = _layout.parse_table(table)
    # ports/esp32/main.c registers `vfs` after the table's partitions when the table has none.
    vfs = _layout.vfs_partition(found, _FLASH_SIZE)
    if vfs is not None and vfs not in found:
        found.append(vfs)
    return found


_table = _load_table()


# The two OTA entries where tools/partitions.py reads them (one at the start of each sector),
# read into one buffer for good: on a unit this is the IDF's memory, not MicroPython's heap.
_ota = bytearray(_SECTOR + 32)


def _otadata():
    """The otadata partition and its two entries, or (None, None)."""
    found = _layout.find(_table, _layout.TYPE_DATA, _layout.SUBTYPE_OTA_DATA)
    if not found:
        return None, None
    entries = memoryview(_ota)
    _read(found[0].offset, entries[:32])
    _read(found[0].offset + _SECTOR, entries[_SECTOR:])
    return found[0], _ota


def _write_ota(otadata, writes):
    for index, entry in writes:
        _erase(otadata.offset + index * _SECTOR, _SECTOR)
        _write(otadata.offset + index * _SECTOR, entry)


def _slots():
    apps = _layout.find(_table, _layout.TYPE_APP)
    return [p for p in apps if p.subtype != _layout.SUBTYPE_FACTORY]


def _boot_partition():
    """esp_ota_get_boot_partition: the slot the OTA data names, else the factory app."""
    otadata, data = _otadata()
    if otadata is None:
        return None
    entries = [e for e in _layout.read_ota(data) if e is not None]
    slots = _slots()
    if entries and slots:
        seq = max(e[0] for e in entries)
        return slots[(seq - 1) % len(slots)]
    factory = _layout.find(_table, _layout.TYPE_APP, _layout.SUBTYPE_FACTORY)
    return factory[0] if factory else None


def _running_partition():
    """The app the supervisor's bootloader started."""
    for p in _layout.find(_table, _layout.TYPE_APP):
        if p.offset == link.RUNNING_APP:
            return p
    return None


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = _layout.TYPE_APP
    TYPE_DATA = _layout.TYPE_DATA

    def __init__(self, id, block_size=4096):
        if isinstance(id, _layout.Partition):  # from find()
            part = id
        elif isinstance(id, str):
            part = _first(_layout.TYPE_APP, id) or _first(_layout.TYPE_DATA, id)
        elif id == Partition.BOOT:
            part = _boot_partition()
        elif id == Partition.RUNNING:
            part = _running_partition()
        else:
            raise ValueError
        if part is None:
            raise OSError(errno.ENOENT)
        self._part = part
        self._block_size = block_size

    @staticmethod
    def find(type=_layout.TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        found = _layout.find(_table, type, subtype, label)
        return [Partition(p, block_size) for p in found]

    def info(self):
        p = self._part
        return (p.type, p.subtype, p.offset, p.size, p.label, False)

    def __repr__(self):
        p = self._part
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=0>" % (
            p.type,
            p.subtype,
            p.offset,
            p.size,
            p.label,
        )

    def _check(self, offset, length):
        """esp_partition_read/write bounds."""
        if offset > self._part.size:
            raise _esp_error(0x102, "ESP_ERR_INVALID_ARG")
        if length > self._part.size - offset:
            raise _esp_error(0x104, "ESP_ERR_INVALID_SIZE")

    def _erase_range(self, offset, length):
        """esp_partition_erase_range: whole 4096-byte sectors only."""
        self._check(offset, length)
        if length % _SECTOR:
            raise _esp_error(0x104, "ESP_ERR_INVALID_SIZE")
        if offset % _SECTOR:
            raise _esp_error(0x102, "ESP_ERR_INVALID_ARG")
        _erase(self._part.offset + offset, length)

    def readblocks(self, block_num, buf, offset=0):
        at = block_num * self._block_size + offset
        self._check(at, len(buf))
        _read(self._part.offset + at, buf)

    def writeblocks(self, block_num, buf, offset=None):
        at = block_num * self._block_size
        if offset is not None:  # the extended interface: a plain write, the caller erased
            at += offset
        elif self._block_size >= _SECTOR:  # erase what is written, then write
            self._erase_range(at, len(buf))
        else:  # smaller blocks: read-modify-erase-write each sector they fall in
            self._check(at, len(buf))
            sector = bytearray(_SECTOR)
            done = 0
            while done < len(buf):
                start = (at + done) // _SECTOR * _SECTOR
                within = at + done - start
                n = min(_SECTOR - within, len(buf) - done)
                _read(self._part.offset + start, sector)
                sector[within : within + n] = buf[done : done + n]
                self._erase_range(start, _SECTOR)
                _write(self._part.offset + start, sector)
                done += n
            return
        self._check(at, len(buf))
        _write(self._part.offset + at, buf)

    def ioctl(self, cmd, arg):
        if cmd in (1, 2, 3):  # init, deinit, sync
            return 0
        if cmd == 4:
            return self._part.size // self._block_size
        if cmd == 5:
            return self._block_size
        if cmd == 6:
            if self._block_size != _SECTOR:
                return -errno.EINVAL
            self._erase_range(arg * _SECTOR, _SECTOR)
            return 0
        return None

    def set_boot(self):
        """esp_ota_set_boot_partition: the image is checked, then the OTA data points at it."""
        magic = bytearray(1)
        _read(self._part.offset, magic)
        if self._part.type != _layout.TYPE_APP or magic[0] != 0xE9:
            raise _esp_error(0x1503, "ESP_ERR_OTA_VALIDATE_FAILED")
        otadata, data = _otadata()
        if otadata is None:
            raise _esp_error(0x105, "ESP_ERR_NOT_FOUND")
        _write_ota(otadata, _layout.set_boot_writes(_table, data, self._part))

    def get_next_update(self):
        part = _layout.next_update(_table, self._part)
        if part is None:
            raise OSError(errno.ENOENT)
        return Partition(part)

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        otadata, data = _otadata()
        if otadata is None:
            raise _esp_error(0x105, "ESP_ERR_NOT_FOUND")
        if all(e is None for e in _layout.read_ota(data)):
            raise OSError(1, "ESP_FAIL")  # "Running firmware is factory"
        _write_ota(otadata, _layout.mark_valid_writes(data))


def _first(type, label):
    found = _layout.find(_table, type, _layout.SUBTYPE_ANY, label)
    return found[0] if found else None


# -- NVS ------------------------------------------------------------------------------------
#
# The esp32.NVS interface of ports/esp32/esp32_nvs.c, kept in the flash's `nvs` partition, so
# it lasts as long as the flash and `esptool erase-flash` wipes it. The format is this board's,
# not ESP-IDF's: two sectors written in turn, each {magic, sequence, length, CRC} and the
# records, so that a power cut mid-write leaves the previous copy. A record is {kind (1: i32,
# 2: blob), namespace length, key length, value length} and the three byte strings. Changes are
# kept until commit().

_NVS_MAGIC = b"QNV1"
_NVS_HEADER = "<4sIII"  # magic, sequence, length, crc32 of the records
_NVS_RECORD = "<BBBH"
_I32, _BLOB = 1, 2
_NAME_MAX = 15  # NVS_KEY_NAME_MAX_SIZE - 1
_nvs = None  # {(namespace, key): (kind, bytes)}, loaded on first use
_nvs_seq = 0


def _nvs_partition():
    found = _layout.find(_table, _layout.TYPE_DATA, _layout.SUBTYPE_NVS)
    if not found:
        raise _esp_error(0x110F, "ESP_ERR_NVS_PART_NOT_FOUND")
    return found[0]


def _nvs_load():
    import binascii

    global _nvs, _nvs_seq
    part = _nvs_partition()
    _nvs, best = {}, None
    header = bytearray(struct.calcsize(_NVS_HEADER))
    for copy in (0, 1):
        _read(part.offset + copy * _SECTOR, header)
        magic, seq, length, crc = struct.unpack(_NVS_HEADER, header)
        if magic != _NVS_MAGIC or length > _SECTOR - len(header):
            continue
        records = bytearray(length)
        _read(part.offset + copy * _SECTOR + len(header), records)
        if binascii.crc32(records) == crc and (best is None or seq > best[0]):
            best = (seq, records)
    if best is None:
        return
    _nvs_seq, records = best
    pos = 0
    while pos < len(records):
        kind, ns_len, key_len, value_len = struct.unpack_from(_NVS_RECORD, records, pos)
        pos += struct.calcsize(_NVS_RECORD)
        namespace = bytes(records[pos : pos + ns_len]).decode()
        key = bytes(records[pos + ns_len : pos + ns_len + key_len]).decode()
        pos += ns_len + key_len
        _nvs[(namespace, key)] = (kind, bytes(records[pos : pos + value_len]))
        pos += value_len


def _nvs_store():
    import binascii

    global _nvs_seq
    part = _nvs_partition()
    records = bytearray()
    for (namespace, key), (kind, value) in _nvs.items():
        records += struct.pack(_NVS_RECORD, kind, len(namespace), len(key), len(value))
        records += namespace.encode() + key.encode() + value
    header_size = struct.calcsize(_NVS_HEADER)
    if header_size + len(records) > _SECTOR:
        raise _esp_error(0x1105, "ESP_ERR_NVS_NOT_ENOUGH_SPACE")
    _nvs_seq += 1
    copy = part.offset + (_nvs_seq % 2) * _SECTOR
    _erase(copy, _SECTOR)
    _write(
        copy,
        struct.pack(_NVS_HEADER, _NVS_MAGIC, _nvs_seq, len(records), binascii.crc32(records))
        + records,
    )


class NVS:
    def __init__(self, namespace):
        if len(namespace) > _NAME_MAX:
            raise _esp_error(0x1106, "ESP_ERR_NVS_INVALID_NAME")
        if _nvs is None:
            _nvs_load()
        self._namespace = namespace

    def _get(self, key, kind):
        found = _nvs.get((self._namespace, key))
        if found is None or found[0] != kind:
            raise _esp_error(0x1102, "ESP_ERR_NVS_NOT_FOUND")
        return found[1]

    def _set(self, key, kind, value):
        if len(key) > _NAME_MAX:
            raise _esp_error(0x1109, "ESP_ERR_NVS_KEY_TOO_LONG")
        _nvs[(self._namespace, key)] = (kind, value)

    def set_i32(self, key, value):
        self._set(key, _I32, struct.pack("<i", value))

    def get_i32(self, key):
        return struct.unpack("<i", self._get(key, _I32))[0]

    def set_blob(self, key, value):
        self._set(key, _BLOB, bytes(value))

    def get_blob(self, key, buffer):
        value = self._get(key, _BLOB)
        if len(value) > len(buffer):
            raise _esp_error(0x110C, "ESP_ERR_NVS_INVALID_LENGTH")
        buffer[: len(value)] = value
        return len(value)

    def erase_key(self, key):
        if (self._namespace, key) not in _nvs:
            raise _esp_error(0x1102, "ESP_ERR_NVS_NOT_FOUND")
        del _nvs[(self._namespace, key)]

    def commit(self):
        _nvs_store()
