"""`qrfleet devices|link|show|doctor`: the HTTP API from a terminal, as an admin or a cashier."""

import json

from host.client import ApiClient
from qrfleet.options import client_options, client_token
from qrfleet.table import print_table


def add_parsers(sub):
    client = client_options()

    p = sub.add_parser(
        "devices", parents=[client], help="list units with status, owner, server and screen"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=devices)

    p = sub.add_parser(
        "link", parents=[client], help="link a unit to an agent by its pairing QR text"
    )
    p.add_argument("agent", help="agent id")
    p.add_argument("pairing", help="qrfleet://pair?device=...&code=... or a device id")
    p.add_argument("--code", help="pairing code, when a device id is given")
    p.set_defaults(func=link)

    p = sub.add_parser("show", parents=[client], help="show a payment QR on an agent's unit")
    p.add_argument("agent", help="agent id")
    p.add_argument("payload", help="what the QR encodes")
    p.add_argument("--caption", help="text under the QR, e.g. the amount")
    p.add_argument("--ecc", default="M", choices=["L", "M", "Q", "H"])
    p.add_argument("--wait", type=float, default=0, help="seconds to wait for a free unit")
    p.set_defaults(func=show)

    p = sub.add_parser(
        "doctor", parents=[client], help="say why a unit can or cannot show a QR right now"
    )
    p.add_argument("device", help="device id")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=doctor)


def _client(args):
    return ApiClient(args.url, client_token(args))


def _print_json(doc):
    print(json.dumps(doc, indent=2))


def devices(args):
    units = _client(args).get("/api/devices")["devices"]
    if args.json:
        return _print_json(units)
    fields = ("device_id", "status", "agent_id", "location_id", "server_id", "last_seen", "screen")
    print_table(
        [[d[f] or "-" for f in fields] for d in units],
        columns=("device", "status", "agent", "location", "server", "last seen", "screen"),
    )


def link(args):
    body = (
        {"pairing": args.pairing}
        if args.pairing.startswith("qrfleet://")
        else {"device_id": args.pairing, **({"code": args.code} if args.code else {})}
    )
    _print_json(_client(args).post(f"/api/agents/{args.agent}/devices", body))


def show(args):
    body = {"payload": args.payload, "ecc": args.ecc, "wait_s": args.wait}
    if args.caption:
        body["caption"] = args.caption
    _print_json(_client(args).post(f"/api/agents/{args.agent}/qr", body))


def doctor(args):
    facts = _client(args).get(f"/api/devices/{args.device}/doctor")
    if args.json:
        return _print_json(facts)
    ready = bool(facts.get("ready"))
    print_table(
        [
            [key, json.dumps(value) if isinstance(value, dict) else str(value)]
            for key, value in facts.items()
            if key not in ("verdict", "checks")
        ],
        title=f"qrfleet doctor {args.device}",
        verdict=facts["verdict"],
        ok=ready,
    )
    for n, check in enumerate(facts.get("checks", ()), 1):  # a tethered unit's, in order
        print(f"  {n}. {check}")
    return 0 if ready else 1
