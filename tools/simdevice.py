"""Simulated units for load and protocol tests: the firmware's own session code, in CPython.

A simulated unit runs `firmware.net.session.Session` (the code units run) and answers commands
as a unit would, but encodes QRs instead of drawing them: enough to put thousands of units on
one server from one process, which virtual boards (one MicroPython process each) cannot.
"""

import asyncio

from firmware import qr
from firmware.net.session import CommandError, Session
from firmware.proto import messages

FIRMWARE = "sim-0.1.0"


class SimulatedUnit:
    def __init__(self, device_id, secret, urls):
        self.device_id = device_id
        self.screen = "booting"
        self.shown = []  # (kind, payload) of every QR "drawn", for tests to inspect
        self.session = Session(
            device_id, secret, urls, self, self.status, FIRMWARE, log=lambda line: None
        )

    def status(self):
        return {
            "uptime_s": 0,
            "free_heap": 100000,
            "rssi": -50,
            "fw": FIRMWARE,
            "screen": self.screen,
        }

    def handle(self, msg):
        kind = msg["type"]
        if kind == "show_qr":
            return self._draw("payment", msg["payload"], msg["ecc"])
        if kind == "show_pairing":
            return self._draw("pairing", messages.pairing_uri(self.device_id, msg["code"]), "M")
        if kind == "show_result":
            self.screen = "result"
        elif kind == "clear":
            self.screen = "status"
        elif kind not in ("info", "reboot"):
            raise CommandError(messages.UNKNOWN_COMMAND, f"unit cannot {kind}")
        return {"screen": self.screen}

    def _draw(self, screen, payload, ecc):
        try:
            symbol = qr.encode(payload, ecc)
        except qr.QRError as e:
            raise CommandError(messages.PAYLOAD_TOO_LARGE, str(e)) from None
        self.screen = screen
        self.shown.append((screen, payload))
        return {
            "version": symbol.version,
            "mask": symbol.mask,
            "ecc": ecc,
            "sha256": messages.matrix_digest(symbol),
            "screen": screen,
        }

    @property
    def online(self):
        return self.session.connected

    def start(self):
        self.task = asyncio.ensure_future(self.session.run_forever())
        return self.task

    async def stop(self):
        # Again until it ends: CPython 3.11's wait_for can swallow a cancel that lands just as
        # the wait it guards ends, and the session would carry on.
        while not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=1)
        try:
            await self.task  # done by now: raises what ended it, if it was not the cancel
        except asyncio.CancelledError:
            pass
