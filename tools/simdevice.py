"""Simulated units for load and protocol tests: the firmware's own session code, in CPython.

A simulated unit runs `firmware.net.session.Session` (the code units run) and answers commands
as a unit would, but encodes QRs instead of drawing them: enough to put thousands of units on
one server from one process, which virtual boards (one MicroPython process each) cannot.

It takes updates as a unit does on the wire (docs/updates.md), kept in memory: the manifest's
signature is checked against `release_keys` (nothing else is: a real unit's checks are
firmware/ota/update.py's), the switch restarts the session with the new version on trial, and a
version in `fail_at_import` comes back on the old one, rolled back, as a unit whose new version
cannot start does.
"""

import asyncio
import base64
import json

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from firmware import qr
from firmware.net.session import CommandError, Session
from firmware.proto import messages

FIRMWARE = "sim-0.1.0"
RESET_S = 0.1  # from acking update_switch to restarting: the ack goes out first


class _Download:
    """An update arriving in memory: the blobs so far (0: the manifest, 1..: its files) and
    the sizes they must reach."""

    def __init__(self, version, size, sig):
        self.version = version
        self.sig = sig
        self.sizes = [size]
        self.blobs = [bytearray()]

    @property
    def position(self):
        """(file, offset) of the next byte wanted; past the last file when all are whole."""
        for n, (blob, size) in enumerate(zip(self.blobs, self.sizes, strict=True)):
            if len(blob) < size:
                return n, len(blob)
        return len(self.sizes), 0

    @property
    def ready(self):
        return self.position[0] == len(self.sizes)

    def ack(self):
        file, offset = self.position
        return {"state": "ready" if self.ready else "downloading", "file": file, "offset": offset}


class SimulatedUnit:
    def __init__(self, device_id, secret, urls, release_keys=(), fail_at_import=()):
        """`release_keys`: 32-byte Ed25519 public keys it takes releases signed by;
        `fail_at_import`: versions that do not start here (the unit rolls back)."""
        self.device_id = device_id
        self.screen = "booting"
        self.shown = []  # (kind, payload) of every QR "drawn", for tests to inspect
        self.release_keys = list(release_keys)
        self.fail_at_import = set(fail_at_import)
        self._download = None
        self._reset = None  # the restart after a switch
        self._stopped = False
        self.session = Session(
            device_id,
            secret,
            urls,
            self,
            self.status,
            FIRMWARE,
            log=lambda line: None,
        )

    @property
    def firmware(self):
        return self.session.fw

    def status(self):
        return {
            "uptime_s": 0,
            "free_heap": 100000,
            "rssi": -50,
            "fw": self.firmware,
            "screen": self.screen,
        }

    def handle(self, msg):
        kind = msg["type"]
        if kind.startswith("update_"):
            return getattr(self, "_" + kind)(msg)
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

    # -- updates

    def _update_offer(self, msg):
        if not self.release_keys:
            raise CommandError(messages.UPDATE_REFUSED, "this unit trusts no release key")
        if msg["version"] == self.firmware:
            raise CommandError(messages.UPDATE_REFUSED, f"this unit already runs {msg['version']}")
        known = self._download
        if known is None or (known.version, known.sig) != (msg["version"], msg["sig"]):
            self._download = _Download(msg["version"], msg["size"], msg["sig"])
        return self._download.ack()

    def _update_chunk(self, msg):
        download = self._download
        if download is None:
            raise CommandError(messages.UPDATE_FAILED, "no update was offered")
        if (msg["file"], msg["offset"]) != download.position:
            return download.ack()
        blob = download.blobs[msg["file"]]
        blob.extend(base64.b64decode(msg["data"]))
        if msg["file"] == 0 and len(blob) == download.sizes[0]:
            self._manifest_arrived(download, bytes(blob))
        return download.ack()

    def _manifest_arrived(self, download, text):
        signature = bytes.fromhex(download.sig)
        for key in self.release_keys:
            try:
                VerifyKey(key).verify(text, signature)
                break
            except BadSignatureError:
                continue
        else:
            self._download = None
            raise CommandError(messages.UPDATE_REFUSED, "no release key of this unit signed it")
        files = json.loads(text)["files"]
        download.sizes += [entry["size"] for entry in files]
        download.blobs += [bytearray() for _ in files]

    def _update_switch(self, msg):
        if self._download is None or not self._download.ready:
            raise CommandError(messages.UPDATE_FAILED, "the update is not fully downloaded yet")
        version, self._download = self._download.version, None
        self._reset = asyncio.ensure_future(self._reset_into(version))
        return {"state": "installing"}

    def _update_commit(self, msg):
        if (self.session.update or {}).get("state") == "trial":
            self.session.update = {**self.session.update, "state": "committed"}
        return {"state": "committed"}

    async def _reset_into(self, version):
        """Restart as a unit does after the switch: on the new version on trial, or back on
        the old one if the new one fails to import."""
        await asyncio.sleep(RESET_S)
        if self._stopped:
            return
        self.task.cancel()
        await asyncio.wait({self.task})
        if self._stopped:
            return
        if version in self.fail_at_import:
            reason = f"{version} failed to import: ImportError"
            self.session.update = {"version": version, "state": "rolled_back", "reason": reason}
        else:
            self.session.fw = version
            self.session.update = {"version": version, "state": "trial", "reason": None}
        self.screen = "booting"
        self.start()

    @property
    def online(self):
        return self.session.connected

    def start(self):
        self.task = asyncio.ensure_future(self.session.run_forever())
        return self.task

    async def stop(self):
        self._stopped = True
        # Again until it ends: CPython 3.11's wait_for can swallow a cancel that lands just as
        # the wait it guards ends, and the session would carry on.
        while not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=1)
        try:
            await self.task  # done by now: raises what ended it, if it was not the cancel
        except asyncio.CancelledError:
            pass
