"""`qrfleet serve`: the server units connect to and cashier systems call."""

import argparse
import asyncio
import os
import resource
import signal

from host.devices import ACCEPT_PER_S
from host.http import MAX_CONNECTIONS_PER_PEER
from qrfleet.options import admin_token, admin_token_options


def add_parsers(sub):
    p = sub.add_parser(
        "serve",
        parents=[admin_token_options()],
        help="run the server units connect to and cashier systems call",
        description="Serve units (/ws/device) and the HTTP API (/api/...) on one port. The "
        "first line printed is the URL, http://HOST:PORT, or https://HOST:PORT with --tls-cert "
        "(useful with --port 0).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    p.add_argument(
        "--store",
        default="sqlite:///qrfleet.db",
        help="registry store: sqlite:///PATH (default), redis://HOST:PORT/DB, or "
        "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE/DB (the Sentinels of a replicated "
        "Valkey)",
    )
    p.add_argument("--server-id", help="this instance's name in a cluster")
    p.add_argument("--heartbeat", type=int, default=5, help="unit heartbeat period, seconds")
    p.add_argument(
        "--tls-cert",
        help="PEM certificate (chain) to serve https:// and wss:// on the same port, for shops "
        "without a reverse proxy; needs --tls-key",
    )
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument(
        "--max-connections",
        type=int,
        help="connections open at once, units included (default: the open-file limit less 100)",
    )
    p.add_argument(
        "--max-connections-per-peer",
        type=int,
        default=MAX_CONNECTIONS_PER_PEER,
        help="connections open at once from one address (default %(default)s)",
    )
    p.add_argument(
        "--new-sessions-per-s",
        type=float,
        default=ACCEPT_PER_S,
        help="units admitted per second once authenticated, after a burst of one second's "
        "worth (default %(default)s): a reconnecting fleet leaves heartbeats served",
    )
    p.add_argument(
        "--operator-token",
        default=os.environ.get("QRFLEET_OPERATOR_TOKEN"),
        help="a read-only token (or QRFLEET_OPERATOR_TOKEN) for support staff: it logs in to "
        "the dashboard and reads the API and the event stream, and changes nothing",
    )
    p.add_argument(
        "--metrics-token",
        default=os.environ.get("QRFLEET_METRICS_TOKEN"),
        help="token Prometheus sends to GET /metrics (or QRFLEET_METRICS_TOKEN); without it "
        "/metrics takes the admin token",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        type=host_port,
        help="also serve GET /metrics there, without a token unless --metrics-token is given "
        "(e.g. an address only the monitoring network reaches); port 0 picks a free one, "
        "printed on the second line",
    )
    p.add_argument(
        "--release-key",
        action="append",
        default=[],
        metavar="FILE.pub",
        help="public key (from qrfleet release keygen) that a release must be signed with to "
        "be published and rolled out; repeatable; without one, no release is accepted",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=serve)


def serve(args):
    from host.http import tls_context
    from host.log import Log
    from host.releases import ReleaseError, load_public_keys
    from host.server import QrfleetServer

    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("qrfleet: --tls-cert and --tls-key go together")
    tls = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    try:
        release_keys = load_public_keys(args.release_key)
    except ReleaseError as e:
        raise SystemExit(f"qrfleet: {e}") from None
    allow_all_open_files()

    async def run():
        server = QrfleetServer(
            args.store,
            admin_token(args),
            server_id=args.server_id,
            heartbeat_s=args.heartbeat,
            log=Log(args.log_level),
            tls=tls,
            max_connections=args.max_connections,
            max_connections_per_peer=args.max_connections_per_peer,
            new_sessions_per_s=args.new_sessions_per_s,
            metrics_token=args.metrics_token,
            metrics_listen=args.metrics_listen,
            operator_token=args.operator_token,
            release_keys=release_keys,
        )
        port = await server.start(args.host, args.port)
        print(f"{'https' if tls else 'http'}://{args.host}:{port}", flush=True)
        if args.metrics_listen:
            print(
                f"metrics: http://{args.metrics_listen[0]}:{server.metrics_port}/metrics",
                flush=True,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()

    asyncio.run(run())


def host_port(text):
    """`HOST:PORT` -> (host, port); `[::1]:9100` for IPv6."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:9100")
    return host.strip("[]"), int(port)


def allow_all_open_files():
    """Raise the open-file limit to what the system allows this process: each unit holds one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # an unlimited hard limit is more than the kernel grants
        pass
