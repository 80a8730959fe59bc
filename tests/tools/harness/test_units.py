"""The harness's units: a virtual unit's USB cable is pulled and plugged back; a real one's is
not the harness's to pull."""

import pytest
import serial

from tests.tools.vboard.test_board import read_until
from tools.harness.units import Unit, VirtualUnit
from tools.vboard.board import VirtualBoard
from tools.vboard.process import BoardInfo


@pytest.fixture
def unit(background, tmp_path):
    board = VirtualBoard(tmp_path / "board")
    background.run(board.start())
    BoardInfo(board.device_id, board.serial_url, board.dir).wait_for_log("qrfleet 0.1.0")
    yield VirtualUnit(board, background, tmp_path)
    background.run(board.stop())


def test_unplugging_drops_whoever_has_the_port_and_refuses_it_until_plugged_back(unit):
    announced = unit.board.dir / "serial-url"
    with serial.serial_for_url(unit.serial_url, timeout=0.2) as bridge:
        bridge.write(b"\x03")
        read_until(bridge, ">>> ")

        unit.unplug()

        with pytest.raises(serial.SerialException):
            read_until(bridge, "nothing: the cable is out", timeout=5)
    with pytest.raises(OSError):  # SerialException, or the broken pipe while it negotiates
        serial.serial_for_url(unit.serial_url, timeout=0.2)
    assert not announced.exists()

    unit.plug()

    assert announced.read_text() == f"{unit.serial_url}\n"
    unit.serial.write("print(6 * 7)\r")  # the board ran on, at its prompt
    assert "42" in unit.serial.expect("42\r\n")


def test_the_harness_gets_the_port_back_after_a_pull_while_it_held_it(unit):
    unit.serial.write("\x03")
    unit.serial.expect(">>> ")

    unit.unplug()
    unit.plug()

    unit.serial.write("print(6 * 7)\r")
    assert "42" in unit.serial.expect("42\r\n")


def test_a_real_units_cable_is_skipped_with_what_pulling_it_takes(tmp_path):
    unit = Unit("qrf-240ac4a1b2c3", "/dev/ttyUSB0", tmp_path)
    for pull in (unit.unplug, unit.plug):
        with pytest.raises(pytest.skip.Exception, match="USB hub with per-port power switching"):
            pull()
