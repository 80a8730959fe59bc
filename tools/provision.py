"""Provisioning: what turns a blank unit into one the server knows and trusts.

A unit gets a fresh secret and the list of servers in its config; the server gets the unit's
id and the same secret through its admin API. For https:// servers the unit also gets its one
trust anchor (it has no CA store): the CA that issued the server's certificate, or the
server's self-signed certificate, from `--server-ca FILE`; the tools' own API calls check the
server against the same certificate. A unit on `link` "usb" reaches its servers over its USB
cable through `qrfleet bridge` on the PC it is plugged into, which speaks TLS for it: it gets
neither a trust anchor nor Wi-Fi settings. The release keys (`--release-key FILE.pub`) are the
public keys whose signed releases the unit installs over the air. The pieces at the top are
shared by every way a unit is provisioned (a virtual board's first boot, or a technician's
`qrfleet provision`).

`provision_unit(port, order)` is one technician's run on one unit, in this order:

    1. reset the unit into download mode, read its MAC (its device id) over esptool
    2. refuse a unit that is already provisioned (config.json on it, or known to the server)
       unless confirmed or forced: re-provisioning gives it a new secret
    3. write the filesystem image (firmware compiled for the target + config.json) where
       MicroPython on the unit mounts it (its partition table and flash size decide, see
       tools/flash.py), verified by MD5; or, with files_only, copy the files over mpremote to
       a unit that already runs MicroPython
    4. register it with the server, link it to the agent if asked
    5. reboot it and wait until the server reports it online; a unit on --link usb comes online
       only once a bridge runs for it, so it is waited for only when asked (order.wait_online)
       and otherwise the result names the bridge command to start

The target decides how firmware is compiled: "esp32" (xtensawin, the default) for a real unit,
"virtual" (x64) for a virtual board, which runs the Unix port. A unit that is written but could
not be registered (server down) raises NotRegistered, whose message is the one command that
finishes the job: the same command with --register-only, which reads the secret back from
the unit instead of making a new one.
"""

import base64
import binascii
import functools
import json
import secrets
import shlex
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from firmware import config as config_file
from firmware.config import CONFIG_PATH, LINKS
from firmware.config import device_id as device_id_from_mac
from host import releases
from host.client import ApiClient, ApiClientError, ServerUnreachable
from tools import flash, image
from tools.image import littlefs_image

SECRET_BYTES = 32
DEFAULT_DISPLAY = {"esp32": "ssd1306-i2c", "virtual": "virtual-128x64"}
_ONLINE_POLL_S = 0.25


def new_secret():
    return secrets.token_hex(SECRET_BYTES)


def device_url(server_url):
    """The units' endpoint for a server's base URL: http(s)://H:P -> ws(s)://H:P/ws/device."""
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"server URL {server_url!r} must look like http://HOST:PORT")
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}/ws/device"


def read_server_ca(path):
    """The one certificate in `path` (PEM or DER) as DER bytes, the form a unit loads."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ProvisionError(f"cannot read the server's CA certificate: {e}") from None
    if b"-----BEGIN" in data:
        blocks = data.count(b"-----BEGIN CERTIFICATE-----")
        if blocks != 1:
            raise ProvisionError(
                f"{path} holds {blocks} PEM certificates; give the one certificate units "
                "trust: the CA that issued the server's, or the server's self-signed one"
            )
        try:
            return ssl.PEM_cert_to_DER_cert(data.decode("ascii"))
        except (ValueError, binascii.Error):
            raise ProvisionError(f"{path} is not a readable PEM certificate") from None
    if not data.startswith(b"\x30"):  # a DER certificate is an ASN.1 SEQUENCE
        raise ProvisionError(f"{path} is neither a PEM nor a DER certificate")
    return data


def server_context(server_ca):
    """An ssl context trusting the server's CA certificate (DER), or None: the system's CAs."""
    return ssl.create_default_context(cadata=server_ca) if server_ca else None


def require_trust_anchor(servers, server_ca):
    """ProvisionError unless every https:// server comes with the certificate to check it by."""
    secure = [s for s in servers if urlsplit(s).scheme == "https"]
    if secure and server_ca is None:
        raise ProvisionError(
            f"{secure[0]} needs --server-ca FILE: a unit has no CA store and checks the "
            "server's certificate against that one (the CA that issued it, or the server's "
            "self-signed certificate)"
        )


