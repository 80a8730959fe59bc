"""One virtual board: flash image, eFuse MAC, the MicroPython process and its serial port.

The board's directory holds everything that would survive a power cycle on a real unit:

    flash.bin     the SPI flash, 4, 8 or 16 MiB (bootloader, partition table, apps, vfs)
    efuse.json    the factory-burnt MAC
    serial.log    everything the board printed on its serial port
    display.pbm   the current screen (binary PBM), replaced atomically on each frame
    display.png   on a board with a panel, the screen in the panel's colours

and, while the board runs with its cable in, `serial-url`: its serial port's URL and a newline,
written whole once the port listens, for whoever looks for boards as a PC looks for USB serial
ports (`qrfleet bridge --port auto --vboard-dir DIR`).

The MicroPython process sees only the flash image, as a real board does. The ESP32 port's own
modules (machine, network, esp32) are the port layer's (tools/vboard/port/), wired to the
supervisor: it resets the board for machine.reset(), times machine.WDT and resets the board when
it starves, drives GPIO0 and the access point through the `signals` file (tools/vboard/signals.py),
relays Wi-Fi connections and answers its NTP requests (tools/vboard/radio.py) and keeps the screen's frames
(tools/vboard/port/vscreen.py); requests reach it on the process's stderr.

A board built with a `panel` (a name in tools/vboard/panels.BOARDS) has that panel wired to
its pins instead of the vscreen: the port layer's Pin, SPI and I2C send what goes out on the
wired pins, the panel model turns it into what its glass shows, and that is the screen. Its
warnings (a command the controller would reject, a write it would not hear) are printed on
the serial port, as lines starting `panel: `.

At each reset the supervisor is the ROM and the second-stage bootloader (see `startup`): it
reads the partition table and the OTA data, picks the app and checks its image, and starts the
MicroPython process only for a bootable one; otherwise it prints what the chip prints and
resets in a loop. The process learns what it runs on from its environment:

    QRFLEET_MAC            the eFuse MAC, 12 hex digits
    QRFLEET_RESET_CAUSE    power-on | hard (EN) | software (machine.reset) | soft | panic |
                           watchdog
    QRFLEET_RADIO          HOST:PORT of the board's Wi-Fi relay
    QRFLEET_FLASH_IMAGE    path of flash.bin, the whole flash (its size is the chip's)
    QRFLEET_RUNNING_APP    flash offset of the app partition the bootloader started
    QRFLEET_SIGNALS        path of the signals file
    QRFLEET_BUILTINS_HEAP  heap added for the port's modules, held back by the port layer
    QRFLEET_WIRED_PINS,    a board with a panel: its wiring (see tools/vboard/port/link.py)
    QRFLEET_I2C_DEVICES

Its serial port is an RFC 2217 server on 127.0.0.1. DTR and RTS drive EN and GPIO0 through the
usual auto-reset circuit of ESP32 dev boards, so a reset pulse reboots the board and esptool's
reset sequence enters download mode, as on hardware. Ctrl-C (0x03) on the port becomes SIGINT for
the MicroPython process, which raises KeyboardInterrupt in whatever it is running.

Fault injection for the field tools' tests: while a file `cut-serial` exists in the board's
directory, the port behaves as if its USB cable were pulled (the client is dropped, new ones are
refused, `serial-url` is gone); unplug() and plug() make and remove it. Only the serial port
goes: the board runs on, as one powered apart from its USB port does (for a bus-powered unit a
test adds power_off()). While `radio.answers_time` is False the bench's time server answers
the board nothing (tools/vboard/ntp.py). A board built without an `access_point` has no Wi-Fi
network in range, ever (a unit tethered over USB, see tools/vboard/radio.py).

`chip` picks the identity download mode reports (see chip.CHIPS); `flash_size` and `table` what
a fresh flash image holds (tools/partitions.py: FLASH_SIZES, VARIANTS).
"""

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import signal
from pathlib import Path

import serial.rfc2217

from firmware.config import device_id as device_id_from_mac
from tools import image, micropython, partitions
from tools.vboard import panels, startup
from tools.vboard.flash import FLASH_SIZE, FlashImage, build_image
from tools.vboard.radio import Radio
from tools.vboard.signals import ACCESS_POINT, GPIO0, Signals
from tools.vboard.watchdog import Watchdog

