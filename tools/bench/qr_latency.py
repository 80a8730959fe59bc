"""Latency of `POST /api/agents/{a}/qr` -> verified ack, with 20 virtual boards, over Wi-Fi
(ws:// and wss://) and through a USB bridge, side by side.

    .venv/bin/python -m tools.bench.qr_latency [--boards 20] [--requests 50] [--every 0]
        [--transport ws,wss,usb]

For each transport in turn (ws://: protocol 2, every message with its MAC; wss://: the same
inside TLS, the server with a certificate from a CA the bench makes, which the boards are
provisioned to trust; usb: units tethered by their serial ports to one `qrfleet bridge`, which
speaks ws:// to the server, firmware/proto/link.py frames on the ports), a server on SQLite and
`--boards` virtual boards (the real firmware on the MicroPython Unix port, 160K heap, one
process each), provisioned and registered as a technician would; one agent per board, each
linking its unit by reading the pairing QR off the board's screen. Then every agent rings up
`--requests` sales one after another (back to back, or one every `--every` seconds), all agents
at once: POST /qr (the server reserves the unit, sends show_qr, checks the unit's ack against
its own encode), then complete. The last QR of each agent is also read back off its board's
screen (zxing-cpp).

Reports p50/p99/max of the client's wall time and of the server's `latency_ms`, beside the
legacy system it replaces, where units polled the server every 10 s: a QR appeared at the
unit's next poll, 0 to 10 s later (uniformly), whatever the server's speed. Also the server's
CPU and the whole machine's, since boards, server and client share its cores.
The virtual boards' serial ports are RFC 2217 over loopback, with no baud rate: a real UART at
115200 baud adds the time its frames take on the wire, which the report computes for a sale's
show_qr and ack next to the measured figures.
A report, not a test: nothing is asserted.
"""

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from firmware.proto import auth, messages
from firmware.proto import link as uart_link
from host.devices import UNIT_MAX_MESSAGE, command_text
from tools.background import BackgroundLoop
from tools.bench.qr_bench import merchant_payload
from tools.bench.stats import cpu_seconds, machine_busy_s, p50_p99_max, rss_mb
from tools.certs import CertificateAuthority
from tools.harness.tether import BridgeProcess
from tools.serverproc import running_server
from tools.vboard import fleet
from tools.vboard.screen import wait_for_qr

LOCATION = "bench"
LEGACY_POLL_S = 10
TRANSPORTS = {
    "ws": "ws:// (protocol 2, a MAC on every message)",
    "wss": "wss:// (the same inside TLS, ECDSA P-256 certificate)",
    "usb": "usb (tethered: a bridge on the PC speaks ws:// for the units)",
}
UART_BAUD = 115200  # 8N1: 10 bits a byte


def sale_payload(agent_n, sale_n):
    """A merchant QR with this sale's amount and invoice number, at this agent's counter."""
    return merchant_payload(
        f"{1 + sale_n}.{agent_n:02d}", f"INV-{agent_n:02d}-{sale_n:05d}", f"COUNTER{agent_n:02d}"
    )


def link_all(server, boards):
    """One agent per board, linked by the pairing QR on the board's screen -> [(id, client)]."""
    admin = server.admin()
    agents = []
    for n, board in enumerate(boards, 1):
        agent_id = f"till-{n:02d}"
        token = admin.post(
            "/api/agents", {"agent_id": agent_id, "name": agent_id, "location_id": LOCATION}
        )["token"]
        client = server.client(token)
        pairing = wait_for_qr(board.dir / "display.pbm", "qrfleet://pair", timeout=60)
        client.post(f"/api/agents/{agent_id}/devices", {"pairing": pairing})
        agents.append((agent_id, client))
    return agents


