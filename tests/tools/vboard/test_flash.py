"""The virtual board's flash is laid out like MicroPython's generic ESP32 build."""

import hashlib

from tools.vboard import flash


def test_partition_table_matches_the_generic_4mib_layout():
    table = flash.partition_table()
    parts = flash.read_partitions(table)
    assert parts["factory"] == (0x00, 0x00, 0x10000, 0x1F0000)
    assert parts["vfs"] == (0x01, 0x81, 0x200000, 0x200000)
    entries = table[: 32 * len(parts)]
    md5_entry = table[32 * len(parts) : 32 * len(parts) + 32]
    assert md5_entry[:2] == b"\xeb\xeb" and md5_entry[16:] == hashlib.md5(entries).digest()


def test_built_image_holds_the_files_in_littlefs_at_0x200000(tmp_path):
    path = tmp_path / "flash.bin"
    path.write_bytes(flash.build_image({"main.py": b"print(1)\n", "lib/x.py": b"X = 1\n"}))
    image = flash.FlashImage(str(path))
    assert image.size == 4 * 1024 * 1024
    assert image.vfs_partition() == (0x200000, 0x200000)
    assert image.app_offset() == 0x10000
    with image.filesystem().open("lib/x.py", "rb") as f:
        assert f.read() == b"X = 1\n"


def test_erased_flash_has_nothing_to_boot(tmp_path):
    path = tmp_path / "flash.bin"
    path.write_bytes(flash.build_image({}))
    image = flash.FlashImage(str(path))
    image.erase(0, image.size)
    assert image.app_offset() is None
