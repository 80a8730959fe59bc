"""The `qrfleet` command: thin wrappers over the library, one subcommand per job."""

import argparse
import asyncio
import json
import os
import signal
import sys

from host.client import ApiClientError
from tools import micropython


def _vboard(args):
    from tools.vboard import fleet

    provisioning = None
    if args.server:
        provisioning = fleet.Provisioning(
            args.server, _admin_token(args), location_id=args.location, display=args.display
        )

    async def run():
        boards = await fleet.start_boards(
            args.dir,
            args.count,
            heap=args.heap,
            provisioning=provisioning,
            on_boot=lambda b: print(fleet.describe(b), flush=True),
        )
        await fleet.run_until_stopped(boards)

    asyncio.run(run())


def _admin_token(args):
    token = args.admin_token or os.environ.get("QRFLEET_ADMIN_TOKEN")
    if not token:
        raise SystemExit("qrfleet: an admin token is needed: --admin-token or QRFLEET_ADMIN_TOKEN")
    return token


def _serve(args):
    from host.log import Log
    from host.server import QrfleetServer

    async def run():
        server = QrfleetServer(
            args.store,
            _admin_token(args),
            server_id=args.server_id,
            heartbeat_s=args.heartbeat,
            log=Log(args.log_level),
        )
        port = await server.start(args.host, args.port)
        print(f"http://{args.host}:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()

    asyncio.run(run())


def _client(args, token=None):
    from host.client import ApiClient

    return ApiClient(
        args.url,
        token
        or args.token
        or os.environ.get("QRFLEET_TOKEN")
        or os.environ.get("QRFLEET_ADMIN_TOKEN"),
    )


def _print_json(doc):
    print(json.dumps(doc, indent=2))


def _devices(args):
    from rich.console import Console
    from rich.table import Table

    devices = _client(args).get("/api/devices")["devices"]
    if args.json:
        return _print_json(devices)
    table = Table()
    for column in ("device", "status", "agent", "location", "server", "last seen", "screen"):
        table.add_column(column)
    for d in devices:
        table.add_row(
            d["device_id"],
            d["status"],
            d["agent_id"] or "-",
            d["location_id"] or "-",
            d["server_id"] or "-",
            d["last_seen"] or "-",
            d["screen"] or "-",
        )
    Console().print(table)


def _link(args):
    body = (
        {"pairing": args.pairing}
        if args.pairing.startswith("qrfleet://")
        else {"device_id": args.pairing, **({"code": args.code} if args.code else {})}
    )
    _print_json(_client(args).post(f"/api/agents/{args.agent}/devices", body))


def _show(args):
    body = {"payload": args.payload, "ecc": args.ecc, "wait_s": args.wait}
    if args.caption:
        body["caption"] = args.caption
    _print_json(_client(args).post(f"/api/agents/{args.agent}/qr", body))


def _doctor(args):
    facts = _client(args).get(f"/api/devices/{args.device}/doctor")
    if args.json:
        return _print_json(facts)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"qrfleet doctor {args.device}", show_header=False)
    for key, value in facts.items():
        if key != "verdict":
            table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console = Console()
    console.print(table)
    style = "bold green" if facts.get("ready") else "bold red"
    console.print(facts["verdict"], style=style)
    return 0 if facts.get("ready") else 1


def _unit_ports(args):
    from tools import gang

    ports = args.port or (gang.detect_ports() if args.all else [])
    if not ports:
        raise SystemExit(
            "qrfleet: no serial port to work on: give --port PORT (repeatable), or "
            "--all with units plugged in (none of the USB serial devices found is a "
            "CP210x, CH340, FTDI or Espressif USB port)"
        )
    return ports


