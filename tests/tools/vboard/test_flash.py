"""The virtual board's flash is laid out as MicroPython's ESP32 builds lay it out."""

import pytest

from tools import partitions as P
from tools.vboard import flash

MiB = 1 << 20


@pytest.mark.parametrize(
    ("size", "table", "vfs"),
    [
        (4 * MiB, P.GENERIC, (0x200000, 0x200000)),
        (8 * MiB, P.GENERIC, (0x200000, 0x600000)),
        (16 * MiB, P.GENERIC, (0x200000, 0xE00000)),
        (4 * MiB, P.GENERIC_OTA, (0x310000, 0xF0000)),
        (8 * MiB, P.LEGACY_GENERIC, (0x200000, 0x200000)),
    ],
)
def test_fresh_image_holds_the_table_and_the_files_where_micropython_mounts_them(
    tmp_path, size, table, vfs
):
    path = tmp_path / "flash.bin"
    path.write_bytes(
        flash.build_image({"main.py": b"print(1)\n", "lib/x.py": b"X = 1\n"}, size, table)
    )
    image = flash.FlashImage(str(path))
    assert image.size == size
    assert image.partitions() == list(table)
    assert (image.vfs_partition().offset, image.vfs_partition().size) == vfs
    with image.filesystem().open("lib/x.py", "rb") as f:
        assert f.read() == b"X = 1\n"


def test_table_that_does_not_fit_the_flash_is_refused():
    with pytest.raises(P.LayoutError, match="end beyond the 1 MiB flash"):
        flash.build_image({}, 1 * MiB)
