"""`qrfleet serve`: the server units connect to and cashier systems call."""

import asyncio
import signal

from qrfleet.options import admin_token, admin_token_options


def add_parsers(sub):
    p = sub.add_parser(
        "serve",
        parents=[admin_token_options()],
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
    p.add_argument("--server-id", help="this instance's name in a cluster")
    p.add_argument("--heartbeat", type=int, default=5, help="unit heartbeat period, seconds")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=serve)


def serve(args):
    from host.log import Log
    from host.server import QrfleetServer

    async def run():
        server = QrfleetServer(
            args.store,
            admin_token(args),
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
