"""The board's task watchdog, as machine.WDT runs it on an ESP32 (ESP-IDF's TWDT): timed here,
started and fed by the port (tools/vboard/port/machine.py). Once started it cannot be stopped
from the board and it keeps running through soft resets; only a reset of the chip stops it.
When it expires the board prints what ESP-IDF prints and the supervisor resets it."""

import asyncio


class Watchdog:
    def __init__(self, on_expiry):
        self._on_expiry = on_expiry
        self._timeout_s = None
        self._timer = None

    def start(self, timeout_ms):
        """machine.WDT(timeout=...): also a new timeout for a running watchdog, as the port's
        esp_task_wdt_reconfigure gives."""
        self._timeout_s = timeout_ms / 1000
        self.feed()

    def feed(self):
        if self._timeout_s is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._timeout_s, self._expired)

    def stop(self):
        """The chip reset: the watchdog is off until the next machine.WDT()."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timeout_s = None

    def _expired(self):
        self._timer = self._timeout_s = None
        self._on_expiry()
