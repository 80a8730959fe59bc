"""`qrfleet release keygen|build|publish`: signed firmware releases for over-the-air updates."""

import json

from host.client import ApiClient
from host.releases import ReleaseError
from qrfleet.field import require_field_tools
from qrfleet.options import admin_token, admin_token_options


def add_parsers(sub):
    group = sub.add_parser(
        "release",
        help="make, sign and publish firmware releases for over-the-air updates",
        description="A release is a bundle (.qfw) of the firmware package compiled for one "
        "board, with a manifest signed by a release key. Units take only releases signed by "
        "a key in their config (qrfleet provision --release-key), and the server publishes "
        "only releases signed by one of its keys (qrfleet serve --release-key).",
    )
    commands = group.add_subparsers(dest="release_command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "keygen",
        help="make a release key pair",
        description="Write NAME, the secret key (mode 0600: keep it off the server), and "
        "NAME.pub, the public key units and the server check releases against. An existing "
        "key is never replaced.",
    )
    p.add_argument("--out", required=True, metavar="NAME", help="file name of the secret key")
    p.set_defaults(func=keygen)

    p = commands.add_parser(
        "build",
        help="compile the firmware package into a signed release bundle",
        description="Compile the firmware package for --target, list each file's size and "
        "SHA-256 in a manifest, sign the manifest with --key and write the bundle.",
    )
    p.add_argument("--version", required=True, help="the release's version, e.g. 0.2.0")
    p.add_argument("--key", required=True, metavar="FILE", help="secret release key (keygen)")
    p.add_argument(
        "--target",
        default="virtual",
        choices=["virtual", "esp32"],
        help="board the release is compiled for (default %(default)s)",
    )
    p.add_argument(
        "--micropython",
        nargs="+",
        default=["1.29"],
        metavar="MAJOR.MINOR",
        help="MicroPython versions the release runs on (default 1.29)",
    )
    p.add_argument("--out", metavar="FILE", help="bundle file (default qrfleet-VERSION.qfw)")
    p.set_defaults(func=build)

    p = commands.add_parser(
        "publish",
        parents=[admin_token_options()],
        help="upload a release bundle to a server",
        description="POST the bundle to the server's /api/releases; the server refuses one "
        "that none of its release keys signed.",
    )
    p.add_argument("bundle", metavar="FILE", help="the .qfw bundle")
    p.add_argument("--server", required=True, metavar="URL", help="server URL, http://HOST:PORT")
    p.set_defaults(func=publish)


def keygen(args):
    from tools import release

    try:
        release.keygen(args.out)
    except ReleaseError as e:
        raise SystemExit(f"qrfleet: {e}") from None
    print(f"secret key: {args.out} (signs releases: keep it safe, off the server)")
    print(f"public key: {args.out}.pub (for qrfleet serve and qrfleet provision --release-key)")


def build(args):
    require_field_tools("release build")
    from tools import release

    out = args.out or f"qrfleet-{args.version}.qfw"
    try:
        data = release.build(args.version, args.key, args.target, tuple(args.micropython))
        release.write_bundle(data, out)
    except ReleaseError as e:
        raise SystemExit(f"qrfleet: {e}") from None
    except OSError as e:
        raise SystemExit(f"qrfleet: cannot write {out}: {e.strerror}") from None
    manifest = json.loads(json.loads(data)["manifest"])
    print(
        f"{out}: release {manifest['version']} for {args.target}, "
        f"{len(manifest['files'])} files, {len(data)} bytes, "
        f"min_free {manifest['min_free']} bytes"
    )


def publish(args):
    try:
        with open(args.bundle, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SystemExit(f"qrfleet: cannot read {args.bundle}: {e.strerror}") from None
    answer = ApiClient(args.server, admin_token(args)).post("/api/releases", data)
    print(json.dumps(answer, indent=2))
