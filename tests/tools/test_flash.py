"""`qrfleet flash` and the real esptool, end to end through virtual boards over RFC 2217."""

import hashlib
import json
import random
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from esptool import cmds

from qrfleet import cli
from tools import flash
from tools.vboard import flash as layout
from tools.vboard.process import running_boards

from .units import board_in_background, stand_in_firmware

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
    assert flash_bytes(board, flash.FIRMWARE_OFFSET, len(firmware)) == firmware
    files = layout.FlashImage(str(board.dir / "flash.bin")).filesystem().listdir("/")
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


def test_firmware_too_big_for_the_partition_layout_is_refused(board):
    too_big = stand_in_firmware(size=0x200000)  # from 0x1000 it runs into the vfs partition
    with pytest.raises(flash.DoesNotFit, match="overlap"):
        flash.flash_firmware(board.serial_url, too_big, b"\xff" * flash.VFS_SIZE)


def test_unit_of_another_chip_is_refused(background, tmp_path):
    with board_in_background(background, tmp_path / "s2", chip="esp32s2") as board:
        with pytest.raises(flash.WrongChip, match="is an ESP32-S2, not an ESP32"):
            flash.flash_firmware(board.serial_url, stand_in_firmware(), b"")


# -- errors a technician can act on


def test_missing_serial_port_says_to_plug_the_unit_in():
    with pytest.raises(flash.NoSerialPort, match="plug the unit in"):
        with flash.open_unit("/dev/ttyUSB-nothing-here"):
            pass


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


def test_images_that_overlap_or_pass_the_end_of_flash_are_refused():
    with pytest.raises(flash.DoesNotFit, match="overlap the image at 0x1000"):
        flash.check_fits([(0x1000, bytes(0x10000)), (0x8000, b"table")], 4 * MiB)
    with pytest.raises(flash.DoesNotFit, match="past the end of this unit's 2 MiB flash"):
        flash.check_fits([(0x1000, bytes(16)), (0x200000, bytes(16))], 2 * MiB)
    flash.check_fits([(0x1000, bytes(0x1F0000)), (0x200000, bytes(0x200000))], 4 * MiB)


def test_file_that_is_not_an_esp_image_is_refused_with_what_to_use():
    with pytest.raises(flash.WrongChip, match="not an .elf, .uf2 or .zip"):
        flash.check_firmware(b"\x7fELF" + bytes(100), "micropython.elf")
