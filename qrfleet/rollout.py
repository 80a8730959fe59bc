"""`qrfleet rollout start|status|pause|resume|abort`: a published release taken to the units
wave by wave (docs/updates.md), through the server's /api/rollouts."""

import argparse

from host.client import ApiClient
from qrfleet.options import admin_token, admin_token_options
from qrfleet.table import print_table


def add_parsers(sub):
    group = sub.add_parser(
        "rollout",
        help="take a published release to the units, a canary wave first",
        description="A rollout updates one unit per location first (the canary wave), then "
        "the other units in steps; it pauses by itself when units fail or roll back, and "
        "completes when every unit is done.",
    )
    commands = group.add_subparsers(dest="rollout_command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False, parents=[admin_token_options()])
    common.add_argument(
        "--server", required=True, metavar="URL", help="server URL, http://HOST:PORT"
    )

    p = commands.add_parser("start", parents=[common], help="start rolling a release out")
    p.add_argument("--version", required=True, help="a published release, e.g. 0.2.0")
    p.add_argument("--location", help="only the units of this location (default: all)")
    p.add_argument(
        "--steps",
        type=steps,
        default=[100],
        metavar="P,P,...",
        help="after the canary wave, the growing percentages of the other units updated by "
        "the end of each wave, ending at 100 (default 100: all of them in one wave)",
    )
    p.add_argument(
        "--abort-after",
        type=int,
        default=1,
        metavar="N",
        help="pause once N units of a wave failed or rolled back (default %(default)s)",
    )
    p.set_defaults(func=start)

    p = commands.add_parser(
        "status", parents=[common], help="where a rollout stands, wave by wave and unit by unit"
    )
    p.add_argument("rollout", nargs="?", metavar="ID", help="rollout id (default: the newest)")
    p.set_defaults(func=status)

    for change, what in (
        ("pause", "pause a running rollout: no unit gets the release until it resumes"),
        ("resume", "resume a paused rollout, past the units that failed so far"),
        ("abort", "end a rollout: no further unit gets the release from it"),
    ):
        p = commands.add_parser(change, parents=[common], help=what)
        p.add_argument("rollout", metavar="ID", help="rollout id")
        if change != "resume":
            p.add_argument("--reason", help="why, kept with the rollout and in its events")
        p.set_defaults(func=change_rollout, change=change)


def steps(text):
    """`50,100` -> [50, 100] (the server checks that they grow and end at 100)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of percentages such as 10,50,100"
        ) from None


def _client(args):
    return ApiClient(args.server, admin_token(args))


def start(args):
    body = {"version": args.version, "steps": args.steps, "abort_after_failures": args.abort_after}
    if args.location:
        body["location_id"] = args.location
    print_rollout(_client(args).post("/api/rollouts", body))


def status(args):
    client = _client(args)
    rollout_id = args.rollout
    if rollout_id is None:
        rollouts = client.get("/api/rollouts")["rollouts"]
        if not rollouts:
            raise SystemExit("qrfleet: no rollout was started on this server yet")
        rollout_id = rollouts[0]["rollout_id"]
    print_rollout(client.get(f"/api/rollouts/{rollout_id}"))


def change_rollout(args):
    body = {"reason": args.reason} if getattr(args, "reason", None) else {}
    print_rollout(_client(args).post(f"/api/rollouts/{args.rollout}/{args.change}", body))


def print_rollout(doc):
    """A rollout (as GET /api/rollouts/{id} shows it) as a table: one row per unit."""
    where = f" at {doc['location_id']}" if doc["location_id"] else ""
    title = (
        f"rollout {doc['rollout_id']}: {doc['version']}{where}, {doc['state']}, wave "
        f"{doc['wave']} of {len(doc['waves'])}"
    )
    rows = []
    for wave in doc["waves"]:
        name = "canary" if wave["wave"] == 1 else str(wave["wave"])
        for unit in wave["units"]:
            rows.append(
                [
                    name,
                    unit["device_id"],
                    unit["state"],
                    unit["firmware"] or "-",
                    unit["reason"] or "",
                ]
            )
    verdict = doc["reason"] or ", ".join(f"{n} {s}" for s, n in sorted(doc["states"].items()))
    print_table(
        rows,
        columns=("wave", "unit", "state", "firmware", "reason"),
        title=title,
        verdict=verdict,
        ok=doc["state"] in ("running", "completed"),
    )
