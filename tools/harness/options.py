"""Harness options: each one resolvable, in this order, from a test's `parametrize(indirect=True)`
value, the command line, an environment variable, and a default (as pytest-embedded does)."""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    name: str  # fixture and dest name
    flag: str
    env: str
    default: object
    help: str
    multiple: bool = False
    is_flag: bool = False


OPTIONS = (
    Option(
        "board",
        "--board",
        "QRFLEET_BOARD",
        ["virtual:4"],
        "a unit: virtual:N for N virtual boards, or a serial port (/dev/ttyUSB0, "
        "rfc2217://HOST:PORT, id:<usb-serial>); repeatable",
        multiple=True,
    ),
    Option(
        "flash",
        "--flash",
        "QRFLEET_FLASH",
        False,
        "flash MicroPython and provision every real unit before the session",
        is_flag=True,
    ),
    Option("firmware", "--firmware", "QRFLEET_FIRMWARE", None, "MicroPython .bin for --flash"),
    Option(
        "server",
        "--server",
        "QRFLEET_SERVER",
        None,
        "test against this server (http://HOST:PORT) instead of starting one",
    ),
    Option(
        "admin_token",
        "--admin-token",
        "QRFLEET_ADMIN_TOKEN",
        "harness-admin",
        "admin token of the server",
    ),
    Option(
        "server_ca",
        "--server-ca",
        "QRFLEET_SERVER_CA",
        None,
        "the certificate (PEM or DER) an https:// --server is checked against, by the harness "
        "and by the units it provisions",
    ),
    Option(
        "tls",
        "--tls",
        "QRFLEET_TLS",
        False,
        "the harness's own server serves https:// and wss:// with a CA the harness makes, and "
        "units check it against that CA",
        is_flag=True,
    ),
    Option("store", "--store", "QRFLEET_STORE", "sqlite", "registry store: sqlite or redis"),
    Option("heap", "--heap", "QRFLEET_HEAP", "160K", "MicroPython heap of virtual boards"),
    Option("flash_size", "--flash-size", "QRFLEET_FLASH_SIZE", "4MB", "flash of virtual boards"),
    Option(
        "variant",
        "--variant",
        "QRFLEET_VARIANT",
        "generic",
        "partition table of virtual boards: generic or ota",
    ),
    Option(
        "tethered",
        "--tethered",
        "QRFLEET_TETHERED",
        False,
        "the real units (--board PORT) are tethered by USB: the tethered scenarios run them "
        "through a bridge on their ports (--flash provisions them for --link usb)",
        is_flag=True,
    ),
    Option(
        "wifi_ssid",
        "--wifi-ssid",
        "QRFLEET_WIFI_SSID",
        None,
        "Wi-Fi network real units join when --flash provisions them",
    ),
    Option("wifi_password", "--wifi-password", "QRFLEET_WIFI_PASSWORD", None, "its password"),
    Option(
        "report",
        "--hil-report",
        "QRFLEET_REPORT",
        "hil-report",
        "directory for the run report and the logs of failed scenarios",
    ),
)


def add_options(parser):
    group = parser.getgroup("qrfleet", "qrfleet hardware-in-the-loop harness")
    for o in OPTIONS:
        if o.is_flag:
            group.addoption(
                o.flag,
                action="store_true",
                default=None,
                dest=f"qrfleet_{o.name}",
                help=f"{o.help} (env {o.env})",
            )
        else:
            group.addoption(
                o.flag,
                action="append" if o.multiple else "store",
                default=None,
                dest=f"qrfleet_{o.name}",
                help=f"{o.help} (env {o.env})",
            )


def resolve(config, name, request=None):
    """The option's value: test parameter, command line, environment, default."""
    option = next(o for o in OPTIONS if o.name == name)
    if request is not None and hasattr(request, "param"):
        value = request.param
        return [value] if option.multiple and isinstance(value, str) else value
    value = config.getoption(f"qrfleet_{name}")
    if value is not None:
        return value
    env = os.environ.get(option.env)
    if env is not None:
        if option.is_flag:
            return env.lower() in ("1", "true", "yes")
        return [v.strip() for v in env.split(",") if v.strip()] if option.multiple else env
    return option.default


def parse_boards(specs):
    """(virtual count, [real ports]) from --board values."""
    virtual, ports = 0, []
    for spec in specs:
        if spec.startswith("virtual:"):
            count = spec.split(":", 1)[1]
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"--board {spec}: write virtual:N with N >= 1")
            virtual += int(count)
        else:
            ports.append(spec)
    return virtual, ports


def resolve_port(spec):
    """A serial URL for --board: a device path, an rfc2217:// URL, or id:<usb-serial>."""
    if not spec.startswith("id:"):
        return spec
    from serial.tools import list_ports

    wanted = spec[3:]
    for port in list_ports.comports():
        if port.serial_number == wanted:
            return port.device
    raise ValueError(f"--board {spec}: no USB serial device with serial number {wanted}")