def check_link(link, servers, server_ca, wifi=None, ntp=None):
    """ProvisionError unless a unit on `link` can reach `servers` with these settings: on Wi-Fi
    it needs the trust anchor of https:// servers; over USB the bridge speaks TLS and the
    network for it, so Wi-Fi and time server settings would be dead weight."""
    if link not in LINKS:
        raise ProvisionError(f"--link must be one of {', '.join(LINKS)}, not {link!r}")
    if link == "wifi":
        require_trust_anchor(servers, server_ca)
        return
    for option, value in (("--wifi-ssid", wifi), ("--ntp", ntp)):
        if value:
            raise ProvisionError(
                f"{option} is for units on Wi-Fi: a unit on --link usb reaches its server "
                "through `qrfleet bridge` on the PC it is plugged into, and has no Wi-Fi "
                "settings and no time server"
            )


def unit_config(
    secret,
    servers,
    name,
    display,
    wifi=None,
    server_ca=None,
    ntp=None,
    release_keys=(),
    link="wifi",
):
    """The config.json a unit boots with (firmware/config.py reads it); `server_ca` is the DER
    certificate its wss:// servers are checked against, `ntp` the time server that sets its
    clock (None: the firmware's default, pool.ntp.org), `release_keys` the public keys (hex)
    its updates must be signed by (none: it refuses every update), `link` how it reaches its
    servers: "wifi", or "usb" through a bridge (which checks the server's certificate)."""
    check_link(link, servers, server_ca, wifi, ntp)
    urls = [device_url(s) for s in servers]
    config = {"secret": secret, "servers": urls, "name": name, "display": display}
    if link != "wifi":
        config["link"] = link
    if wifi:
        config["wifi"] = wifi
    if server_ca and link == "wifi":
        config["tls"] = tls_config(server_ca)
    if ntp:
        config["ntp"] = ntp
    if release_keys:
        config["release_keys"] = list(release_keys)
    return config


def tls_config(server_ca):
    """The config's "tls" entry for a trust anchor (DER): base64, as JSON carries bytes."""
    return {"ca": base64.b64encode(server_ca).decode()}


def read_release_keys(paths):
    """The public keys in the .pub files `paths`, in hex as a unit's config carries them."""
    try:
        return [key.hex() for key in releases.load_public_keys(paths)]
    except releases.ReleaseError as e:
        raise ProvisionError(str(e)) from None


def register(
    server_url, admin_token, device_id, secret, name=None, location_id=None, server_ca=None
):
    """Tell the server about the unit (idempotent: re-registering updates it)."""
    body = {"device_id": device_id, "secret": secret}
    if name:
        body["name"] = name
    if location_id:
        body["location_id"] = location_id
    client = ApiClient(server_url, admin_token, ssl_context=server_context(server_ca))
    return client.post("/api/devices", body)


class ProvisionError(Exception):
    """A unit could not be provisioned; the message says what to do. (Writing it can also
    raise tools.flash.FlashError.)"""


class AlreadyProvisioned(ProvisionError):
    """The unit has a config or the server knows it, and replacing it was not confirmed."""


class NotRegistered(ProvisionError):
    """The unit is written and rebooted, but the server could not be told: the message says
    which command finishes the job."""


@dataclass
class Order:
    """What a technician asks for, the same for every unit of one run."""

    servers: list
    admin_token: str
    target: str = "esp32"
    location: str = None
    agent: str = None
    name: str = None
    display: str = None
    wifi: dict = None
    ntp: str = None
    force: bool = False
    files_only: bool = False
    register_only: bool = False
    online_timeout_s: float = 60
    server_ca: str = None  # the file --server-ca names
    release_keys: tuple = ()  # the .pub files --release-key names
    link: str = "wifi"
    # link usb: wait until a bridge brings the unit online (units on Wi-Fi always are waited for)
    wait_online: bool = False

    @functools.cached_property
    def server_ca_der(self):
        return read_server_ca(self.server_ca) if self.server_ca else None

    @functools.cached_property
    def release_keys_hex(self):
        return read_release_keys(self.release_keys)

    def check(self):
        """ProvisionError before any unit is touched: an unreadable --server-ca or
        --release-key, an https:// server without a --server-ca for units on Wi-Fi, or Wi-Fi
        settings for units on USB."""
        check_link(self.link, self.servers, self.server_ca_der, self.wifi, self.ntp)
        self.release_keys_hex  # noqa: B018 - read now, so a bad key file stops the run here

    def api(self):
        return ApiClient(
            self.servers[0], self.admin_token, ssl_context=server_context(self.server_ca_der)
        )


@dataclass
class Provisioned:
    device_id: str
    status: str  # what the server reports at the end: "online"; "registered": not waited for
    agent_id: str = None
    bytes_sent: int = 0  # bytes written to the serial link for the unit's files
    pairing: str = None  # qrfleet://pair?... of an unlinked unit, as its screen shows it
    bridge: str = None  # a unit on --link usb not waited for: the command that brings it online

    def __str__(self):
        linked = f", linked to {self.agent_id}" if self.agent_id else ""
        return f"{self.device_id} {self.status}{linked}"


