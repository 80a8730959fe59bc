"""The one place that wires the HAL, the configuration, the screen and the server session.

Boot: safe mode skips the application (the REPL stays for a technician); a missing or
unusable config shows "not provisioned" with the reason and stops there, so mpremote can
provision the unit; otherwise Wi-Fi, then the session runs until the board resets (setting
the clock over SNTP before a wss:// server, whose certificate dates are checked against it).
A unit whose config says `"link": "usb"` has no Wi-Fi and no clock to set: its session runs
over the USB UART through the bridge on the cashier's PC (firmware/net/tether.py).
"""

import asyncio
import gc
import os

from firmware import config, hal
from firmware.compat import ticks_diff, ticks_ms
from firmware.display import profiles
from firmware.display.render import PayloadTooLarge, Renderer
from firmware.proto import messages
from firmware.proto.messages import CommandError
from firmware.version import VERSION as FIRMWARE_VERSION

_WATCHDOG_MS = 30000
_FEED_MS = 1000
_WIFI_TIMEOUT_MS = 20000
_REBOOT_DELAY_MS = 300
# A version on trial that no server has verified by then goes back to the one before it.
_TRIAL_S = 600
_UPDATE_IDLE_MS = 90000  # update mode without an update command this long ends


class Unit:
    """The unit's state and its answers to server commands."""

    def __init__(self, device_id, cfg, renderer):
        self.device_id = device_id
        self.cfg = cfg
        self.renderer = renderer
        self.screen = "booting"
        self.started = ticks_ms()
        self.clock = None  # firmware.net.clock.Clock, when a server is wss://
        self.updater = None  # firmware.ota.update.Updater, in update mode
        self.update_heard = ticks_ms()

    def draw(self, drawn):
        self.screen = drawn.screen
        gc.collect()
        return drawn

    def status(self):
        """The changing fields of a heartbeat; a heartbeat is a safe point to collect, which
        also makes `free_heap` the live figure an operator can compare over time."""
        gc.collect()
        return {
            "uptime_s": ticks_diff(ticks_ms(), self.started) // 1000,
            "free_heap": gc.mem_free(),
            "rssi": hal.wlan().rssi() if self.cfg["link"] == "wifi" else None,
            "fw": FIRMWARE_VERSION,
            "screen": self.screen,
        }

    def handle(self, msg):
        """Run one server command; returns the ack's fields or raises CommandError."""
        kind = msg["type"]
        if self.updater and kind in ("show_qr", "show_pairing", "show_result", "clear"):
            raise CommandError(messages.BUSY, "unit is installing an update; back in a minute")
        if kind == "show_qr":
            try:
                drawn = self.renderer.payment(msg["payload"], msg["caption"] or None, msg["ecc"])
            except PayloadTooLarge as e:
                raise CommandError(messages.PAYLOAD_TOO_LARGE, str(e)) from None
            return self._qr_ack(self.draw(drawn))
        if kind == "show_pairing":
            return self._qr_ack(self.draw(self.renderer.pairing(self.device_id, msg["code"])))
        if kind == "show_result":
            self.draw(self.renderer.result(msg["result"]))
            return {"screen": self.screen}
        if kind == "clear":
            self.draw(self.renderer.status("ready", self.cfg["name"] or None))
            return {"screen": self.screen}
        if kind == "info":
            return self.info()
        if kind == "reboot":
            asyncio.create_task(_reboot_soon())
            return {}
        if kind.startswith("update_"):  # its code imported only when one comes
            from firmware.ota import mode

            return mode.handle(self, kind, msg, FIRMWARE_VERSION, _restart_soon)
        raise CommandError(messages.UNKNOWN_COMMAND, "unit cannot %s" % kind)

    async def clock_ready(self):
        """Before a wss:// attempt: a certificate's dates need the clock set; until it is, the
        screen says so (the serial log says why)."""
        if await self.clock.ensure():
            return True
        self.draw(self.renderer.status("clock", self.cfg["ntp"]))
        return False

    def untrusted(self, url, reason):
        """A server failed to prove itself or sent a message with a wrong MAC: whatever QR it
        sent is not shown, and the screen says so until a trusted server takes over."""
        self.draw(self.renderer.status("untrusted", url))

    def _qr_ack(self, drawn):
        qr = drawn.qr
        return {
            "version": qr.version,
            "mask": qr.mask,
            "ecc": qr.ecc,
            "sha256": messages.matrix_digest(qr),
            "scale": drawn.scale,
            "screen": drawn.screen,
        }

    def info(self):
        fields = self.status()
        fields.update(
            device_id=self.device_id,
            name=self.cfg["name"],
            boot_count=hal.boot_count(),
            reset_cause=hal.reset_cause(),
            display=self.cfg["display"],
            width=self.renderer.width,
            height=self.renderer.height,
        )
        return fields


def _restart_soon():
    asyncio.create_task(_reboot_soon())


async def _reboot_soon():
    await asyncio.sleep_ms(_REBOOT_DELAY_MS)  # let the ack leave first
    hal.reset()


async def _feed(watchdog):
    while True:
        watchdog.feed()
        await asyncio.sleep_ms(_FEED_MS)


async def _wifi(cfg, unit):
    wifi = cfg["wifi"]
    if not wifi:
        return
    wlan = hal.wlan()
    unit.draw(unit.renderer.status("wifi", wifi["ssid"]))
    wlan.connect(wifi["ssid"], wifi.get("password"))
    start = ticks_ms()
    while not wlan.isconnected():
        if ticks_diff(ticks_ms(), start) > _WIFI_TIMEOUT_MS:
            print("qrfleet: Wi-Fi %r not joined yet; keeps trying" % wifi["ssid"])
            return
        await asyncio.sleep_ms(200)


