"""From reset to MicroPython: the ROM and the bootloader run what the flash holds, or say why not."""

import pytest

from tools import esp_image
from tools import partitions as P
from tools.vboard.flash import FlashImage, build_image
from tools.vboard.startup import RTC_WATCHDOG_RESET, SOFTWARE_RESET, start

MiB = 1 << 20


def board_flash(tmp_path, table=P.GENERIC, size=4 * MiB):
    path = tmp_path / "flash.bin"
    path.write_bytes(build_image({"main.py": b"print(1)\n"}, size, table))
    return FlashImage(str(path))


def otadata(flash):
    return P.read_ota(flash.read(0xD000, 2 * P.SECTOR))


def test_fresh_board_runs_its_factory_app_after_the_rom_loads_the_bootloader(tmp_path):
    boot = start(board_flash(tmp_path))
    assert boot.app.label == "factory"
    assert boot.output.startswith("configsip: 0, SPIWP:0xee\r\n")
    assert "load:0x3fff0030,len:4892\r\nho 0 tail 12 room 4\r\n" in boot.output
    assert boot.output.endswith("entry 0x400805b0\r\n")
    assert boot.banner == "MicroPython v1.29.0 on 2026-07-05; Generic ESP32 module with ESP32"


def test_banner_names_the_ota_build_and_the_version_an_image_carries(tmp_path):
    flash = board_flash(tmp_path, P.GENERIC_OTA)
    flash.write(0x10000, esp_image.app(version=b"v1.27.0", date=b"Dec 10 2025"))
    boot = start(flash)
    assert (
        boot.banner == "MicroPython v1.27.0 on 2025-12-10; Generic ESP32 module with OTA with ESP32"
    )


def test_erased_bootloader_makes_the_rom_print_invalid_header_until_the_watchdog_resets(tmp_path):
    flash = board_flash(tmp_path)
    flash.erase(0x1000, 0x1000)
    boot = start(flash)
    assert boot.app is None and boot.retry_reset == RTC_WATCHDOG_RESET
    assert boot.output == "invalid header: 0xffffffff\r\n" * 8


def test_erased_app_makes_the_bootloader_log_why_and_reset(tmp_path):
    flash = board_flash(tmp_path)
    flash.erase(0x10000, 0x10000)
    boot = start(flash, now_ms=lambda: 42)
    assert boot.app is None and boot.retry_reset == SOFTWARE_RESET
    assert boot.output.endswith(
        "E (42) esp_image: image at 0x10000 has invalid magic byte (nothing flashed here?)\r\n"
        "E (42) boot: Factory app partition is not bootable\r\n"
        "E (42) boot: No bootable app partitions in the partition table\r\n"
    )


@pytest.mark.parametrize(
    ("damage", "logged"),
    [
        (lambda img: img[:12] + b"\x02\x00" + img[14:], "mismatch chip ID, expected 0, found 2"),
        (lambda img: img[:600] + bytes([img[600] ^ 1]) + img[601:], "Checksum failed."),
        (lambda img: img[:1] + b"\x11" + img[2:], "segment count 17 exceeds max 16"),
        (lambda img: img[:-1] + bytes([img[-1] ^ 1]), "Image hash failed - image is corrupt"),
    ],
)
def test_app_image_the_bootloader_would_refuse_is_not_run(tmp_path, damage, logged):
    flash = board_flash(tmp_path)
    flash.write(0x10000, damage(esp_image.app(note=b"x" * 1000)))
    boot = start(flash)
    assert boot.app is None
    assert logged in boot.output


def test_damaged_partition_table_is_reported_and_nothing_runs(tmp_path):
    flash = board_flash(tmp_path)
    flash.write(0x8000, b"\x00\x00")
    boot = start(flash, now_ms=lambda: 7)
    assert "E (7) flash_parts: partition 0 invalid magic number 0x0\r\n" in boot.output
    assert boot.output.endswith("E (7) boot: load partition table error!\r\n")
    assert boot.app is None and boot.retry_reset == SOFTWARE_RESET


def test_fresh_ota_board_boots_ota_0_and_records_it_as_valid(tmp_path):
    flash = board_flash(tmp_path, P.GENERIC_OTA)
    assert start(flash).app.label == "ota_0"
    assert otadata(flash) == [(1, P.OTA_VALID), None]


def test_ota_app_that_never_marks_itself_valid_is_rolled_back_at_the_next_reset(tmp_path):
    flash = board_flash(tmp_path, P.GENERIC_OTA)
    start(flash)
    flash.write(0x190000, esp_image.app(version=b"v2"))
    ((index, entry),) = P.set_boot_writes(
        P.GENERIC_OTA, flash.read(0xD000, 2 * P.SECTOR), P.GENERIC_OTA[4]
    )
    flash.write(0xD000 + index * P.SECTOR, entry)

    trial = start(flash)
    assert trial.app.label == "ota_1" and trial.image.version == b"v2"
    assert otadata(flash)[1] == (2, P.OTA_PENDING_VERIFY)
    assert start(flash).app.label == "ota_0"  # not marked valid: aborted, the old app is back
    assert otadata(flash) == [(1, P.OTA_VALID), None]


def test_table_with_a_vfs_entry_still_boots(tmp_path):
    assert start(board_flash(tmp_path, P.LEGACY_GENERIC, 8 * MiB)).app.label == "factory"
