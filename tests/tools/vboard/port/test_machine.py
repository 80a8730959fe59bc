"""machine on a virtual board: the ESP32 port's names and behaviour, seen through mpremote."""

import re
import time

from tests.tools.vboard.port.conftest import run
from tests.tools.vboard.test_board import esptool, mpremote, open_serial, read_until


def test_unique_id_is_the_mac_esptool_reads_from_the_efuse(board):
    said = run(board, "import machine; print(machine.unique_id().hex())").strip()
    start = len(board.log_text())
    mac = re.search(r"MAC:\s+([0-9a-f:]{17})", esptool(board.serial_url, "read-mac")).group(1)
    assert said == mac.replace(":", "")
    assert board.device_id == "qrf-" + said
    board.wait_for_log("qrfleet 0.1.0", start=start)  # esptool's hard reset: booted again


def test_machine_reset_reboots_the_board_with_a_hard_reset_cause(board):
    start = len(board.log_text())
    mpremote(board.serial_url, "exec", "--no-follow", "import machine; machine.reset()")
    log = board.wait_for_log("qrfleet 0.1.0", start=start)
    assert "rst:0xc (SW_CPU_RESET)" in log[start:]
    assert re.search(r"boot \d+ \(hard\)", log[start:])
    said = run(board, "import machine; print(machine.reset_cause() == machine.HARD_RESET)")
    assert said == "True\n"


def test_starved_watchdog_resets_the_board_with_wdt_reset_even_across_a_soft_reset(board):
    start = len(board.log_text())
    run(board, "import machine; machine.WDT(timeout=1000)")  # and never fed
    fired = watchdog_fired(board, start)
    log = board.wait_for_log("qrfleet 0.1.0", start=fired)
    assert "E (" in log[start:fired] and "task_wdt:  - mpy_machine_wdt (CPU 0)" in log[start:]
    assert "rst:0xc (SW_CPU_RESET)" in log[fired:]
    assert re.search(r"boot \d+ \(watchdog\)", log[fired:])
    said = run(board, "import machine; print(machine.reset_cause() == machine.WDT_RESET)")
    assert said == "True\n"

    start = len(board.log_text())
    run(board, "import machine; machine.WDT(timeout=4000)")
    mpremote(board.serial_url, "soft-reset")
    fired = watchdog_fired(board, start)
    assert "MPY: soft reboot" in board.log_text()[start:fired]

    time.sleep(5)  # the reset stopped the watchdog: the board stays up
    assert "Aborting." not in board.log_text()[fired + 20 :]


def watchdog_fired(board, start):
    """Where the board reported its starved watchdog, after `start` in its serial log."""
    return board.wait_for_log("task_wdt: Aborting.", start=start).index("Aborting.", start)


def test_freq_is_160_mhz_and_only_the_ports_steps_are_accepted(board):
    said = run(
        board,
        "import machine\nprint(machine.freq())\nmachine.freq(240000000)\nprint(machine.freq())\n"
        "try:\n machine.freq(100000000)\nexcept ValueError as e:\n print(e)\n"
        "machine.freq(160000000)",
    )
    assert said.splitlines() == [
        "160000000",
        "240000000",
        "frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz",
    ]


def test_held_boot_button_reads_low_on_gpio0_and_puts_the_firmware_in_safe_mode(board):
    start = len(board.log_text())
    with open_serial(board.serial_url) as port:
        port.write(b"\r")
        read_until(port, ">>> ")
        port.dtr, port.rts = True, False  # DTR alone pulls GPIO0 low: the BOOT button held
        port.write(b"import machine; print('GPIO0 =', machine.Pin(0).value())\r")
        read_until(port, "GPIO0 = 0")
        port.write(b"machine.reset()\r")  # a software reset: the ROM does not sample GPIO0
        read_until(port, "safe mode, application skipped", timeout=30)
        port.write(b"\rimport machine; print('GPIO0 =', machine.Pin(0, machine.Pin.IN).value())\r")
        read_until(port, "GPIO0 = 0")
        port.dtr = False  # released
        port.write(b"print('GPIO0 =', machine.Pin(0).value())\r")
        read_until(port, "GPIO0 = 1")
    assert "DOWNLOAD" not in board.log_text()[start:]


def test_buses_have_the_ports_signatures_and_no_panel_answers_on_i2c(board):
    said = run(
        board,
        "from machine import I2C, SPI, Pin\n"
        "i2c = I2C(0, scl=Pin(22), sda=Pin(21), freq=400000)\n"
        "print(i2c.scan())\n"
        "try:\n i2c.writeto(0x3C, b'\\x00\\xae')\nexcept OSError as e:\n print(e)\n"
        "SPI(2, baudrate=40000000, polarity=0, phase=0, sck=Pin(18), mosi=Pin(23)).write(b'x')\n"
        "for bad in (lambda: I2C(2), lambda: SPI(3), lambda: Pin(24), lambda: Pin(34, Pin.OUT)):\n"
        " try:\n  bad()\n except ValueError as e:\n  print(e)\n",
    )
    assert said.splitlines() == [
        "[]",
        "[Errno 19] ENODEV",
        "I2C(2) doesn't exist",
        "SPI(3) doesn't exist",
        "invalid pin",
        "pin can only be input",
    ]


def test_the_firmware_runs_the_esp32_hal_on_the_board(board):
    said = run(board, "import sys\nfrom firmware import hal\nprint(sorted(sys.modules))")
    assert "firmware.hal.esp32" in said
    assert "firmware.hal.unix" not in said