def provision_unit(port, order, report=None, confirm=None):
    """Provision the unit on `port` as `order` says; returns Provisioned.

    report(description, done=None, total=None) follows progress; confirm(question) -> bool is
    asked before an already provisioned unit is replaced (without it, and without order.force,
    such a unit is refused).
    """
    report = report or (lambda *args, **kwargs: None)
    report("connecting")
    with flash.open_unit(port) as unit:
        device_id = device_id_from_mac(unit.mac)
        report(f"{device_id}: checking")
        vfs = unit.vfs_partition()
        # --force replaces whatever is there: no need to read it
        on_unit = None if order.force and not order.register_only else _config_on_unit(unit, vfs)
        bytes_sent = 0
        if order.register_only:
            if on_unit is None:
                raise ProvisionError(
                    f"{device_id} on {port} has no config.json to register: "
                    "provision it without --register-only"
                )
            secret = on_unit["secret"]
        else:
            _check_not_provisioned(port, device_id, on_unit, order, confirm)
            secret = new_secret()
            files = _unit_files(device_id, secret, order)
            if not order.files_only:
                bytes_sent = _write_filesystem(unit, vfs, files, device_id, report)
        if not order.files_only:
            registered = _register(port, device_id, secret, order, report)
            old_session = _session_epoch(order.api(), device_id)
        unit.hard_reset()
    if order.files_only:
        bytes_sent = copy_files(
            port, files, lambda done, total: report(f"{device_id}: copying files", done, total)
        )
        registered = _register(port, device_id, secret, order, report)
        old_session = _session_epoch(order.api(), device_id)
        _soft_reset(port)
    if not registered:
        raise NotRegistered(
            f"{device_id} is written but the server at {order.servers[0]} could not be reached; "
            f"once it is up, run: {retry_command(port, order)}"
        )
    if order.link == "usb" and not order.wait_online:
        bridge = bridge_command(port, order.servers, order.server_ca)
        return Provisioned(device_id, "registered", order.agent, bytes_sent, bridge=bridge)
    report(f"{device_id}: waiting until online")
    status = wait_online(
        order.api(), device_id, order.online_timeout_s, old_session, _offline_hint(port, order)
    )
    pairing = None
    if not status.get("agent_id"):
        # A fresh code, shown on the unit and printed for the technician alike.
        pairing = order.api().post(f"/api/devices/{device_id}/pairing")["pairing"]
    return Provisioned(device_id, status["status"], status.get("agent_id"), bytes_sent, pairing)


def _config_on_unit(unit, vfs):
    """The unit's config.json, or None when it has none (or no filesystem MicroPython would
    mount: littlefs, like the unit, refuses one sized for another partition)."""
    fs = unit.filesystem(vfs)  # held: an open file does not keep it alive
    try:
        with fs.open(CONFIG_PATH, "r") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def _check_not_provisioned(port, device_id, on_unit, order, confirm):
    known = _known_to_server(order.api(), device_id)
    if (on_unit is None and not known) or order.force:
        return
    where = "has a config.json" if on_unit is not None else "is registered with the server"
    question = f"{device_id} on {port} {where} already; replace it (it gets a new secret)?"
    if confirm is None or not confirm(question):
        raise AlreadyProvisioned(
            f"{device_id} on {port} {where} already: run again with "
            "--force to re-provision it with a new secret"
        )


def _known_to_server(api, device_id):
    try:
        api.get(f"/api/devices/{device_id}")
    except ServerUnreachable:
        return False  # registration will say so, after the unit is written
    except ApiClientError as e:
        if e.status == 404:
            return False
        raise
    return True


def _unit_files(device_id, secret, order):
    display = order.display or DEFAULT_DISPLAY[order.target]
    config = unit_config(
        secret,
        order.servers,
        order.name or device_id,
        display,
        order.wifi,
        order.server_ca_der,
        order.ntp,
        order.release_keys_hex,
        order.link,
    )
    return {**_firmware_files(order.target), CONFIG_PATH: config_file.dumps(config).encode()}


@functools.cache
def _firmware_files(target):
    """The firmware compiled once per run, not once per unit: only config.json differs."""
    return image.board_files(target=target)


def _write_filesystem(unit, vfs, files, device_id, report):
    unit.write_filesystem(
        vfs.offset,
        littlefs_image(files, vfs.size),
        lambda done, total: report(f"{device_id}: writing files", done, total),
    )
    return unit.bytes_sent


def _register(port, device_id, secret, order, report):
    """Register and link; False when the server cannot be reached (the unit stays written)."""
    report(f"{device_id}: registering")
    api = order.api()
    try:
        register(
            order.servers[0],
            order.admin_token,
            device_id,
            secret,
            order.name,
            order.location,
            order.server_ca_der,
        )
        if order.agent:
            api.post(f"/api/agents/{order.agent}/devices", {"device_id": device_id})
    except ServerUnreachable:
        return False
    return True


