"""The flash layout the field tools and the virtual board share: tables as MicroPython ships
them, the `vfs` partition a unit mounts, and OTA boot selection with rollback."""

import pytest

from tools import partitions as P

MiB = 1 << 20


def blank_otadata():
    return bytearray(b"\xff" * 2 * P.SECTOR)


def apply(otadata, writes):
    for index, entry in writes:
        otadata[index * P.SECTOR : (index + 1) * P.SECTOR] = entry.ljust(P.SECTOR, b"\xff")


def test_a_table_reads_back_as_written():
    assert P.parse_table(P.build_table(P.GENERIC_OTA)) == list(P.GENERIC_OTA)


def test_a_damaged_table_fails_its_md5_check():
    table = bytearray(P.build_table(P.GENERIC))
    table[8] ^= 1  # the factory app's offset
    with pytest.raises(P.LayoutError, match="MD5"):
        P.parse_table(table)


def test_erased_flash_has_no_table_and_says_what_to_flash():
    with pytest.raises(P.LayoutError, match="flash a MicroPython build"):
        P.parse_table(b"\xff" * P.TABLE_SIZE)


@pytest.mark.parametrize(
    ("table", "flash", "expected"),
    [
        (P.GENERIC, 4 * MiB, (0x200000, 0x200000)),
        (P.GENERIC, 8 * MiB, (0x200000, 0x600000)),
        (P.GENERIC, 16 * MiB, (0x200000, 0xE00000)),
        (P.GENERIC_OTA, 4 * MiB, (0x310000, 0xF0000)),
        (P.LEGACY_GENERIC, 8 * MiB, (0x200000, 0x200000)),  # the table's own, not the rest
    ],
)
def test_the_vfs_partition_is_found_as_micropython_finds_it(table, flash, expected):
    vfs = P.vfs_partition(list(table), flash)
    assert (vfs.label, vfs.type, vfs.subtype, vfs.offset, vfs.size) == ("vfs", 1, 0x81, *expected)


def test_a_unit_with_no_flash_left_over_has_no_vfs():
    assert P.vfs_partition(list(P.GENERIC), 2 * MiB) is None


def test_a_fresh_ota_unit_boots_ota_0_and_records_it_as_valid():
    otadata = blank_otadata()
    boot = P.select_boot(P.GENERIC_OTA, bytes(otadata))
    assert [p.label for p in boot.candidates] == ["ota_0", "ota_1"]
    apply(otadata, boot.on_first_boot)
    assert P.read_ota(otadata) == [(1, P.OTA_VALID), None]


def test_a_new_app_boots_once_and_is_rolled_back_unless_marked_valid():
    parts = list(P.GENERIC_OTA)
    otadata = blank_otadata()
    apply(otadata, P.select_boot(parts, bytes(otadata)).on_first_boot)
    apply(otadata, P.set_boot_writes(parts, bytes(otadata), P.next_update(parts, parts[3])))

    trial = P.select_boot(parts, bytes(otadata))
    assert trial.candidates[0].label == "ota_1"
    apply(otadata, trial.writes)
    assert P.read_ota(otadata) == [(1, P.OTA_VALID), (2, P.OTA_PENDING_VERIFY)]

    rolled_back = P.select_boot(parts, bytes(otadata))  # reset without marking it valid
    assert rolled_back.candidates[0].label == "ota_0"
    apply(otadata, rolled_back.writes)
    assert P.read_ota(otadata) == [(1, P.OTA_VALID), None]


def test_an_app_marked_valid_keeps_booting():
    parts = list(P.GENERIC_OTA)
    otadata = blank_otadata()
    apply(otadata, P.select_boot(parts, bytes(otadata)).on_first_boot)
    apply(otadata, P.set_boot_writes(parts, bytes(otadata), parts[4]))
    apply(otadata, P.select_boot(parts, bytes(otadata)).writes)
    apply(otadata, P.mark_valid_writes(bytes(otadata)))
    assert P.mark_valid_writes(bytes(otadata)) == []
    for _ in range(2):
        boot = P.select_boot(parts, bytes(otadata))
        assert boot.candidates[0].label == "ota_1" and boot.writes == []


def test_the_next_update_slot_wraps_around():
    parts = list(P.GENERIC_OTA)
    assert P.next_update(parts, parts[3]).label == "ota_1"
    assert P.next_update(parts, parts[4]).label == "ota_0"
    assert P.next_update(list(P.GENERIC), P.GENERIC[2]) is None


def test_the_layout_module_runs_on_the_unix_port(unix_port):
    out = unix_port(
        "from tools import partitions as P\n"
        "t = P.parse_table(P.build_table(P.GENERIC_OTA))\n"
        "print(P.vfs_partition(t, 4 << 20))\n"
        "print(P.select_boot(t, b'\\xff' * 8192).candidates[0].label)\n"
    )
    assert out.split() == ["Partition('vfs',", "0x01,", "0x81,", "0x310000,", "0xf0000)", "ota_0"]
