"""Option blocks shared by several commands, declared once as argparse parent parsers."""

import argparse
import os

from firmware.config import LINKS

DEFAULT_URL = "http://127.0.0.1:8000"


def admin_token_options():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--admin-token", help="the server's admin token (or QRFLEET_ADMIN_TOKEN)")
    return p


def admin_token(args):
    token = args.admin_token or os.environ.get("QRFLEET_ADMIN_TOKEN")
    if not token:
        raise SystemExit("qrfleet: an admin token is needed: --admin-token or QRFLEET_ADMIN_TOKEN")
    return token


def client_options():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--url",
        default=os.environ.get("QRFLEET_URL", DEFAULT_URL),
        help="server URL (or QRFLEET_URL; default %(default)s)",
    )
    p.add_argument("--token", help="admin or agent token (or QRFLEET_TOKEN)")
    return p


def client_token(args):
    return args.token or os.environ.get("QRFLEET_TOKEN") or os.environ.get("QRFLEET_ADMIN_TOKEN")


def unit_options():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--port",
        action="append",
        default=[],
        help="the unit's serial port (/dev/ttyUSB0, rfc2217://HOST:PORT); "
        "repeatable: units are done in parallel",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="every plugged-in Espressif USB serial device (CP210x, CH340, FTDI, ESP32 native USB)",
    )
    p.add_argument(
        "--target",
        default="esp32",
        choices=["esp32", "virtual"],
        help="what the firmware is compiled for: esp32 (default) or virtual "
        "(a `qrfleet vboard` board, which runs the x86-64 Unix port)",
    )
    return p


def server_list_options(required):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--server",
        action="append",
        required=required,
        default=None if required else [],
        help="server URL, http://HOST:PORT; repeatable: units spread over the list",
    )
    p.add_argument(
        "--server-ca",
        metavar="FILE",
        help="certificate (PEM or DER) that units and this command check https:// servers "
        "against: the CA that issued theirs, or a server's self-signed certificate; needed "
        "with https:// servers for units on Wi-Fi, since a unit has no CA store",
    )
    return p


def link_options():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--link",
        choices=LINKS,
        default="wifi",
        help="how units reach their server: wifi (the default), or usb: over the USB cable to "
        "the PC they are plugged into, where `qrfleet bridge --port PORT --server URL` relays "
        "for them and speaks TLS to https:// servers (no Wi-Fi settings, no trust anchor, "
        "no time server on the unit)",
    )
    return p


def release_key_options():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--release-key",
        metavar="FILE.pub",
        action="append",
        default=[],
        help="public key (qrfleet release keygen) whose signed releases units install over "
        "the air; repeatable. Without one, units refuse every update",
    )
    return p
