"""The bridge on a cashier's PC: it connects the tethered units plugged into its serial ports to
their server (docs/tethered.md).

    bridge = Bridge(["https://qr.example.com:8443"], name="till-3", log=print)
    await bridge.run(["auto"])      # or ["/dev/ttyUSB0", "COM3", "rfc2217://127.0.0.1:PORT"]
    bridge.status()                 # per port: the unit, attached or not, its stream, bytes

Per port, a worker opens the port without resetting the unit and drives the bridge's end of
firmware.proto.link over it. The unit opens one stream at a time to the URL of one of its
servers; the bridge connects only to its own servers, with the firmware's WebSocket client
(TLS checked against the system's CAs and `server_ca`, and `X-Qrfleet-Via: bridge@<name>` in
the upgrade request), answers OPENED, or REFUSED with a reason the unit shows, and then passes
the unit's messages and the server's on, one whole message per DATA, unchanged. The unit seals
each of its messages with its secret and checks each of the server's (firmware.proto.auth):
the bridge holds no secret and can neither speak for a unit nor alter what it says. (The unit
has no room for a WebSocket client of its own: ~27 KB of heap.)

When the unit is lost (the port fails, no frame for link.PEER_TIMEOUT_MS, or the unit
restarted) the server connection is cut at once, so the server sees the unit offline at once.
A port that fails to open, or fails, is opened again every REOPEN_S. After a server could not
be reached, units are refused at once until its backoff (firmware.net.policy) has passed.

pyserial is blocking: each open port has a thread that reads it; opening, writing and closing
run in the default executor. Everything else runs on the event loop.
"""

import asyncio
import dataclasses
import math
import os
import re
import socket
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import serial

from firmware.compat import ticks_diff, ticks_ms
from firmware.net import ws
from firmware.net.policy import backoff_ms
from firmware.proto import link
from firmware.proto.auth import Untrusted
from firmware.proto.close import ConnectionClosed
from firmware.proto.errors import ProtocolError
from firmware.proto.link import CLOSE, DATA, OPEN, OPENED, REFUSED

BAUD = 115200
CONNECT_TIMEOUT_S = 10  # TCP, TLS and WebSocket handshakes to a server, together
REOPEN_S = 1.0  # a port that failed is opened again this often: a cable plugged back comes back
RESCAN_S = 2.0  # --port auto looks for ports that came or went this often
MESSAGE_MAX = 8192  # the largest message taken from a unit: a unit's are far smaller
_READ_TIMEOUT_S = 0.05  # how soon a port's reader thread notices it should stop
_READ_MAX = 1024  # bytes passed to the loop at once: fewer lines than the link's console keeps
_WRITE_TIMEOUT_S = 2
_STOP_TIMEOUT_S = 5  # for a port's worker to close it
_REASON_MAX = link.BRIDGE_PAYLOAD - 1  # a REFUSED or CLOSE reason fits one frame
_NAME = re.compile(r"[!-~]{1,63}")  # goes into an HTTP header and into each HELLO
_SCHEMES = {"ws": False, "http": False, "wss": True, "https": True}  # -> TLS


class BridgeError(ValueError):
    """A setting the bridge cannot work with: the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Server:
    url: str  # as given
    host: str
    port: int
    secure: bool  # the bridge speaks TLS to it

    @property
    def address(self):
        return _address(self.host, self.port)


def _address(host, port):
    """HOST:PORT, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_server(url):
    """A Server from ws://, wss://, http:// or https://HOST[:PORT][/path] (the path is the
    unit's business)."""
    parts = urlsplit(url)
    secure = _SCHEMES.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if secure is None or not parts.hostname or port == -1:
        raise BridgeError(
            f"server URL {url!r} must look like https://HOST[:PORT] or wss://HOST[:PORT] "
            "(http:// or ws:// for a server without TLS)"
        )
    return Server(url, parts.hostname, port or (443 if secure else 80), secure)


def print_line(line):
    print(line, flush=True)