_PORT_SCRIPT = str(Path(__file__).with_name("upy_port.py"))
_EXIT_SOFT_RAW, _EXIT_SOFT = 4, 5
_RST = {
    "power-on": "0x1 (POWERON_RESET)",
    "hard": "0x1 (POWERON_RESET)",
    "soft": "0xc (SW_CPU_RESET)",
    "panic": "0xc (SW_CPU_RESET)",
    "software": "0xc (SW_CPU_RESET)",
    "watchdog": "0xc (SW_CPU_RESET)",  # the task watchdog panics, and a panic restarts the CPU
}
# ESP-IDF's task watchdog report (task_wdt.c) when machine.WDT starves, before the panic restart.
_WDT_REPORT = (
    "E ({ms}) task_wdt: Task watchdog got triggered. The following tasks/users did not reset "
    "the watchdog in time:\r\nE ({ms}) task_wdt:  - mpy_machine_wdt (CPU 0)\r\n"
    "E ({ms}) task_wdt: Tasks currently running:\r\nE ({ms}) task_wdt: CPU 0: mp_task\r\n"
    "E ({ms}) task_wdt: CPU 1: IDLE1\r\nE ({ms}) task_wdt: Aborting.\r\n\r\nRebooting...\r\n"
)
# The ESP32 port's own modules are C in a unit's flash; on this board they are Python in the
# MicroPython heap. The process gets this much more heap for them and the port layer holds back
# what they leave of it (upy_port.import_port_modules), so the firmware has what `heap` gives.
_BUILTINS_HEAP = 56 * 1024
_HEAP_UNITS = {"K": 1024, "M": 1024 * 1024}
_LOG_LIMIT = 4 * 1024 * 1024
_PANIC_DELAY_S = 1.0
_RETRY_DELAY_S = 1.0  # between boot attempts of a chip with nothing bootable
# pyserial's RFC 2217 client takes ~50 ms per control-line change (it polls for the ack), so
# GPIO0 is sampled later than on hardware: after esptool drops RTS, before it drops DTR.
_EN_RC_DELAY_S = 0.1
_CABLE_POLL_S = 1.0  # how soon a `cut-serial` another process makes takes the port away


def _heap_bytes(heap):
    """`--heap` as micropython's -X heapsize reads it: bytes, or a K or M suffix."""
    heap = str(heap)
    if heap[-1:] in _HEAP_UNITS:
        return int(heap[:-1]) * _HEAP_UNITS[heap[-1]]
    return int(heap)


def new_mac():
    """A unique, locally administered, unicast MAC (first octet ...10 in its low bits)."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return bytes(raw)


class Lines:
    """The modem lines pyserial's RFC 2217 PortManager reads and writes."""

    def __init__(self, on_change):
        self._on_change = on_change
        self._dtr = self._rts = False
        self.baudrate, self.bytesize, self.parity, self.stopbits = 115200, 8, "N", 1
        self.xonxoff = self.rtscts = self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False

    @property
    def dtr(self):
        return self._dtr

    @dtr.setter
    def dtr(self, value):
        self._dtr = bool(value)
        self._on_change()

    @property
    def rts(self):
        return self._rts

    @rts.setter
    def rts(self, value):
        self._rts = bool(value)
        self._on_change()

    # The auto-reset circuit of ESP32 dev boards: two transistors cross-wired on DTR/RTS.
    @property
    def en(self):
        return not (self._rts and not self._dtr)

    @property
    def gpio0(self):
        return not (self._dtr and not self._rts)

    def reset_input_buffer(self):
        pass

    def reset_output_buffer(self):
        pass


_IAC = serial.rfc2217.IAC


def _unescape(pm, data):
    """The serial bytes in `data`: PortManager.filter, which goes byte by byte in Python, only
    where Telnet commands are (a flash write is ~40 KB per unit, mostly without them)."""
    out = bytearray()
    i = 0
    while i < len(data):
        if pm.mode == serial.rfc2217.M_NORMAL and pm.suboption is None:
            j = data.find(_IAC, i)
            if j < 0:
                out += data[i:]
                break
            out += data[i:j]
            i = j
        out += b"".join(pm.filter(data[i : i + 1]))
        i += 1
    return bytes(out)


class _Connection:
    """What PortManager writes to: the client's socket."""

    def __init__(self, writer):
        self.writer = writer

    def write(self, data):
        if not self.writer.is_closing():
            self.writer.write(data)


