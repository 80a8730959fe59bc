"""The `qrfleet` command: one subcommand per job, each a thin wrapper over the library."""

import argparse
import sys

from host.client import ApiClientError
from qrfleet import bridge, field, fleet, release, rollout, serve
from tools.micropython import MicroPythonNotFound


def build_parser():
    parser = argparse.ArgumentParser(
        prog="qrfleet",
        description="Payment-QR display units: server, virtual boards and field tools.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (serve, fleet, field, bridge, release, rollout):
        group.add_parsers(sub)
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
    except (MicroPythonNotFound, field.FieldToolsMissing) as e:
        print(f"qrfleet: {e}", file=sys.stderr)
        return 2
