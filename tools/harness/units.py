"""The units a scenario runs on: virtual boards here, real units on a bench.

Every unit offers the same surface: `id`, `serial` (write/expect, logged per test), `reset()`,
`screen()`; `power_cut()`, `wifi_down()` and `unplug()`/`plug()` where the board can do them
(virtual boards: a cut supply is the MicroPython process killed mid-whatever, a pulled cable its
serial port gone; real units would need a relay board or a USB hub with per-port power
switching, so those tests skip on them).
"""

import time
from pathlib import Path

import pytest
import serial

from tools.vboard.screen import decode_qr


class SerialLink:
    """The unit's serial port as a scenario uses it; every byte read lands in `log_path`."""

    def __init__(self, url, log_path):
        self.url = url
        self.log_path = Path(log_path)
        self._port = None
        self._seen = b""

    def _open(self):
        if self._port is None:
            self._port = serial.serial_for_url(self.url, timeout=0.1)
        return self._port

    def write(self, data):
        self._open().write(data.encode() if isinstance(data, str) else data)

    def expect(self, text, timeout=10):
        """Read until `text` appears; returns everything read up to and including it."""
        want = text.encode() if isinstance(text, str) else text
        deadline = time.monotonic() + timeout
        while want not in self._seen:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.url}: no {text!r} within {timeout} s; read {self._seen[-500:]!r}"
                )
            chunk = self._open().read(4096)
            if chunk:
                with open(self.log_path, "ab") as log:
                    log.write(chunk)
                self._seen += chunk
        end = self._seen.index(want) + len(want)
        out, self._seen = self._seen[:end], self._seen[end:]
        return out.decode(errors="replace")

    def close(self):
        if self._port is not None:
            self._port.close()
            self._port = None
        self._seen = b""


class Unit:
    """A unit on a serial port: a real one on the bench."""

    def __init__(self, device_id, serial_url, log_dir):
        self.id = device_id
        self.serial_url = serial_url
        self.serial = SerialLink(serial_url, Path(log_dir) / f"{device_id}.log")

    @property
    def log_path(self):
        """What the harness read from the unit's serial port (a virtual board logs it all)."""
        return self.serial.log_path

    def begin_test(self, log_dir):
        self.serial.close()
        self.serial.log_path = Path(log_dir) / f"{self.id}.serial.log"

    def end_test(self):
        self.serial.close()

    def reset(self):
        """A pulse on EN through the auto-reset circuit, as the board's reset button."""
        port = serial.serial_for_url(self.serial_url, do_not_open=True)
        port.dtr = False
        port.rts = True
        port.open()
        time.sleep(0.1)
        port.rts = False
        port.close()

    def screen(self):
        pytest.skip(f"{self.id}: reading the screen needs a virtual board")

    @property
    def screen_path(self):
        pytest.skip(f"{self.id}: reading the screen needs a virtual board")

    def power_off(self):
        pytest.skip(f"{self.id}: cutting power needs a virtual board (or a relay on the bench)")

    power_on = power_cut = wifi_down = power_off

    def unplug(self):
        pytest.skip(
            f"{self.id}: pulling the USB cable needs a virtual board (a real unit's is pulled "
            "by hand, or by a USB hub with per-port power switching)"
        )

    plug = unplug


class VirtualUnit(Unit):
    def __init__(self, board, loop, log_dir):
        super().__init__(board.device_id, board.serial_url, log_dir)
        self.board = board
        self.loop = loop

    def screen(self):
        """Texts of the QR codes on the screen now, decoded by zxing-cpp."""
        return decode_qr(self.board.dir / "display.pbm")

    @property
    def screen_path(self):
        return self.board.dir / "display.pbm"

    @property
    def log_path(self):
        return self.board.dir / "serial.log"

    def power_off(self):
        """Supply cut: the process dies wherever it is, mid-write included."""
        self.serial.close()
        self.loop.run(self.board.power_off())

    def power_on(self):
        self.loop.call(self.board.power_on)

    def power_cut(self, off_s=0.5):
        self.power_off()
        time.sleep(off_s)
        self.power_on()

    def wifi_down(self, seconds):
        """The access point disappears for `seconds`; the call returns at once."""
        self.loop.call(self.board.wifi_down, seconds)

    def unplug(self):
        """The USB cable pulled: whoever has the serial port open loses it (this harness's
        `serial` too), and nobody gets it until plug(); the board runs on."""
        self.serial.close()
        self.loop.call(self.board.unplug)

    def plug(self):
        self.loop.call(self.board.plug)