class VirtualBoard:
    def __init__(
        self,
        directory,
        heap=micropython.DEFAULT_HEAP,
        port=0,
        files=None,
        chip="esp32",
        flash_size=FLASH_SIZE,
        table=partitions.GENERIC,
        panel=None,
        access_point=True,
    ):
        self.dir = Path(directory).resolve()
        self.chip = chip
        self.flash_size = flash_size
        self.table = table
        self.heap = heap
        self.port = port
        self.files = files  # what a fresh flash image holds; default: the firmware, no config
        self.mac = None
        self.flash = None
        self.mode = "off"  # off | reset | running | download | halted
        self.reset_cause = "power-on"
        self._lines = Lines(self._lines_changed)
        self._en = True
        self._powered = False
        self._release = None
        self._process = None
        self._ready = False
        self._server = None
        self._client = None
        self._pm = None
        self._plugged = None  # the cable, as last seen: None until the port listens
        self._cable_watch = None
        self._runner = None
        self._boot_request = None
        self._newline_pending = False
        self._line_open = False
        self._log = None
        self._watchdog = Watchdog(self._watchdog_expired)
        self._booted_at = 0.0
        self.signals = None
        self.radio = Radio(
            on_change=lambda up: self.signals.set(ACCESS_POINT, up), access_point=access_point
        )
        self.bootloader = None
        self.panel = None if panel is None else panels.Panel(panels.hardware(panel), self._warn)
        self._publishing = False
        self._vscreen_ignored = False

    # -- identity and flash ---------------------------------------------------------------

    @property
    def device_id(self):
        return device_id_from_mac(self.mac)

    @property
    def serial_url(self):
        return f"rfc2217://127.0.0.1:{self.port}"

    def prepare_identity(self):
        """The board directory and its eFuse MAC, burnt once."""
        self.dir.mkdir(parents=True, exist_ok=True)
        efuse = self.dir / "efuse.json"
        if efuse.exists():
            self.mac = bytes.fromhex(json.loads(efuse.read_text())["mac"].replace(":", ""))
        else:
            self.mac = new_mac()
            efuse.write_text(json.dumps({"mac": self.mac_text}) + "\n")

    def prepare(self):
        """Identity, and a fresh flash image where there is none yet."""
        self.prepare_identity()
        flash_path = self.dir / "flash.bin"
        if not flash_path.exists():
            files = self.files if self.files is not None else image.board_files()
            tmp = flash_path.with_suffix(".tmp")
            tmp.write_bytes(build_image(files, self.flash_size, self.table))
            tmp.replace(flash_path)
        self.flash = FlashImage(str(flash_path))

    @property
    def mac_text(self):
        return ":".join(f"{b:02x}" for b in self.mac)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self):
        """Prepare, open the serial port and power the board on."""
        self.prepare()
        self._log = open(self.dir / "serial.log", "ab")
        self._stdin_r, self._stdin_w = os.pipe()
        self._stdout_r, self._stdout_w = os.pipe()
        for fd in (self._stdin_w, self._stdout_r):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        asyncio.get_running_loop().add_reader(self._stdout_r, self._on_stdout)
        self.signals = Signals(self.dir / "signals")
        self.signals.set(ACCESS_POINT, self.radio.up)
        await self.radio.start()
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._cable_changed()
        self._cable_watch = asyncio.create_task(self._watch_cable())
        self._boot_request = asyncio.Event()
        self._runner = asyncio.create_task(self._run())
        self.power_on()

    async def stop(self):
        """Power off: the process is killed as a cut supply would, the port closes."""
        for task in (self._runner, self._cable_watch):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        (self.dir / "serial-url").unlink(missing_ok=True)
        await self._kill()
        self._watchdog.stop()
        await self.radio.stop()
        self.signals.close()
        if self._server:
            self._server.close()
            if self._client:
                self._client.close()
            await self._server.wait_closed()
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._stdout_r)
        for fd in (self._stdin_r, self._stdin_w, self._stdout_r, self._stdout_w):
            os.close(fd)
        self._log.close()
        self.mode = "off"

    async def power_off(self):
        """The chip's supply cut, the USB-serial bridge still on: the process dies wherever
        it is (mid-write included) and the serial port stays open, as on a dev board whose
        3.3 V rail is switched."""
        self._powered = False
        self.mode = "off"
        self._boot_request.clear()
        self._watchdog.stop()
        await self._kill()
        if self.panel:
            self.panel.power_off()
            self._panel_changed()

    def power_on(self, download=False):
        self._powered = True
        self._request_boot("power-on", download)

    def reset(self, download=False):
        """A pulse on EN, as the reset button or esptool's reset sequence gives."""
        self._request_boot("hard", download)

    def wifi_down(self, seconds):
        """The board loses its access point for `seconds` (see tools/vboard/radio.py)."""
        self.radio.down_for(seconds)

    def unplug(self):
        """The USB cable pulled: the port's client is dropped at once, new ones are refused and
        `serial-url` goes, until plug()."""
        (self.dir / "cut-serial").touch()
        self._cable_changed()

    def plug(self):
        (self.dir / "cut-serial").unlink(missing_ok=True)
        self._cable_changed()

    def _watchdog_expired(self):
        uptime_ms = int((asyncio.get_running_loop().time() - self._booted_at) * 1000)
        self._emit(_WDT_REPORT.format(ms=uptime_ms).encode())
        self._request_boot("watchdog", False)

    def _request_boot(self, cause, download):
        self._watchdog.stop()
        self.reset_cause = cause
        self._download = download
        self.mode = "reset"
        self._boot_request.set()
        if self._process and self._process.returncode is None:
            self._process.kill()

    def _lines_changed(self):
        if self.signals:
            self.signals.set(GPIO0, self._lines.gpio0)
        en = self._lines.en
        if en == self._en:
            return
        self._en = en
        if self._release is not None:
            self._release.cancel()
            self._release = None
        if not en:  # held in reset
            self.mode = "reset"
            self._watchdog.stop()
            if self._process and self._process.returncode is None:
                self._process.kill()
        else:
            # EN rises through an RC delay on dev boards; the chip samples GPIO0 once it is up,
            # which is what lets esptool drop RTS just after raising DTR.
            self._release = asyncio.get_running_loop().call_later(_EN_RC_DELAY_S, self._released)

    def _released(self):
        self._release = None
        if self._lines.en:
            self.reset(download=not self._lines.gpio0)

    async def _run(self):
        """Boot whenever asked, then keep the board running through soft resets and crashes."""
        while True:
            await self._boot_request.wait()
            self._boot_request.clear()
            await self._kill()
            if not self._en or not self._powered:
                continue
            self._drain_stdin()
            self._chip_reset()
            if self._download:
                self._enter_download_mode()  # the ROM loader prints its own banner
                continue
            self._emit(startup.rom_banner(_RST[self.reset_cause]).encode())
            self._booted_at = asyncio.get_running_loop().time()
            boot = None
            boot_mode = "normal"
            while not self._boot_request.is_set():
                if boot is None:
                    boot = await asyncio.to_thread(startup.start, self.flash)
                    if self._boot_request.is_set() or not self._en or not self._powered:
                        break  # reset or power cut while the bootloader ran
                    self._emit(boot.output.encode())
                    if boot.app is None:
                        self.mode = "halted"
                        retry = not await self._reset_within(_RETRY_DELAY_S)
                        if not (retry and self._en and self._powered):
                            break
                        self._emit(startup.rom_banner(boot.retry_reset).encode())
                        boot = None
                        continue
                status = await self._run_port(boot, boot_mode)
                if self._boot_request.is_set() or not self._en or not self._powered:
                    break
                if status in (_EXIT_SOFT_RAW, _EXIT_SOFT):
                    self.reset_cause = "soft"
                    boot_mode = "raw" if status == _EXIT_SOFT_RAW else "normal"
                else:
                    self.reset_cause = "panic"
                    self._emit(
                        f"\r\nqrfleet virtual board: MicroPython exited with status {status}; "
                        "rebooting\r\n".encode()
                    )
                    await asyncio.sleep(_PANIC_DELAY_S)
                    self._chip_reset()
                    self._emit(startup.rom_banner(_RST["panic"]).encode())
                    boot, boot_mode = None, "normal"

    async def _reset_within(self, seconds):
        """Whether a reset or power cut came within `seconds` (the wait ends with it)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._boot_request.wait(), seconds)
        return self._boot_request.is_set()

    async def _run_port(self, boot, boot_mode):
        env = dict(
            os.environ,
            QRFLEET_MAC=self.mac.hex(),
            QRFLEET_RESET_CAUSE=self.reset_cause,
            QRFLEET_RADIO=f"127.0.0.1:{self.radio.port}",
            QRFLEET_FLASH_IMAGE=self.flash.path,
            QRFLEET_RUNNING_APP=str(boot.app.offset),
            QRFLEET_SIGNALS=self.signals.path,
            QRFLEET_BUILTINS_HEAP=str(_BUILTINS_HEAP),
        )
        self._vscreen_ignored = False
        if self.panel:
            env.update(self.panel.port_environment())
        argv = [_PORT_SCRIPT, boot_mode, boot.banner]
        self._ready = False
        self.mode = "running"
        process = self._process = await asyncio.create_subprocess_exec(
            *micropython.command(argv, _heap_bytes(self.heap) + _BUILTINS_HEAP),
            stdin=self._stdin_r,
            stdout=self._stdout_w,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        if self._boot_request.is_set() or not self._en or not self._powered:
            process.kill()  # reset or power cut while it was starting
        async for line in process.stderr:
            if line.startswith(b"qrfleet-port: feed"):
                self._watchdog.feed()
            elif line.startswith(b"qrfleet-port: ready"):
                self._ready = True
            elif line.startswith(b"qrfleet-port: reset"):
                self._request_boot("software", False)
            elif line.startswith(b"qrfleet-port: wdt "):
                self._watchdog.start(int(line.split()[2]))
            elif line.startswith(b"qrfleet-port: screen "):
                width, height, size = (int(v) for v in line.split()[2:5])
                with contextlib.suppress(asyncio.IncompleteReadError):
                    frame = await process.stderr.readexactly(size)
                    self._vscreen_frame(width, height, frame)
            elif line.startswith(b"qrfleet-port: pin "):
                self.panel.pin(*(int(v) for v in line.split()[2:4]))
                self._panel_changed()
            elif line.startswith(b"qrfleet-port: spi-init "):
                self.panel.spi_init(*(int(v) for v in line.split()[2:9]))
            elif line.startswith(b"qrfleet-port: spi "):
                host, size = (int(v) for v in line.split()[2:4])
                with contextlib.suppress(asyncio.IncompleteReadError):
                    self.panel.spi_write(host, await process.stderr.readexactly(size))
                self._panel_changed()
            elif line.startswith(b"qrfleet-port: i2c "):
                address, size = (int(v) for v in line.split()[2:4])
                with contextlib.suppress(asyncio.IncompleteReadError):
                    self.panel.i2c_write(address, await process.stderr.readexactly(size))
                self._panel_changed()
            else:
                self._emit(line.replace(b"\n", b"\r\n"))
        return await process.wait()

    def _publish_screen(self, width, height, rows):
        """Replace display.pbm atomically: a reader sees the old frame or the new one."""
        path = self.dir / "display.pbm"
        tmp = path.with_suffix(".pbm.tmp")
        tmp.write_bytes(b"P4\n%d %d\n" % (width, height) + rows)
        tmp.replace(path)

    def _vscreen_frame(self, width, height, rows):
        if not self.panel:
            self._publish_screen(width, height, rows)
        elif not self._vscreen_ignored:  # a unit has no vscreen; this board's screen is its panel
            self._vscreen_ignored = True
            self._warn(
                "qrfleet virtual board: a frame for the virtual screen, which this board "
                f"({self.panel.hw.description}) does not have; not shown"
            )

    # -- the panel -------------------------------------------------------------------------

    def _warn(self, line):
        """A line of the supervisor's own on the serial port, on a line of its own."""
        self._emit((b"\r\n" if self._line_open else b"") + line.encode() + b"\r\n")

    def _chip_reset(self):
        if self.panel:
            self.panel.chip_reset(self.reset_cause)
            self._panel_changed()

    def _panel_changed(self):
        """Publish what the glass shows once the bytes at hand are handled (one frame is
        many writes; the view is drawn when the port's stream pauses, not per write)."""
        if self.panel.changed and not self._publishing:
            self._publishing = True
            asyncio.get_running_loop().call_soon(self._publish_panel)

    def _publish_panel(self):
        self._publishing = False
        self.panel.changed = False
        view = self.panel.view()
        self._publish_screen(view.width, view.height, panels.pbm_rows(view))
        path = self.dir / "display.png"
        tmp = path.with_suffix(".png.tmp")
        view.save(tmp, "PNG", compress_level=1)
        tmp.replace(path)

    async def _kill(self):
        process, self._process = self._process, None
        if process and process.returncode is None:
            process.kill()
            await process.wait()
        self._ready = False

    def _drain_stdin(self):
        """A reset empties the UART's receive FIFO."""
        fcntl.fcntl(self._stdin_r, fcntl.F_SETFL, os.O_NONBLOCK)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._stdin_r, 65536):
                pass
        fcntl.fcntl(self._stdin_r, fcntl.F_SETFL, 0)

    # -- download mode ---------------------------------------------------------------------

    def _enter_download_mode(self):
        from tools.vboard.bootloader import RomBootloader

        self.mode = "download"
        self.bootloader = RomBootloader(self.flash, self.mac, self.chip)
        self.bootloader.on_enter()
        self._flush_bootloader()

    def _flush_bootloader(self):
        out = self.bootloader.data_to_send()
        if out:
            self._emit(out, cook=False)
        if self.bootloader.reboot_requested:
            self.bootloader = None
            self.reset()

    # -- serial port -----------------------------------------------------------------------

    def serial_input(self, data):
        """Bytes arriving on the board's UART RX."""
        if self.mode == "download" and self.bootloader:
            self.bootloader.receive_data(data)
            self._flush_bootloader()
            return
        if self.mode != "running":
            return
        if b"\x03" in data and self._ready:
            # Ctrl-C interrupts whatever runs, as MicroPython's UART IRQ does on a board.
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGINT)
            data = data.replace(b"\x03", b"")
        with contextlib.suppress(BlockingIOError):  # a full FIFO drops bytes, as a UART does
            os.write(self._stdin_w, data)

    def _on_stdout(self):
        try:
            data = os.read(self._stdout_r, 65536)
        except BlockingIOError:
            return
        if self.mode == "running":
            self._emit(data)

    def _emit(self, data, cook=True):
        """Bytes on the board's UART TX: to the log and to the client, if one is connected."""
        if cook:
            data = self._cook(data)
        if data:
            self._line_open = not data.endswith(b"\n")
        if self._log.tell() < _LOG_LIMIT:
            self._log.write(data)
            self._log.flush()
        if self._pm:
            self._client.write(data.replace(_IAC, _IAC + _IAC))  # PortManager.escape, at once

    def _cook(self, data):
        """LF -> CRLF as MicroPython's stdout does on a UART; CRLF stays as it is."""
        out = bytearray()
        previous_cr = self._newline_pending
        for b in data:
            if b == 0x0A and not previous_cr:
                out += b"\r"
            out.append(b)
            previous_cr = b == 0x0D
        self._newline_pending = previous_cr
        return bytes(out)

    def _cable_cut(self):
        return (self.dir / "cut-serial").exists()

    def _cable_changed(self):
        """Bring the port in line with `cut-serial`: announce it, or drop its client."""
        plugged = not self._cable_cut()
        if plugged == self._plugged:
            return
        self._plugged = plugged
        path = self.dir / "serial-url"
        if plugged:
            tmp = path.with_name("serial-url.tmp")
            tmp.write_text(self.serial_url + "\n")
            tmp.replace(path)
            return
        path.unlink(missing_ok=True)
        if self._client is not None:
            self._client.transport.abort()  # no goodbye: the wire is gone
            self._client = self._pm = None

    async def _watch_cable(self):
        while True:
            await asyncio.sleep(_CABLE_POLL_S)
            self._cable_changed()

    async def _on_client(self, reader, writer):
        if self._client is not None or self._cable_cut():  # a serial port has one user at a time
            writer.close()
            return
        self._client = writer
        pm = self._pm = serial.rfc2217.PortManager(self._lines, _Connection(writer))
        try:
            while (
                (data := await reader.read(4096))
                and self._client is writer
                and not self._cable_cut()
            ):
                forward = _unescape(pm, data)
                if forward:
                    self.serial_input(forward)
        except ConnectionError:
            pass
        finally:
            if self._client is writer:  # an unplug may have dropped it, and a plug let in another
                self._client = None
                self._pm = None
            writer.close()