@dataclasses.dataclass
class PortStatus:
    """One port as the bridge sees it now (Bridge.status())."""

    port: str
    device_id: str = ""  # the unit's, from its HELLO; kept after it is lost
    attached: bool = False  # heard within link.PEER_TIMEOUT_MS
    stream: str = None  # the server URL an open stream goes to, as the unit gave it
    to_server: int = 0  # bytes of the unit's messages passed on to servers since the port's
    to_unit: int = 0  # worker started, and of the servers' messages to the unit
    error: str = None  # why the port cannot be opened, while it cannot


@dataclasses.dataclass
class _Unreachable:
    attempts: int = 0
    retry_at: float = 0.0  # time.monotonic()
    reason: str = ""


class Bridge:
    """Relays the units on serial ports to `servers` (URLs, see parse_server), the only places
    it connects to. `name` (default: the host name) is what the server records as the unit's
    `via`, `server_ca` a certificate file (PEM or DER) that TLS servers are checked against
    besides the system's CAs, `log(line)` takes one line per event. `run(["auto"])` finds ports
    with `detect_usb()` (qrfleet passes tools.gang.detect_ports: host/ imports no tools/) and
    the virtual boards announced under `vboard_dir`."""

    def __init__(
        self,
        servers,
        name=None,
        server_ca=None,
        vboard_dir=None,
        log=print_line,
        detect_usb=None,
    ):
        if not servers:
            raise BridgeError("a bridge needs at least one server URL to relay to")
        self.servers = [parse_server(url) for url in servers]
        self.name = socket.gethostname() if name is None else name
        if not _NAME.fullmatch(self.name):
            raise BridgeError(
                f"bridge name {self.name!r} must be 1 to 63 visible ASCII characters without "
                "spaces (it goes into an HTTP header): give one with --name"
            )
        self.headers = [("X-Qrfleet-Via", f"bridge@{self.name}")]  # in each upgrade request
        self.vboard_dir = Path(vboard_dir) if vboard_dir else None
        self.log = log
        self.detect_usb = detect_usb
        self._tls = _tls_context(server_ca)
        self._unreachable = {}  # server URL -> _Unreachable
        self._workers = {}  # port -> _PortWorker

    def status(self):
        """A copy of each port's PortStatus, in the order the ports were found."""
        return [dataclasses.replace(worker.state) for worker in self._workers.values()]

    async def run(self, ports):
        """Serve `ports` (names or URLs, and "auto") until cancelled."""
        if not ports:
            raise BridgeError("give the port of a unit, or auto")
        ports = list(dict.fromkeys(ports))
        auto = "auto" in ports
        fixed = [port for port in ports if port != "auto"]
        if self.vboard_dir and not auto:
            raise BridgeError("a vboard directory is searched only with --port auto")
        for port in fixed:
            _check_port(port)
        servers = ", ".join(server.url for server in self.servers)
        self.log(f"bridge@{self.name} relays {', '.join(ports)} to {servers}")
        try:
            for port in fixed:
                self._start(port)
            while True:
                if auto:
                    await self._follow(fixed, await asyncio.to_thread(self._discover))
                await asyncio.sleep(RESCAN_S)
        finally:
            await self._stop(list(self._workers), "the bridge stopped")

    # -- ports ------------------------------------------------------------------------------

    def _discover(self):
        """The ports of --port auto: ESP32-looking USB serial devices, then virtual boards
        whose serial cable is not cut."""
        found = list(self.detect_usb()) if self.detect_usb else []
        if self.vboard_dir:
            for announce in sorted(self.vboard_dir.glob("*/serial-url")):
                if (announce.parent / "cut-serial").exists():
                    continue
                try:
                    url = announce.read_text().strip()
                except OSError:  # the board stopped meanwhile
                    continue
                if url:
                    found.append(url)
        return found

    async def _follow(self, fixed, found):
        for port in found:
            if port not in self._workers:
                self.log(f"found {port}")
                self._start(port)
        gone = [port for port in self._workers if port not in found and port not in fixed]
        for port in gone:
            self.log(f"{port} is gone")
        await self._stop(gone, "the port is gone")

    def _start(self, port):
        worker = _PortWorker(self, port)
        worker.task = asyncio.create_task(worker.run())
        self._workers[port] = worker

    async def _stop(self, ports, why):
        tasks = []
        for port in ports:
            worker = self._workers.pop(port)
            worker.stopped_because = why
            worker.task.cancel()
            tasks.append(worker.task)
        if tasks:
            await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S)

    # -- servers ----------------------------------------------------------------------------

    def server_for(self, host, port, secure):
        """The bridge's own server at (host, port, TLS or not), or None."""
        host = host.lower()
        for server in self.servers:
            if (server.host, server.port, server.secure) == (host, port, secure):
                return server
        return None

    async def connect(self, url, secure):
        """A WebSocket (firmware.net.ws) to `url`, a server's with the unit's path, with TLS when
        `secure`. Raises OSError or asyncio.TimeoutError when it cannot be reached, Untrusted
        when its certificate is refused, ProtocolError when it answers but not as a WebSocket
        server. Within CONNECT_TIMEOUT_S, so the unit hears why before it gives up waiting."""
        return await asyncio.wait_for(
            ws.connect(
                url,
                timeout_s=CONNECT_TIMEOUT_S,
                ssl_context=self._tls if secure else None,
                headers=self.headers,
            ),
            CONNECT_TIMEOUT_S,
        )

    def backing_off(self, server):
        """The reason to refuse a stream to `server` now, while it backs off; else None."""
        entry = self._unreachable.get(server.url)
        if entry is None:
            return None
        left = entry.retry_at - time.monotonic()
        if left <= 0:
            return None
        return (
            f"server {server.address} unreachable from the PC: {entry.reason} "
            f"(next try in {max(1, math.ceil(left))} s)"
        )

    def unreachable(self, server, error):
        """Note a failed connection (the next try waits a backoff); the reason for the unit."""
        entry = self._unreachable.setdefault(server.url, _Unreachable())
        entry.attempts += 1
        delay_s = backoff_ms(entry.attempts - 1) / 1000
        entry.retry_at = time.monotonic() + delay_s
        entry.reason = _reason(error)
        self.log(
            f"server {server.url} unreachable: {entry.reason} "
            f"(next try in {max(1, math.ceil(delay_s))} s)"
        )
        return f"server {server.address} unreachable from the PC: {entry.reason}"

    def reached(self, server):
        if self._unreachable.pop(server.url, None):
            self.log(f"server {server.url} reachable again")