async def _trial_deadline():
    await asyncio.sleep(_TRIAL_S)
    import loader

    if loader.on_trial():
        loader.roll_back("no server verified it within %d s" % _TRIAL_S)
        hal.reset()


async def _update_deadline(unit):
    """Update mode ends when its server stops sending the update (a paused rollout, a lost
    link): the unit goes back to serving QRs."""
    while ticks_diff(ticks_ms(), unit.update_heard) < _UPDATE_IDLE_MS:
        await asyncio.sleep_ms(_FEED_MS)
    print("qrfleet: no update command for %d s; back to serving QRs" % (_UPDATE_IDLE_MS // 1000))
    hal.reset()


async def _run(unit, session, update, tether):
    asyncio.create_task(_feed(hal.Watchdog(_WATCHDOG_MS)))
    if update and update["state"] == "trial":
        asyncio.create_task(_trial_deadline())
    if unit.updater:
        asyncio.create_task(_update_deadline(unit))
    if tether:
        asyncio.create_task(tether.run())
    else:
        await _wifi(unit.cfg, unit)
    if not unit.updater:  # in update mode, "Updating" stays on the screen
        unit.draw(unit.renderer.status("connecting", unit.cfg["servers"][0]))
    await session.run_forever()


def main():
    device_id = config.device_id(hal.unique_id())
    print(
        "qrfleet %s on %s, boot %d (%s)"
        % (FIRMWARE_VERSION, device_id, hal.boot_count(), hal.reset_cause())
    )
    if hal.safe_mode():
        print("qrfleet: safe mode, application skipped; the REPL is yours")
        return
    try:
        cfg = config.load()
    except config.ConfigError as e:
        print("qrfleet: not provisioned: %s" % e)
        _show_not_provisioned(device_id, str(e))
        return
    updating, update = _update_state()
    try:
        cfg["display"] = cfg["display"] or hal.DISPLAY
        display = profiles.build(cfg["display"], hal)
    except ValueError as e:
        print("qrfleet: display: %s" % e)
        return
    unit = Unit(device_id, cfg, Renderer(display, with_qr=not updating))
    unit.draw(unit.renderer.status("booting", device_id))
    if updating:  # the heap the QR encoder's buffers would take is the download's
        from firmware.ota.update import Updater

        unit.updater = Updater(cfg["release_keys"], FIRMWARE_VERSION)
        unit.draw(unit.renderer.status("updating", updating["version"]))
        print("qrfleet: update mode, for %s" % updating["version"])
        if updating["sig"]:  # a manifest arrived whole: checked before the network starts
            unit.updater.check_staged(updating["version"], updating["sig"])
    print("qrfleet: %s display ready, %d bytes of heap free" % (cfg["display"], gc.mem_free()))
    # The network code is imported only now: the display's and the encoder's buffers were
    # taken from a heap still whole, before its import left garbage between the code it keeps.
    from firmware.net.session import Session

    try:
        tether = tls = connect = None
        anchor = config.trust_anchor(cfg) if cfg["link"] == "wifi" else None
        if cfg["link"] == "usb":  # the bridge speaks WebSocket and TLS: none of that code here
            from firmware.net.tether import Tether

            # No bridge, or a server the bridge cannot reach: the screen says so until a
            # session starts.
            tether = Tether(
                device_id, lambda state, why: unit.draw(unit.renderer.status(state, why))
            )
            connect = tether.connect
        elif anchor:
            from firmware.net.clock import Clock
            from firmware.net.tls import tls_context

            unit.clock = Clock(cfg["ntp"], hal.set_clock)
            tls = tls_context(anchor)
        session = Session(
            device_id,
            cfg["secret"],
            cfg["servers"],
            unit,
            unit.status,
            FIRMWARE_VERSION,
            opener=hal.open_connection,
            untrusted=unit.untrusted,
            tls=tls,
            max_message=messages.UPDATE_MESSAGE
            if unit.updater
            else unit.renderer.largest_payload() + messages.SHOW_QR_OVERHEAD,
            clock=unit.clock_ready if anchor else None,
            reset=hal.reset_cause(),
            update=update,
            connect=connect,
        )
        asyncio.run(_run(unit, session, update, tether))
    except Exception as e:  # noqa: BLE001 - an unattended unit must come back by itself
        import sys

        sys.print_exception(e)
        print("qrfleet: firmware stopped on an error; restarting")
        hal.reset()


def _update_state():
    """(update mode's marker or None, what hello tells of the last update), read with the
    loader, which is let go again: its heap is the QR encoder's. Update mode lasts one boot:
    whatever ends it (done, refused, no server, a crash), the next boot serves QRs again, and a
    server that offers the release again resumes it."""
    import sys

    import loader

    updating = loader.read(loader.UPDATING)
    if updating:
        os.remove(loader.UPDATING)
    update = loader.status()
    sys.modules.pop("loader", None)
    return updating, update


def _show_not_provisioned(device_id, reason):
    try:
        renderer = Renderer(profiles.build(hal.DISPLAY, hal))
        renderer.status("unprovisioned", device_id)
    except Exception as e:  # noqa: BLE001 - the serial message above already says it all
        print("qrfleet: cannot show the not-provisioned screen: %s" % e)