def _flash(args):
    from firmware.config import device_id
    from tools import flash, gang, image
    from tools.vboard.flash import littlefs_image

    try:
        with open(args.firmware, "rb") as f:
            firmware = f.read()
        flash.check_firmware(firmware, args.firmware)
    except OSError as e:
        raise SystemExit(f"qrfleet: cannot read the firmware: {e}") from None
    except flash.FlashError as e:
        raise SystemExit(f"qrfleet: {e}") from None
    vfs = littlefs_image(image.board_files(target=args.target), flash.VFS_SIZE)

    def job(port, report):
        mac = flash.flash_firmware(
            port, firmware, vfs, lambda stage, done, total: report(f"writing {stage}", done, total)
        )
        return device_id(mac)

    outcomes = gang.run(_unit_ports(args), job)
    return 0 if all(o.ok for o in outcomes) else 1


def _provision(args):
    from rich.console import Console

    from tools import gang, provision

    wifi = {"ssid": args.wifi_ssid, "password": args.wifi_password} if args.wifi_ssid else None
    order = provision.Order(
        args.server,
        _admin_token(args),
        target=args.target,
        location=args.location,
        agent=args.agent,
        name=args.name,
        display=args.display,
        wifi=wifi,
        force=args.force,
        files_only=args.files_only,
        register_only=args.register_only,
    )
    ports = _unit_ports(args)
    interactive = sys.stdin.isatty()
    console = Console()
    outcomes = gang.run(
        ports,
        lambda port, report: provision.provision_unit(
            port, order, report, report.confirm if interactive else None
        ),
        console,
    )
    for o in outcomes:
        if o.ok and o.result.pairing:
            console.print(f"{o.result.device_id}: scan to pair ({o.result.pairing})")
            console.print(provision.terminal_qr(o.result.pairing), soft_wrap=True)
    return 0 if all(o.ok for o in outcomes) else 1