class _Stream:
    """The unit's current stream: the WebSocket to its server and the unit's messages on their
    way there."""

    def __init__(self, number, server, url):
        self.number = number
        self.server = server
        self.url = url  # the unit's: one of the server's, with its path
        self.conn = None  # the WebSocket, once connected
        self.task = None  # connects, then passes on what the server sends
        self.sender = None  # passes on what the unit sends, once connected
        # At most what the UART carries in ws.SEND_TIMEOUT_S: a server that takes nothing
        # for that long fails the send, and the stream ends.
        self.outbox = asyncio.Queue()


class _PortWorker:
    """One serial port: opened again and again until cancelled; one unit on it at a time."""

    def __init__(self, bridge, port):
        self.bridge = bridge
        self.port = port
        self.state = PortStatus(port)
        self.task = None
        self.link = None
        self.stream = None
        self._resets = 0  # link.resets when last looked at
        self._at_prompt = False  # told that the unit sits at its REPL
        self._wake = asyncio.Event()  # something to send, or the port failed
        self._acked = asyncio.Event()  # the unit has everything sent to it
        self._handshakes = {}  # closing handshakes under way -> their WebSocket
        self._failure = None  # why the port failed, from its reader thread
        self._closing = False  # tells the reader thread to end
        self.stopped_because = None  # set as the worker is cancelled

    def log(self, text):
        self.bridge.log(text)

    @property
    def unit(self):
        return f"unit {self.link.peer_name}" if self.link and self.link.peer_name else "the unit"

    async def run(self):
        said = None  # the last reason the port would not open, logged once
        while True:
            try:
                port = await self._open()
            except (OSError, ValueError) as e:  # serial.SerialException is an OSError
                self.state.error = str(e)
                if said != self.state.error:
                    self.log(f"cannot open {self.port}: {e} (trying again every second)")
                    said = self.state.error
                await asyncio.sleep(REOPEN_S)
                continue
            said = self.state.error = None
            self.log(f"opened {self.port}, waiting for a unit")
            try:
                why = await self._serve(port)
            except asyncio.CancelledError:
                self._end_stream(self.stopped_because, abort=True)
                for closing, conn in list(self._handshakes.items()):
                    closing.cancel()
                    conn.abort()
                raise
            finally:
                await asyncio.to_thread(port.close)
            if not self.state.attached:
                self.log(f"lost {self.port}: {why}")
            self._lose(why)
            await asyncio.sleep(REOPEN_S)

    async def _open(self):
        opening = asyncio.get_running_loop().run_in_executor(None, _open_port, self.port)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)  # stopped meanwhile: close it once open
            raise

    async def _serve(self, port):
        """Drive the link until the port fails; returns why."""
        loop = asyncio.get_running_loop()
        self._new_link()
        self._failure = None
        self._closing = False
        reader = threading.Thread(
            target=self._read, args=(port, loop), name=f"bridge {self.port}", daemon=True
        )
        reader.start()
        try:
            while self._failure is None:
                self._wake.clear()
                now = ticks_ms()
                if self.state.attached and not self.link.attached(now):
                    self._lose(f"no frame for {link.PEER_TIMEOUT_MS / 1000:g} s")
                    self._new_link()  # a new nonce: a unit that comes back ends its old stream
                out = self.link.data_to_send(now)
                if out:
                    await asyncio.to_thread(port.write, out)
                await self._woken(self._next_due_ms(ticks_ms()) / 1000)
            return self._failure
        except OSError as e:  # a write failed (serial.SerialException is an OSError)
            return str(e) or type(e).__name__
        finally:
            self._closing = True
            await asyncio.to_thread(reader.join, _READ_TIMEOUT_S * 20)

    async def _woken(self, timeout_s):
        """Until something is to be done, at most `timeout_s`. (Not asyncio.wait_for, which
        before Python 3.12 may swallow the worker's cancellation when both come at once.)"""
        timer = asyncio.get_running_loop().call_later(timeout_s, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()

    def _next_due_ms(self, now):
        due = self.link.next_due_ms(now)
        if self.state.attached:  # and when the unit counts as lost
            due = min(due, link.PEER_TIMEOUT_MS - ticks_diff(now, self.link.heard_at))
        return max(0, due)

    def _new_link(self):
        self.link = link.Link(
            self.bridge.name,
            True,
            link.BRIDGE_WINDOW,
            link.BRIDGE_PAYLOAD,
            console=True,
            inbox=bytearray(MESSAGE_MAX),
        )
        self._resets = 0

    def _read(self, port, loop):
        """The reader thread: what arrives goes to the loop, and so does the port's failure."""
        try:
            while not self._closing:
                data = port.read(1)
                # The rest of a burst too, in one call to the loop (socket:// and rfc2217://
                # ports count what is waiting in pieces rather than bytes: read until none is).
                while data and len(data) < _READ_MAX and port.in_waiting:
                    data += port.read(port.in_waiting)
                if data:
                    loop.call_soon_threadsafe(self._received, data)
        except Exception as e:  # noqa: BLE001 - whatever ends the port ends the session, said why
            loop.call_soon_threadsafe(self._port_failed, str(e) or type(e).__name__)

    def _port_failed(self, why):
        self._failure = why
        self._wake.set()

    # -- the unit ---------------------------------------------------------------------------

    def _received(self, data):
        if self._closing:
            return
        now = ticks_ms()
        link_ = self.link
        link_.receive(data, now)
        for line in link_.console:
            self.log(f"{self.port}: {line}")
            # The REPL echoes each HELLO after its prompt: the firmware is not running.
            if line.startswith(">>> ") and not self._at_prompt:
                self._at_prompt = True
                self.log(
                    f"{self.port}: the unit is at its MicroPython prompt, not running qrfleet: "
                    "press its reset button (EN/RST) or unplug and replug it"
                )
        link_.console.clear()
        if link_.resets != self._resets:  # before its events: they are the new unit's
            self._resets = link_.resets
            self._lose("it restarted")
        if not self.state.attached and link_.attached(now):
            self.state.attached = True
            self._at_prompt = False
            self.state.device_id = link_.peer_name
            self.log(f"{self.unit} attached on {self.port}")
        events = list(link_.events)
        link_.events.clear()
        for kind, payload in events:
            self._take(kind, payload)
        if link_.idle():
            self._acked.set()
        self._wake.set()

    def _lose(self, why):
        """The unit is gone (or is another one now): its stream's server connection is cut."""
        if self.state.attached:
            self.state.attached = False
            self.log(f"lost {self.unit} on {self.port}: {why}")
        self._end_stream(f"lost the unit: {why}", abort=True)

    def _take(self, kind, payload):
        if kind == OPEN:
            self._open_stream(payload)
            return
        stream = self.stream
        if stream is None or not payload or payload[0] != stream.number:
            return  # a stream already ended
        if kind == DATA:
            stream.outbox.put_nowait(bytes(payload[1:]))
        elif kind == CLOSE:
            why = bytes(payload[1:]).decode("utf-8", "replace") or "no reason given"
            self._end_stream(f"closed by the unit: {why}")
            # Answered: this CLOSE may be the link's own, for a message larger than
            # MESSAGE_MAX, which the unit knows nothing of (a unit that closed ignores it).
            self._send(CLOSE, stream.number, why)

    def _send(self, kind, number, data=b""):
        if isinstance(data, str):
            data = data.encode()[:_REASON_MAX].decode("utf-8", "ignore")
        self.link.send(kind, link.stream_payload(number, data))
        self._wake.set()

    # -- streams ----------------------------------------------------------------------------

    def _open_stream(self, payload):
        if not payload:
            self.log(f"{self.port}: {self.unit} sent an OPEN without a stream; ignored")
            return
        number = payload[0]
        url = bytes(payload[1:]).decode("utf-8", "replace")
        self._end_stream("the unit opened another stream")
        try:
            secure, host, port, _ = ws.parse_url(url)
        except ValueError as e:
            self.log(f"refused {self.unit} on {self.port} a stream: {e}")
            self._send(REFUSED, number, str(e))
            return
        server = self.bridge.server_for(host, port, secure)
        if server is None:
            target = f"{'wss' if secure else 'ws'}://{_address(host, port)}"
            self.log(f"refused {self.unit} on {self.port} a stream to {target}: not served here")
            self._send(REFUSED, number, f"this bridge does not serve {target}")
            return
        why = self.bridge.backing_off(server)
        if why:
            self._send(REFUSED, number, why)
            return
        self.stream = stream = _Stream(number, server, url)
        stream.task = asyncio.create_task(self._relay(stream))

    async def _relay(self, stream):
        """Connect to the server, then pass on its messages, each once the unit has taken all
        it was sent before."""
        try:
            stream.conn = await self.bridge.connect(stream.url, stream.server.secure)
        except (OSError, asyncio.TimeoutError, ProtocolError, Untrusted) as e:
            why = self.bridge.unreachable(stream.server, e)
            if self.stream is stream:
                self.stream = None
                self._send(REFUSED, stream.number, why)
            return
        if self.stream is not stream:  # ended meanwhile, and wait_for lost the cancellation
            stream.conn.abort()
            return
        self.bridge.reached(stream.server)
        self.state.stream = stream.url
        self._send(OPENED, stream.number)
        self.log(f"stream to {stream.url} opened for {self.unit} on {self.port}")
        stream.sender = asyncio.create_task(self._to_server(stream))
        try:
            while True:
                # No deadline of its own: a quiet stream is ended by the unit (its server is
                # silent for 3 heartbeats) or with the link, and either cancels this task.
                message = await stream.conn.recv()
                if not isinstance(message, str):
                    why = "the server sent a binary message; qrfleet's are text"
                    break
                while not self.link.idle():
                    self._acked.clear()
                    await self._acked.wait()
                data = message.encode()
                self.state.to_unit += len(data)
                self._send(DATA, stream.number, data)
        except ConnectionClosed as e:
            why = _closed(e)
        self._end_stream(why, tell_unit=True, abort=True)

    async def _to_server(self, stream):
        """Pass on the unit's messages in order, sealed as the unit sent them."""
        try:
            while True:
                data = await stream.outbox.get()
                await stream.conn.send(data.decode())
                self.state.to_server += len(data)
        except UnicodeError:
            why = "the unit sent a message that is not UTF-8 text"
        except ConnectionClosed as e:
            why = _closed(e)
        self._end_stream(why, tell_unit=True, abort=True)

    def _end_stream(self, why, tell_unit=False, abort=False):
        """End the current stream, if any: close its server connection (`abort`: cut it at
        once), tell the unit why if it does not know."""
        stream = self.stream
        if stream is None:
            return
        self.stream = None
        self.state.stream = None
        for task in (stream.task, stream.sender):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if stream.conn is not None:
            if abort:
                stream.conn.abort()
            else:
                closing = asyncio.create_task(stream.conn.close())  # bounded by ws
                self._handshakes[closing] = stream.conn
                closing.add_done_callback(self._handshakes.pop)
            self.log(f"stream to {stream.url} closed: {why}")
        if tell_unit:
            self._send(CLOSE, stream.number, why)


def _open_port(url):
    port = serial.serial_for_url(
        url, do_not_open=True, baudrate=BAUD, timeout=_READ_TIMEOUT_S, exclusive=True
    )
    # Both released before the port opens: on an ESP32 board's auto-reset circuit that is
    # neither a reset (EN) nor the bootloader (GPIO0), so the unit carries on as it was.
    port.dtr = False
    port.rts = False
    if not url.startswith("rfc2217://"):  # pyserial's RFC 2217 client refuses a write timeout;
        port.write_timeout = _WRITE_TIMEOUT_S  # its socket has a 5 s timeout of its own
    port.open()
    return port


def _close_opened(opening):
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _check_port(port):
    """BridgeError for a port name pyserial cannot make sense of (an unknown URL scheme)."""
    try:
        serial.serial_for_url(port, do_not_open=True)
    except (ValueError, OSError) as e:
        raise BridgeError(f"port {port!r}: {e}") from None


def _tls_context(server_ca):
    """TLS that checks servers against the system's CAs and the certificate in `server_ca`."""
    context = ssl.create_default_context()
    if server_ca:
        try:
            data = Path(server_ca).read_bytes()
        except OSError as e:
            raise BridgeError(f"cannot read the server's CA certificate {server_ca}: {e}") from None
        try:
            pem = b"-----BEGIN" in data
            context.load_verify_locations(cadata=data.decode("ascii") if pem else data)
        except (ssl.SSLError, ValueError):  # UnicodeDecodeError is a ValueError
            raise BridgeError(f"{server_ca} is neither a PEM nor a DER certificate") from None
    return context


def _closed(error):
    """Why a server's WebSocket ended (ConnectionClosed), for the unit's screen."""
    return f"the server closed the connection ({error.code}) {error.reason}".rstrip()


def _reason(error):
    """Why a connection failed, in words a cashier can read off the unit's screen."""
    if isinstance(error, Untrusted):  # which check failed: the PC's, not the unit's
        return (
            str(error).replace("this unit", "the PC").replace("the unit's clock", "the PC's clock")
        )
    if isinstance(error, ProtocolError):
        return str(error)
    if isinstance(error, asyncio.TimeoutError):  # before OSError: TimeoutError is one
        return f"no answer within {CONNECT_TIMEOUT_S} s"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed ({error.reason or error})"
    if isinstance(error, socket.gaierror):
        return f"no such host ({error.strerror})"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if error.errno:
        text = os.strerror(error.errno)
        return text[:1].lower() + text[1:]
    return str(error) or type(error).__name__
