"""Gang mode runs one job per port at once and reports every unit, whatever the others do."""

import io
import threading

from rich.console import Console
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from tools import gang


def quiet_console():
    return Console(file=io.StringIO(), width=160)


def test_one_failing_unit_never_stops_the_others_and_the_table_says_why():
    all_started = threading.Barrier(3, timeout=10)

    def job(port, report):
        all_started.wait()  # the three run at the same time
        report("writing", 50, 100)
        if port == "/dev/ttyUSB1":
            raise RuntimeError("the serial link dropped")
        return f"unit on {port}"

    console = quiet_console()
    outcomes = gang.run(["/dev/ttyUSB0", "/dev/ttyUSB1", "/dev/ttyUSB2"], job, console)

    assert [(o.port, o.ok) for o in outcomes] == [
        ("/dev/ttyUSB0", True),
        ("/dev/ttyUSB1", False),
        ("/dev/ttyUSB2", True),
    ]
    assert outcomes[1].error == "the serial link dropped"
    table = console.file.getvalue()
    assert "2 of 3 units done" in table
    assert "unit on /dev/ttyUSB2" in table and "the serial link dropped" in table


def test_all_finds_only_usb_serial_bridges_found_on_esp32_boards(monkeypatch):
    # A mock: this machine has no USB serial devices to enumerate.
    def port(device, vid):
        info = ListPortInfo(device, skip_link_detection=True)
        info.vid = vid
        return info

    found = [
        port("/dev/ttyUSB1", 0x1A86),
        port("/dev/ttyS0", None),
        port("/dev/ttyACM0", 0x303A),
        port("/dev/ttyUSB0", 0x10C4),
        port("/dev/ttyACM1", 0x2341),
    ]  # 0x2341: an Arduino
    monkeypatch.setattr(list_ports, "comports", lambda: found)

    assert gang.detect_ports() == ["/dev/ttyACM0", "/dev/ttyUSB0", "/dev/ttyUSB1"]
