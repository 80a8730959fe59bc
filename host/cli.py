"""The `qrfleet` command: thin wrappers over the library, one subcommand per job."""

import argparse
import asyncio
import sys

from tools import micropython


def _vboard(args):
    from tools.vboard import fleet

    async def run():
        boards = await fleet.start_boards(
            args.dir, args.count, heap=args.heap,
            on_boot=lambda b: print(fleet.describe(b), flush=True),
        )
        await fleet.run_until_stopped(boards)

    asyncio.run(run())


def _demo(args):
    from tools import demo

    return demo.main(args.out, boards=args.boards)


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
        "--heap", default=micropython.DEFAULT_HEAP,
        help="MicroPython heap per board (default %(default)s, about an ESP32's free heap)",
    )
    p.set_defaults(func=_vboard)

    p = sub.add_parser(
        "demo",
        help="run the product end to end on virtual boards",
        description="Boot virtual boards, exercise them and write PNGs of their screens.",
    )
    p.add_argument("--out", default="demo-out", help="where pictures and logs go")
    p.add_argument("--boards", type=int, default=3, help="number of virtual boards")
    p.set_defaults(func=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except micropython.MicroPythonNotFound as e:
        print(f"qrfleet: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
