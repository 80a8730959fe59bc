"""Virtual boards behave like ESP32 units running MicroPython, seen through their serial port."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from tests.conftest import wait_for
from tools import partitions as P
from tools.image import littlefs_image
from tools.vboard.flash import FlashImage
from tools.vboard.process import running_boards

ESPTOOL = Path(sys.executable).parent / "esptool"
MiB = 1 << 20
CORRUPTED = (  # as the serial log reads back, its CRLFs as newlines
    "The filesystem appears to be corrupted. If you had important data there, you\n"
    "may want to make a flash snapshot to try to recover it. Otherwise, perform\n"
    "factory reprogramming of MicroPython firmware (completely erase flash, followed\n"
    "by firmware programming).\n\n"
)
DEFAULT_BOOT_PY = (
    "# This file is executed on every boot (including wake-boot from deepsleep)\n"
    "#import esp\n#esp.osdebug(None)\n#import webrepl\n#webrepl.start()\n"
)


def mpremote(url, *args, timeout=60):
    done = subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"mpremote {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def esptool(url, *args):
    """The esptool command as a technician runs it: reset into the ROM loader, work, hard reset."""
    done = subprocess.run(
        [str(ESPTOOL), "--port", url, *map(str, args)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"esptool {args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def flash_bytes(board, offset, length):
    with open(board.dir / "flash.bin", "rb") as f:
        f.seek(offset)
        return f.read(length)


def open_serial(url):
    return serial.serial_for_url(url, timeout=0.2)


def read_until(port, text, timeout=15):
    data = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in data:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {text!r} on the serial port; got {data[-800:]!r}")
        data += port.read(4096)
    return data.decode(errors="replace")


@pytest.fixture
def board(tmp_path):
    with running_boards(tmp_path / "boards", 1) as boards:
        boards[0].wait_for_log("qrfleet ")
        yield boards[0]


def test_fresh_board_boots_the_firmware_from_its_flash_image(board):
    log = board.log_text()
    assert "rst:0x1 (POWERON_RESET)" in log
    assert f"qrfleet 0.1.0 on {board.device_id}, boot 1 (power-on)" in log
    files = set(FlashImage(str(board.dir / "flash.bin")).filesystem().listdir("/"))
    assert {"boot.py", "main.py", "firmware"} <= files


def test_mpremote_writes_reads_lists_and_soft_resets(board, tmp_path):
    local = tmp_path / "note.txt"
    local.write_text("counter 7\n")
    mpremote(board.serial_url, "fs", "cp", str(local), ":note.txt")
    assert mpremote(board.serial_url, "fs", "cat", "note.txt") == "counter 7\n"
    assert "note.txt" in mpremote(board.serial_url, "fs", "ls")
    mpremote(
        board.serial_url,
        "exec",
        "f = open('boot.py', 'a'); f.write('print(\"boot.py ran\")\\n'); f.close()",
    )

    start = len(board.log_text())
    mpremote(board.serial_url, "soft-reset")
    board.wait_for_log("MPY: soft reboot", start=start)
    board.wait_for_log("boot.py ran", start=start)

    # Ctrl-D at the friendly prompt reboots through boot.py and main.py, as on a board.
    start = len(board.log_text())
    with open_serial(board.serial_url) as port:
        port.write(b"\r\x04")
        read_until(port, "(soft)")
    log = board.log_text()[start:]
    assert log.index("boot.py ran") < log.index("qrfleet 0.1.0")


def test_ctrl_c_interrupts_main_py_and_gives_the_prompt(board):
    with open_serial(board.serial_url) as port:
        port.write(b"\x03")
        out = read_until(port, ">>> ")
        assert "KeyboardInterrupt" in out
        port.write(b"print(6 * 7)\r")
        assert "42" in read_until(port, "42\r\n")


def test_board_announces_its_serial_url_while_it_runs_with_its_cable_in(tmp_path):
    """serial-url is how a bridge with --port auto finds boards; cut-serial, made by another
    process here, pulls the cable: the idle client goes, so does the announcement."""
    with running_boards(tmp_path / "boards", 1) as (board,):
        announced = board.dir / "serial-url"
        assert announced.read_text() == f"{board.serial_url}\n"
        with open_serial(board.serial_url) as port:
            (board.dir / "cut-serial").touch()
            with pytest.raises(serial.SerialException):
                read_until(port, "nothing: the cable is out", timeout=5)
        assert not announced.exists()

        (board.dir / "cut-serial").unlink()
        wait_for(announced.exists, 5, "serial-url back")
        assert announced.read_text() == f"{board.serial_url}\n"
    assert not announced.exists()


def test_written_file_survives_power_off_and_is_in_the_flash_image(tmp_path):
    directory = tmp_path / "boards"
    with running_boards(directory, 1) as (board,):
        board.wait_for_log("qrfleet ")
        mpremote(
            board.serial_url,
            "exec",
            "f = open('shift.txt', 'w'); f.write('till 3 open'); f.close()",
        )
    fs = FlashImage(str(board.dir / "flash.bin")).filesystem()
    with fs.open("shift.txt", "r") as f:
        assert f.read() == "till 3 open"
    with running_boards(directory, 1) as (again,):
        assert again.device_id == board.device_id  # the eFuse MAC is the board's for life
        again.wait_for_log("boot 1 (power-on)")
        assert mpremote(again.serial_url, "fs", "cat", "shift.txt") == "till 3 open"


def test_broken_main_py_prints_its_traceback_and_mpremote_still_gets_in(board, tmp_path):
    broken = tmp_path / "main.py"
    broken.write_text("import firmware.hal\nraise ValueError('counter 4 misconfigured')\n")
    mpremote(board.serial_url, "fs", "cp", str(broken), ":main.py")
    with open_serial(board.serial_url) as port:
        port.dtr = False  # the auto-reset circuit: RTS alone pulls EN low, as the reset button
        port.rts = True
        time.sleep(0.05)
        port.rts = False
        out = read_until(port, ">>> ")
    assert "Traceback (most recent call last):" in out
    assert 'File "main.py", line 2' in out
    assert "ValueError: counter 4 misconfigured" in out
    assert "ValueError: counter 4 misconfigured" in board.log_text()
    assert mpremote(board.serial_url, "exec", "print('still alive')") == "still alive\n"


@pytest.mark.slow
def test_eight_boards_boot_at_once_each_with_its_own_identity(tmp_path):
    with running_boards(tmp_path / "boards", 8) as boards:
        ids = {b.device_id for b in boards}
        assert len(ids) == 8
        for b in boards:
            b.wait_for_log(f"qrfleet 0.1.0 on {b.device_id}", timeout=60)
            said = mpremote(
                b.serial_url,
                "exec",
                "from firmware import config, hal\nprint(config.device_id(hal.unique_id()))",
            )
            assert said.strip() == b.device_id
        macs = {bytes.fromhex(b.device_id[4:]) for b in boards}
        assert all(m[0] & 0x03 == 0x02 for m in macs)  # locally administered, unicast


# -- flash sizes, partition tables, and what the ROM and the bootloader make of the flash


@pytest.mark.parametrize(
    ("flash_size", "variant", "vfs", "board_name"),
    [
        ("4MB", "generic", (0x200000, 0x200000), "Generic ESP32 module with ESP32"),
        ("8MB", "generic", (0x200000, 0x600000), "Generic ESP32 module with ESP32"),
        ("16MB", "generic", (0x200000, 0xE00000), "Generic ESP32 module with ESP32"),
        ("4MB", "ota", (0x310000, 0xF0000), "Generic ESP32 module with OTA with ESP32"),
    ],
)
def test_fresh_board_carries_its_builds_table_and_mounts_all_the_flash_after_it(
    tmp_path, flash_size, variant, vfs, board_name
):
    extra = ("--flash-size", flash_size, "--variant", variant)
    with running_boards(tmp_path / "boards", 1, extra_args=extra) as (board,):
        board.wait_for_log(board_name)
        said = mpremote(board.serial_url, "exec", "import os; print(os.statvfs('/')[:3])")
        assert said.strip() == str((4096, 4096, vfs[1] // 4096))
        table = FlashImage(str(board.dir / "flash.bin")).partitions()
        assert table == list(P.VARIANTS[variant])


def test_esptool_detects_the_flash_size_of_a_16mb_board(tmp_path):
    with running_boards(tmp_path / "boards", 1, extra_args=("--flash-size", "16MB")) as (board,):
        out = esptool(board.serial_url, "flash-id")
    assert "Device: 4018" in out  # Winbond 25Q128: 2**0x18 bytes
    assert "Detected flash size: 16MB" in out


def test_filesystem_made_for_4mb_on_an_8mb_board_is_reported_corrupted_and_kept(tmp_path):
    fs = tmp_path / "vfs-4mb.bin"
    fs.write_bytes(littlefs_image({"main.py": b"print('hello')\n"}, 0x200000))
    with running_boards(tmp_path / "boards", 1, extra_args=("--flash-size", "8MB")) as (board,):
        board.wait_for_log("qrfleet ")
        start = len(board.log_text())
        esptool(board.serial_url, "write-flash", 0x200000, fs)
        written = flash_bytes(board, 0x200000, 0x600000)

        board.wait_for_log(CORRUPTED, start=start)
        first = time.monotonic()
        log = board.wait_for_log(CORRUPTED * 2, start=start)
        assert 2 < time.monotonic() - first < 5  # every 3 s, as inisetup.fs_corrupted prints
        assert "Performing initial setup" not in log[start:]
        assert flash_bytes(board, 0x200000, 0x600000) == written

        with open_serial(board.serial_url) as port:  # Ctrl-C: the REPL, without a filesystem
            port.write(b"\x03")
            read_until(port, ">>> ")
        assert "MAC:" in esptool(board.serial_url, "read-mac")  # the ROM still answers
        assert flash_bytes(board, 0x200000, 0x600000) == written


def test_board_whose_app_is_erased_logs_why_in_a_loop_and_the_rom_still_answers(tmp_path):
    with running_boards(tmp_path / "boards", 1) as (board,):
        board.wait_for_log("qrfleet ")
        start = len(board.log_text())
        esptool(board.serial_url, "erase-region", 0x10000, 0x10000)
        last = "boot: No bootable app partitions in the partition table\n"
        log = board.wait_for_log(last, start=start)
        log = board.wait_for_log(last, start=log.index(last, start) + 1)  # reset, tried again
        assert re.search(
            r"entry 0x400805b0\n"
            r"E \(\d+\) esp_image: image at 0x10000 has invalid magic byte \(nothing flashed here\?\)\n"
            r"E \(\d+\) boot: Factory app partition is not bootable\n"
            r"E \(\d+\) boot: No bootable app partitions in the partition table\n"
            r"ets Jul 29 2019 12:21:46\n\nrst:0x3 \(SW_RESET\)",
            log[start:],
        )
        assert "MAC:" in esptool(board.serial_url, "read-mac")


def test_blank_filesystem_is_formatted_and_given_micropythons_boot_py(tmp_path):
    with running_boards(tmp_path / "boards", 1) as (board,):
        board.wait_for_log("qrfleet ")
        start = len(board.log_text())
        esptool(board.serial_url, "erase-region", 0x200000, 0x200000)
        board.wait_for_log("Performing initial setup", start=start)
        board.wait_for_log(">>> ", start=start)
        assert mpremote(board.serial_url, "fs", "cat", "boot.py") == DEFAULT_BOOT_PY
        said = mpremote(board.serial_url, "exec", "import os; print(os.listdir('/'))")
        assert said.strip() == "['boot.py']"


def test_board_with_a_pre_1_26_table_mounts_the_vfs_its_table_names(tmp_path):
    table = tmp_path / "table.bin"
    table.write_bytes(P.build_table(P.LEGACY_GENERIC))
    fs = tmp_path / "vfs.bin"
    fs.write_bytes(littlefs_image({"main.py": b"print('legacy ok')\n"}, 0x200000))
    with running_boards(tmp_path / "boards", 1, extra_args=("--flash-size", "8MB")) as (board,):
        board.wait_for_log("qrfleet ")
        start = len(board.log_text())
        esptool(board.serial_url, "write-flash", 0x8000, table, 0x200000, fs)
        board.wait_for_log("legacy ok", start=start)
        said = mpremote(board.serial_url, "exec", "import os; print(os.statvfs('/')[2])")
        assert said.strip() == "512"
