"""Virtual boards behave like ESP32 units running MicroPython, seen through their serial port."""

import subprocess
import sys
import time

import pytest
import serial

from tools.vboard.flash import FlashImage
from tools.vboard.process import running_boards


def mpremote(url, *args, timeout=60):
    done = subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"mpremote {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


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
