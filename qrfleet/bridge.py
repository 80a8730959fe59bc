"""`qrfleet bridge`: the relay on a cashier's PC for units tethered to it by USB."""

import asyncio
import contextlib
import os
import signal
import sys
import time

from qrfleet.field import require_field_tools


def add_parsers(sub):
    p = sub.add_parser(
        "bridge",
        help="connect units on this PC's USB ports (provisioned with --link usb) to their server",
        description="Relay the units provisioned with --link usb that are plugged into this PC "
        "to their server: the bridge holds the WebSocket connection (TLS for https:// servers) "
        "and passes the unit's messages, which the unit seals with its secret end to end; the "
        "bridge holds no secret. Opening a port does not reset the unit. Prints one line per "
        "event (a unit attached or lost, a stream opened or closed, a server unreachable, the "
        "unit's own log lines) and runs until Ctrl-C or SIGTERM. Details: docs/tethered.md.",
    )
    p.add_argument(
        "--port",
        action="append",
        required=True,
        help="a unit's serial port (/dev/ttyUSB0, /dev/ttyACM0, COM3, /dev/cu.usbserial-..., "
        "rfc2217://HOST:PORT), or auto: every ESP32-looking USB serial port, as they are "
        "plugged in and out; repeatable",
    )
    p.add_argument(
        "--server",
        action="append",
        required=True,
        help="a server the units may reach: https://HOST[:PORT] or http://HOST:PORT, as given "
        "to qrfleet provision (wss:// and ws:// URLs work too); repeatable. The bridge "
        "connects to no other address",
    )
    p.add_argument(
        "--server-ca",
        metavar="FILE",
        help="certificate (PEM or DER) https:// servers are also checked against, besides the "
        "system's CAs: the CA that issued theirs, or a server's self-signed certificate",
    )
    p.add_argument(
        "--vboard-dir",
        metavar="DIR",
        help="with --port auto: also the virtual boards running under DIR (qrfleet vboard --dir)",
    )
    p.add_argument(
        "--name",
        help="this PC's name, recorded by the server as the units' `via` (default: its host name)",
    )
    p.set_defaults(func=bridge)


def bridge(args):
    require_field_tools("bridge")
    from host.bridge import Bridge, BridgeError
    from tools.gang import detect_ports

    # A unit's log line may hold any character; a log file on Windows may not take it.
    with contextlib.suppress(AttributeError):
        sys.stdout.reconfigure(errors="replace")
    log = event_log()
    try:
        relay = Bridge(
            args.server,
            name=args.name,
            server_ca=args.server_ca,
            vboard_dir=args.vboard_dir,
            log=log,
            detect_usb=detect_ports,
        )
        asyncio.run(_run(relay, args.port))
    except BridgeError as e:
        raise SystemExit(f"qrfleet: {e}") from None
    log("bridge stopped")


async def _run(relay, ports):
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not on Windows, where Ctrl-C arrives as KeyboardInterrupt and stops the loop anyway.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await relay.run(ports)


def event_log():
    """Print one line per event, at once; stamped with the time unless the systemd journal,
    which stamps each line itself, takes them."""
    stamped = "JOURNAL_STREAM" not in os.environ

    def log(line):
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}" if stamped else line, flush=True)

    return log
