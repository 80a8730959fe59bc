"""`qrfleet flash` and the real esptool, end to end through virtual boards over RFC 2217."""

import hashlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import serial
from esptool import cmds

from qrfleet import cli
from tools import flash
from tools import partitions as P
from tools.vboard import flash as layout
from tools.vboard.process import running_boards

from .units import board_in_background, filesystem_on, stand_in_firmware

ESPTOOL = Path(sys.executable).parent / "esptool"
MiB = 1024 * 1024


def esptool(url, *args):
    done = subprocess.run(
        [str(ESPTOOL), "--port", url, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"esptool {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def flash_bytes(board, offset, length):
    with open(board.dir / "flash.bin", "rb") as f:
        f.seek(offset)
        return f.read(length)


@pytest.fixture
def board(tmp_path):
    with running_boards(tmp_path / "boards", 1) as boards:
        boards[0].wait_for_log("qrfleet ")
        yield boards[0]


# -- esptool against a virtual board: the command, and its library through tools.flash


def test_esptool_command_writes_images_at_two_offsets_byte_for_byte(board, tmp_path):
    text = tmp_path / "text.bin"
    text.write_bytes(b"qrfleet payment counter " * 4000)  # compresses well
    noise = tmp_path / "noise.bin"
    noise.write_bytes(random.Random(7).randbytes(100_000))

    out = esptool(board.serial_url, "write-flash", "0x300000", str(text), "0x340000", str(noise))

    efuse_mac = json.loads((board.dir / "efuse.json").read_text())["mac"]
    assert "Chip type:          ESP32" in out
    assert re.search(rf"MAC:\s+{efuse_mac}", out)
    assert flash_bytes(board, 0x300000, len(text.read_bytes())) == text.read_bytes()
    assert flash_bytes(board, 0x340000, len(noise.read_bytes())) == noise.read_bytes()


def test_esptool_library_writes_uncompressed_verifies_reads_and_erases(board, tmp_path):
    data = random.Random(8).randbytes(50_000)
    back = tmp_path / "back.bin"
    with flash.open_unit(board.serial_url) as unit:
        assert unit.mac.hex() == json.loads((board.dir / "efuse.json").read_text())["mac"].replace(
            ":", ""
        )
        assert unit.flash_size == layout.FLASH_SIZE
        cmds.write_flash(unit.esp, [(0x380000, data)], no_compress=True)
        assert flash_bytes(board, 0x380000, len(data)) == data
        cmds.verify_flash(unit.esp, [(0x380000, data)])
        cmds.read_flash(unit.esp, 0x380000, len(data), str(back))
        assert back.read_bytes() == data
        cmds.erase_region(unit.esp, 0x380000, 0x10000)
        assert flash_bytes(board, 0x380000, 0x10000) == b"\xff" * 0x10000
        cmds.erase_flash(unit.esp)
    assert (board.dir / "flash.bin").read_bytes() == b"\xff" * layout.FLASH_SIZE


# -- qrfleet flash


def test_qrfleet_flash_writes_micropython_and_the_files_verifies_and_boots_them(
    board, tmp_path, capsys
):
    firmware = stand_in_firmware()
    path = tmp_path / "micropython.bin"
    path.write_bytes(firmware)
    log_size = len(board.log_text())

    assert (
        cli.main(
            ["flash", "--port", board.serial_url, "--firmware", str(path), "--target", "virtual"]
        )
        == 0
    )

    assert "1 of 1 units done" in capsys.readouterr().out
    # Booting writes the nvs partition (nvs_flash_init), as on a unit: the rest is the .bin.
    nvs = P.find(P.GENERIC, label="nvs")[0]
    start, end = nvs.offset - flash.FIRMWARE_OFFSET, nvs.end - flash.FIRMWARE_OFFSET
    assert flash_bytes(board, flash.FIRMWARE_OFFSET, start) == firmware[:start]
    assert flash_bytes(board, nvs.end, len(firmware) - end) == firmware[end:]
    files = filesystem_on(board).listdir("/")
    assert {"boot.py", "main.py", "firmware"} <= set(files)
    assert "config.json" not in files
    board.wait_for_log(f"qrfleet 0.1.0 on {board.device_id}", start=log_size)


def test_firmware_built_for_another_chip_is_refused_before_anything_is_written(board, tmp_path):
    path = tmp_path / "micropython-s2.bin"
    path.write_bytes(stand_in_firmware(chip_id=2))  # 2 = ESP32-S2
    before = hashlib.md5((board.dir / "flash.bin").read_bytes()).digest()

    with pytest.raises(SystemExit, match="built for ESP32-S2, but this unit is an ESP32"):
        cli.main(["flash", "--port", board.serial_url, "--firmware", str(path)])

    assert hashlib.md5((board.dir / "flash.bin").read_bytes()).digest() == before


def test_firmware_too_big_for_its_partition_table_is_refused(board):
    too_big = stand_in_firmware(code_size=0x200000)  # from 0x1000 it runs into the filesystem
    before = hashlib.md5((board.dir / "flash.bin").read_bytes()).digest()
    with pytest.raises(flash.DoesNotFit, match="bigger than its own partition table"):
        flash.flash_firmware(board.serial_url, too_big, {})
    assert hashlib.md5((board.dir / "flash.bin").read_bytes()).digest() == before


def test_a_bin_whose_table_needs_more_flash_than_the_unit_has_is_refused_untouched(board):
    # partitions-8MiB.csv of MicroPython before 1.26, onto a 4 MiB unit
    for_8mib = (*P.GENERIC, P.Partition("vfs", P.TYPE_DATA, P.SUBTYPE_FAT, 0x200000, 0x600000))
    before = hashlib.md5((board.dir / "flash.bin").read_bytes()).digest()
    with pytest.raises(flash.DoesNotFit, match="vfs end beyond the 4 MiB flash; use a build"):
        flash.flash_firmware(board.serial_url, stand_in_firmware(for_8mib), {})
    assert hashlib.md5((board.dir / "flash.bin").read_bytes()).digest() == before


def test_unit_of_another_chip_is_refused(background, tmp_path):
    with board_in_background(background, tmp_path / "s2", chip="esp32s2") as board:
        with pytest.raises(flash.WrongChip, match="is an ESP32-S2, not an ESP32"):
            flash.flash_firmware(board.serial_url, stand_in_firmware(), {})


# -- errors a technician can act on


def test_missing_serial_port_says_to_plug_the_unit_in():
    with pytest.raises(flash.NoSerialPort, match="Plug the unit in"):
        with flash.open_unit("/dev/ttyUSB-nothing-here"):
            pass


def test_a_port_another_program_holds_says_to_stop_it_and_leaves_the_unit_alone(board):
    """A running `qrfleet bridge` (or mpremote, or a terminal) holds the unit's port."""
    with serial.serial_for_url(board.serial_url, timeout=1):
        with pytest.raises(flash.NoSerialPort, match="Another program holds the port: stop it"):
            with flash.open_unit(board.serial_url):
                pass
    assert "rst:" not in board.log_text()[board.log_text().index("qrfleet ") :]  # not reset


def test_a_tty_another_program_has_locked_says_to_stop_it():
    """The same on a real tty (a pseudo-terminal here), locked as pyserial locks a port."""
    controller, device = os.openpty()
    try:
        with serial.Serial(os.ttyname(device), exclusive=True):
            with pytest.raises(flash.NoSerialPort, match="exclusively lock.*Another program holds"):
                with flash.open_unit(os.ttyname(device)):
                    pass
    finally:
        os.close(controller)
        os.close(device)


def test_unreachable_network_port_says_to_check_the_serial_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(flash.NoSerialPort, match="serial server"):
        with flash.open_unit(f"rfc2217://127.0.0.1:{port}"):
            pass


def test_unit_that_never_answers_is_reported_as_not_in_download_mode():
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    try:
        with pytest.raises(flash.NotInDownloadMode, match="Hold BOOT"):
            with flash.open_unit(f"socket://127.0.0.1:{listener.getsockname()[1]}"):
                pass
    finally:
        listener.close()
        for conn, _ in accepted:
            conn.close()


def test_a_bin_cut_short_or_damaged_is_refused_before_any_unit_is_touched():
    firmware = stand_in_firmware()
    with pytest.raises(flash.BadFirmware, match="cut short or damaged: its app fails"):
        flash.check_firmware(firmware[:-1000], "micropython.bin")
    damaged = bytearray(firmware)
    damaged[0x20000] ^= 0x01
    with pytest.raises(flash.BadFirmware, match="Checksum failed"):
        flash.check_firmware(bytes(damaged), "micropython.bin")


def test_an_app_only_image_is_refused_with_what_to_use_instead():
    app_only = stand_in_firmware()[0x10000 - flash.FIRMWARE_OFFSET :]
    with pytest.raises(flash.BadFirmware, match="no usable partition table at 0x8000: use the"):
        flash.check_firmware(app_only, "micropython.bin")


def test_a_bin_reads_back_its_own_partition_table():
    assert flash.check_firmware(stand_in_firmware(P.GENERIC_OTA)) == list(P.GENERIC_OTA)


@pytest.mark.parametrize(
    ("table", "size", "message"),
    [
        (P.GENERIC_OTA, 2 * MiB, "ota_1 end beyond the 2 MiB flash; use a build made for"),
        (P.GENERIC, 2 * MiB, "fills the unit's 2 MiB flash and leaves no room for a filesystem"),
    ],
)
def test_a_table_that_leaves_no_filesystem_on_the_unit_is_refused(table, size, message):
    with pytest.raises(flash.DoesNotFit, match=message):
        flash.filesystem_partition(list(table), size, "the firmware")


@pytest.mark.parametrize(
    ("table", "size", "expected"),
    [
        (P.GENERIC, 4 * MiB, (0x200000, 0x200000)),
        (P.GENERIC, 16 * MiB, (0x200000, 0xE00000)),
        (P.GENERIC_OTA, 8 * MiB, (0x310000, 0x4F0000)),
        (P.LEGACY_GENERIC, 16 * MiB, (0x200000, 0x200000)),
    ],
)
def test_the_filesystem_goes_where_micropython_mounts_it(table, size, expected):
    vfs = flash.filesystem_partition(list(table), size, "the firmware")
    assert (vfs.offset, vfs.size) == expected


def test_images_that_overlap_or_pass_the_end_of_flash_are_refused():
    with pytest.raises(flash.DoesNotFit, match="overlap the image at 0x1000"):
        flash.check_fits([(0x1000, bytes(0x10000)), (0x8000, b"table")], 4 * MiB)
    with pytest.raises(flash.DoesNotFit, match="past the end of this unit's 2 MiB flash"):
        flash.check_fits([(0x1000, bytes(16)), (0x200000, bytes(16))], 2 * MiB)
    flash.check_fits([(0x1000, bytes(0x1F0000)), (0x200000, bytes(0x200000))], 4 * MiB)


def test_file_that_is_not_an_esp_image_is_refused_with_what_to_use():
    with pytest.raises(flash.WrongChip, match="not an .elf, .uf2 or .zip"):
        flash.check_firmware(b"\x7fELF" + bytes(100), "micropython.elf")