def ring_up(agent_n, agent_id, client, requests, every_s, board, offset_s=0):
    """`requests` sales, one every `every_s` at most, the first after `offset_s`
    -> (wall ms, server ms, screen read back?)."""
    wall, server_ms, read_back = [], [], False
    next_sale = time.monotonic() + offset_s
    for sale_n in range(requests):
        time.sleep(max(0, next_sale - time.monotonic()))
        next_sale += every_s
        payload = sale_payload(agent_n, sale_n)
        started = time.perf_counter()
        doc = client.post(f"/api/agents/{agent_id}/qr", {"payload": payload})
        wall.append((time.perf_counter() - started) * 1000)
        server_ms.append(doc["latency_ms"])
        if not doc["verified"] or doc["device_id"] != board.device_id:
            raise RuntimeError(
                f"{agent_id}'s QR was not verified on its unit {board.device_id}: {doc}"
            )
        if sale_n == requests - 1:
            read_back = wait_for_qr(board.dir / "display.pbm", payload) == payload
        client.post(f"/api/txns/{doc['txn_id']}/complete")
    return wall, server_ms, read_back


async def stop_boards(boards):
    for board in boards:
        if board.mode != "off":
            await board.stop()


def line(name, values):
    p50, p99, top = p50_p99_max(values)
    return f"{name:<34} {p50:>8.0f} {p99:>8.0f} {top:>8.0f}"


def measure(transport, count, requests, every_s, heap):
    """One transport's run -> (wall ms, server ms, read back, elapsed s, server CPU %, RSS MB,
    machine busy %)."""
    with tempfile.TemporaryDirectory(prefix="qrfleet-qr-latency-") as workdir:
        tls, ca_file = None, None
        if transport == "wss":
            ca = CertificateAuthority(Path(workdir), "bench")
            tls, ca_file = ca.issue(), ca.pem
        with running_server(workdir, tls=tls, ca_file=ca_file) as server:
            return _measure(server, workdir, count, requests, every_s, heap, transport == "usb")


def _measure(server, workdir, count, requests, every_s, heap, tethered):
    server.admin().post(
        "/api/locations", {"location_id": LOCATION, "name": "Bench", "policy": "strict"}
    )
    loop = BackgroundLoop()
    provisioning = fleet.Provisioning(
        [server.url],
        server.admin_token,
        LOCATION,
        server_ca=server.ca_file,
        link="usb" if tethered else "wifi",
    )
    boards, bridge = [], None
    try:
        boards = loop.run(
            fleet.start_boards(f"{workdir}/boards", count, heap=heap, provisioning=provisioning),
            timeout=300,
        )
        if tethered:  # one PC with every unit on its USB ports
            bridge = BridgeProcess(
                [b.serial_url for b in boards], [server.device_url], f"{workdir}/bridge.log"
            ).start()
        agents = link_all(server, boards)
        for (agent_id, client), board in zip(agents, boards, strict=True):  # warm-up
            ring_up(0, agent_id, client, 1, 0, board)
        server_cpu, busy = cpu_seconds(server.process.pid), machine_busy_s()
        started = time.monotonic()
        with ThreadPoolExecutor(count) as pool:
            # Paced cashiers start staggered: real ones do not press the button in step.
            jobs = [
                pool.submit(
                    ring_up, n, agent_id, client, requests, every_s, board, n * every_s / count
                )
                for n, ((agent_id, client), board) in enumerate(zip(agents, boards, strict=True))
            ]
            results = [job.result() for job in jobs]
        elapsed = time.monotonic() - started
        server_cpu = 100 * (cpu_seconds(server.process.pid) - server_cpu) / elapsed
        busy = 100 * (machine_busy_s() - busy) / elapsed
        rss = rss_mb(server.process.pid)
    finally:
        if bridge:
            bridge.stop()
        loop.run(stop_boards(boards), timeout=60)
        loop.close()
    wall = [ms for w, _, _ in results for ms in w]
    server_ms = [ms for _, s, _ in results for ms in s]
    read_back = sum(1 for _, _, ok in results if ok)
    return wall, server_ms, read_back, elapsed, server_cpu, rss, busy