def retry_command(port, order):
    """The command that registers (and links) an already written unit."""
    words = ["qrfleet", "provision", "--port", port]
    for server in order.servers:
        words += ["--server", server]
    for option, value in (
        ("--location", order.location),
        ("--agent", order.agent),
        ("--name", order.name),
        ("--target", order.target),
        ("--server-ca", order.server_ca),
    ):
        if value:
            words += [option, value]
    if order.link != "wifi":
        words += ["--link", order.link]
    if order.link == "usb" and order.wait_online:
        words += ["--wait-online"]
    return shlex.join(words + ["--register-only"])


def bridge_command(port, servers, server_ca=None, vboard_dir=None):
    """The command that brings units on --link usb online: the bridge relays for the unit on
    `port` ("auto": every one plugged in, and the virtual boards under `vboard_dir`) to
    `servers`, checked against the certificate file `server_ca` (else the system's CAs)."""
    words = ["qrfleet", "bridge", "--port", str(port)]
    for server in servers:
        words += ["--server", server]
    for option, value in (("--server-ca", server_ca), ("--vboard-dir", vboard_dir)):
        if value:
            words += [option, str(value)]
    return shlex.join(words)


def _session_epoch(api, device_id):
    """The fencing epoch of the unit's latest session (every new session gets a larger one)."""
    try:
        return api.get(f"/api/devices/{device_id}").get("epoch")
    except ApiClientError:
        return None


def _offline_hint(port, order):
    """What to check when a unit does not come online."""
    if order.link == "usb":
        bridge = bridge_command(port, order.servers, order.server_ca)
        return (
            f"it comes online through a bridge: start `{bridge}` on the PC the unit is plugged "
            "into, which also shows the unit's serial log"
        )
    return "check its Wi-Fi settings and the unit's serial log"


def wait_online(api, device_id, timeout_s, old_session, hint):
    """Poll the server until it reports the unit online in a session newer than the epoch
    `old_session` (the one from before its reboot, which may not have been seen to end yet);
    a TimeoutError ends with `hint`, what to check."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status = api.get(f"/api/devices/{device_id}")
            if status["status"] == "online" and status.get("epoch") != old_session:
                return status
        except ServerUnreachable:
            status = {"status": "server unreachable"}
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{device_id} was provisioned but is not online after {timeout_s:.0f} s "
                f"(server says: {status['status']}): {hint}"
            )
        time.sleep(_ONLINE_POLL_S)


def copy_files(port, files, on_progress=None):
    """Copy {path: bytes} over mpremote to a unit running MicroPython; bytes sent on the link."""
    from mpremote.transport_serial import SerialTransport

    transport = SerialTransport(port)
    sent = [0]
    write = transport.serial.write

    def counting_write(data):
        sent[0] += len(data)
        return write(data)

    transport.serial.write = counting_write
    total, done = sum(len(d) for d in files.values()), 0
    try:
        transport.enter_raw_repl()  # with a soft reset: the copy starts on a fresh heap
        for directory in _directories(files):
            if not transport.fs_exists(directory):
                transport.fs_mkdir(directory)
        for path, data in sorted(files.items()):
            transport.fs_writefile(path, data, chunk_size=1024)
            done += len(data)
            if on_progress:
                on_progress(done, total)
        transport.exit_raw_repl()
    finally:
        transport.close()
    return sent[0]


def _directories(paths):
    """Every directory the paths need, parents first: a/b/c.mpy -> a, a/b."""
    found = set()
    for path in paths:
        parts = path.split("/")[:-1]
        found.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(found)


def _soft_reset(port):
    """Ctrl-D at the friendly REPL: MicroPython restarts and runs main.py with the new files."""
    import serial

    with serial.serial_for_url(port, timeout=1) as link:
        link.write(b"\r\x03\x03\x04")


def terminal_qr(text):
    """A QR code as lines of Unicode half blocks (two modules per character), quiet zone kept."""
    from firmware import qr

    code = qr.encode(text)
    quiet = 2
    span = range(-quiet, code.size + quiet)

    def dark(x, y):
        return 0 <= x < code.size and 0 <= y < code.size and code.module(x, y)

    # Light modules print as ink so the code reads on a dark terminal: inverted on purpose.
    glyphs = {
        (False, False): "\u2588",
        (False, True): "\u2580",
        (True, False): "\u2584",
        (True, True): " ",
    }
    return "\n".join("".join(glyphs[dark(x, y), dark(x, y + 1)] for x in span) for y in span[::2])