def _demo(args):
    from tools import demo

    return demo.main(args.out)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="qrfleet",
        description="Payment-QR display units: server, virtual boards and field tools.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "vboard",
        help="boot virtual ESP32 boards running the real firmware",
        description="Boot N virtual boards (the firmware on the MicroPython Unix port). Prints "
        "one line per board as it boots: device id, serial URL (rfc2217://...), directory. "
        "The screen of each is kept in <directory>/display.pbm. Runs until Ctrl-C.",
    )
    p.add_argument("--count", type=int, default=1, help="number of boards (default 1)")
    p.add_argument("--dir", default="vboards", help="where board directories live")
    p.add_argument(
        "--heap",
        default=micropython.DEFAULT_HEAP,
        help="MicroPython heap per board (default %(default)s, about an ESP32's free heap)",
    )
    p.add_argument(
        "--server",
        action="append",
        default=[],
        help="provision new boards for this server (http://HOST:PORT); repeatable: "
        "units spread over the list",
    )
    p.add_argument("--admin-token", help="the server's admin token (or QRFLEET_ADMIN_TOKEN)")
    p.add_argument("--location", help="location new boards are registered at")
    p.add_argument(
        "--display",
        default="virtual-128x64",
        help="display profile of new boards (default %(default)s)",
    )
    p.set_defaults(func=_vboard)

    p = sub.add_parser(
        "serve",
        help="run the server units connect to and cashier systems call",
        description="Serve units (/ws/device) and the HTTP API (/api/...) on one port. The "
        "first line printed is the URL, http://HOST:PORT (useful with --port 0).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    p.add_argument(
        "--store",
        default="sqlite:///qrfleet.db",
        help="registry store: sqlite:///PATH (default) or redis://HOST:PORT/DB",
    )
    p.add_argument("--admin-token", help="admin bearer token (or QRFLEET_ADMIN_TOKEN)")
    p.add_argument("--server-id", help="this instance's name in a cluster")
    p.add_argument("--heartbeat", type=int, default=5, help="unit heartbeat period, seconds")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_serve)

    def client_args(p):
        p.add_argument(
            "--url",
            default=os.environ.get("QRFLEET_URL", "http://127.0.0.1:8000"),
            help="server URL (or QRFLEET_URL)",
        )
        p.add_argument("--token", help="admin or agent token (or QRFLEET_TOKEN)")

    p = sub.add_parser("devices", help="list units with status, owner, server and screen")
    client_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_devices)

    p = sub.add_parser("link", help="link a unit to an agent by its pairing QR text")
    client_args(p)
    p.add_argument("agent", help="agent id")
    p.add_argument("pairing", help="qrfleet://pair?device=...&code=... or a device id")
    p.add_argument("--code", help="pairing code, when a device id is given")
    p.set_defaults(func=_link)

    p = sub.add_parser("show", help="show a payment QR on an agent's unit")
    client_args(p)
    p.add_argument("agent", help="agent id")
    p.add_argument("payload", help="what the QR encodes")
    p.add_argument("--caption", help="text under the QR, e.g. the amount")
    p.add_argument("--ecc", default="M", choices=["L", "M", "Q", "H"])
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for a free unit")
    p.set_defaults(func=_show)

    p = sub.add_parser("doctor", help="say why a unit can or cannot show a QR right now")
    client_args(p)
    p.add_argument("device", help="device id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_doctor)

    def unit_args(p):
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
            help="every plugged-in Espressif USB serial device (CP210x, CH340, FTDI, "
            "ESP32 native USB)",
        )
        p.add_argument(
            "--target",
            default="esp32",
            choices=["esp32", "virtual"],
            help="what the firmware is compiled for: esp32 (default) or virtual "
            "(a `qrfleet vboard` board, which runs the x86-64 Unix port)",
        )

    p = sub.add_parser(
        "flash",
        help="write MicroPython and the firmware files to units",
        description="Check that each unit is an ESP32 whose flash holds the .bin and the "
        "filesystem, write both, verify them by MD5 and reset the unit. Ends with a table of "
        "per-unit results; one unit failing does not stop the others.",
    )
    unit_args(p)
    p.add_argument(
        "--firmware", required=True, help="MicroPython .bin for ESP32 (written at 0x1000)"
    )
    p.set_defaults(func=_flash)

    p = sub.add_parser(
        "provision",
        help="turn units into registered, linked units of a server",
        description="Per unit: read its MAC, give it a new secret, write the firmware files and "
        "its config into the vfs partition (or copy them over mpremote with --files-only), "
        "register it with the server, link it to --agent, reboot it and wait until it is "
        "online. An already provisioned unit is asked about, or replaced with --force. If the "
        "server cannot be reached, the unit stays written and the command to finish is printed.",
    )
    unit_args(p)
    p.add_argument(
        "--server",
        action="append",
        required=True,
        help="server URL, http://HOST:PORT; repeatable: units spread over the list",
    )
    p.add_argument("--admin-token", help="the server's admin token (or QRFLEET_ADMIN_TOKEN)")
    p.add_argument("--location", help="location the units are registered at")
    p.add_argument("--agent", help="link the units to this agent")
    p.add_argument("--name", help="the unit's name (default: its device id)")
    p.add_argument(
        "--display",
        help="display profile (default: ssd1306-i2c on esp32, virtual-128x64 on virtual)",
    )
    p.add_argument("--wifi-ssid", help="Wi-Fi network the unit joins")
    p.add_argument("--wifi-password", help="its password")
    p.add_argument(
        "--force",
        action="store_true",
        help="re-provision units that already are, without asking (new secret)",
    )
    only = p.add_mutually_exclusive_group()
    only.add_argument(
        "--files-only",
        action="store_true",
        help="copy the files over mpremote to a unit that already runs MicroPython",
    )
    only.add_argument(
        "--register-only",
        action="store_true",
        help="only register (and link) a unit already written, with the secret on it",
    )
    p.set_defaults(func=_provision)

    p = sub.add_parser(
        "demo",
        help="run the product end to end on virtual boards",
        description="A server on SQLite, 3 virtual boards, two cashiers linking units by "
        "their pairing QRs, concurrent verified payment QRs, a pool fallback when a unit "
        "loses power, a summary table, and PNGs of the screens in --out.",
    )
    p.add_argument("--out", default="demo-out", help="where pictures and logs go")
    p.set_defaults(func=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except ApiClientError as e:
        print(f"qrfleet: {e}", file=sys.stderr)
        return 1
    except micropython.MicroPythonNotFound as e:
        print(f"qrfleet: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