def run(count, requests, every_s, heap, transports):
    pace = f"one every {every_s:g} s" if every_s else "back to back"
    print(
        f"POST /qr -> verified ack: {count} virtual boards (MicroPython, {heap} heap), "
        f"{count} agents x {requests} sales {pace}, {os.cpu_count()} cores shared"
    )
    figures = {t: measure(t, count, requests, every_s, heap) for t in transports}
    for transport, (wall, _, read_back, elapsed, server_cpu, rss, busy) in figures.items():
        print(
            f"{TRANSPORTS[transport]}: {len(wall)} QRs in {elapsed:.1f} s "
            f"({len(wall) / elapsed:.1f}/s), all verified; last QR read back off "
            f"{read_back}/{count} screens; server CPU {server_cpu:.0f}% of one core, RSS "
            f"{rss:.0f} MB; machine busy {busy:.0f}% of {os.cpu_count() * 100}%"
        )
    print(f"{'':<34} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for transport, (wall, server_ms, *_) in figures.items():
        print(line(f"{transport}, client wall time", wall))
        print(line(f"{transport}, server latency_ms", server_ms))
    legacy = [LEGACY_POLL_S * 1000 * (i + 0.5) / 1000 for i in range(1000)]
    print(line(f"legacy, unit polls every {LEGACY_POLL_S} s", legacy))
    if "usb" in figures:
        to_unit, to_server = uart_bytes_per_sale()
        wire_ms = (to_unit + to_server) * 10 * 1000 / UART_BAUD
        print(
            f"usb on a real UART at {UART_BAUD} baud adds ~{wire_ms:.0f} ms per QR on the wire "
            f"({to_unit} bytes of frames to the unit, {to_server} back, acknowledgements "
            "included), which the virtual boards' ports do not"
        )


def uart_bytes_per_sale():
    """Bytes of link frames a sale's show_qr and its ack take on the UART, each way."""
    bridge = uart_link.Link("pc", True, uart_link.BRIDGE_WINDOW, uart_link.BRIDGE_PAYLOAD)
    unit = uart_link.Link(
        "qrf-000000000000",
        False,
        uart_link.UNIT_WINDOW,
        uart_link.UNIT_PAYLOAD,
        inbox=bytearray(UNIT_MAX_MESSAGE),
    )
    unit.receive(bridge.data_to_send(0), 0)
    bridge.receive(unit.data_to_send(0), 0)
    show = command_text("show_qr", payload=sale_payload(1, 1), caption="1.01", ecc="M")
    ack = messages.encode(
        "ack", id=1, version=9, mask=3, ecc="M", sha256="0" * 64, scale=1, screen="payment"
    )
    mac = b"0" * auth.SEAL_OVERHEAD  # what sealing adds to each
    bridge.send(uart_link.DATA, uart_link.stream_payload(1, show.encode() + mac))
    unit.send(uart_link.DATA, uart_link.stream_payload(1, ack.encode() + mac))
    to_unit = to_server = 0
    for now in range(1, 200):  # until both have everything, acknowledged
        down, up = bridge.data_to_send(now), unit.data_to_send(now)
        to_unit, to_server = to_unit + len(down), to_server + len(up)
        unit.receive(down, now)
        bridge.receive(up, now)
        if bridge.idle() and unit.idle() and not down and not up:
            break
    return to_unit, to_server


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.qr_latency", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--boards", type=int, default=20, help="virtual boards, one agent each")
    parser.add_argument("--requests", type=int, default=50, help="sales per agent")
    parser.add_argument(
        "--every", type=float, default=0, help="seconds between one agent's sales (0: back to back)"
    )
    parser.add_argument("--heap", default="160K", help="MicroPython heap per board")
    parser.add_argument(
        "--transport",
        default="ws,wss,usb",
        help="comma-separated, measured in this order: ws (MACs), wss (MACs inside TLS), usb "
        "(through a bridge)",
    )
    args = parser.parse_args(argv)
    transports = [t.strip() for t in args.transport.split(",")]
    unknown = set(transports) - set(TRANSPORTS)
    if unknown:
        parser.error(f"--transport {', '.join(sorted(unknown))}: use ws, wss and/or usb")
    run(args.boards, args.requests, args.every, args.heap, transports)


if __name__ == "__main__":
    main()
