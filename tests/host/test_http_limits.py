"""Clients that hold connections, open too many of them or send absurd bodies cost only
themselves: a cashier's QR is answered all along."""

import json
import selectors
import socket
import sys
import time

import pytest

from host.client import ApiClientError
from host.http import IDLE_TIMEOUT_S, MAX_JSON_DEPTH, REQUEST_TIMEOUT_S
from tools.hostile import ATTACKER, BODYLESS_POST
from tools.serverproc import running_server


def connect(server, request=b""):
    """A socket from ATTACKER to the server, having sent `request` (maybe nothing)."""
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(ATTACKER, 0))
    sock.sendall(request)
    return sock


def answer(sock):
    """Everything the server sends until it closes (its answer, if any)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def sell(agent, agent_id):
    """One sale at a counter -> seconds until its QR was shown."""
    started = time.monotonic()
    doc = agent.post(f"/api/agents/{agent_id}/qr", {"payload": "upi://pay?pa=shop@bank&am=1"})
    shown_s = time.monotonic() - started
    agent.post(f"/api/txns/{doc['txn_id']}/complete")
    return shown_s


def test_300_bodyless_posts_are_closed_in_time_while_a_cashier_sells(shop):
    agent = shop.agent("till-1")
    shop.link(agent, "till-1", shop.unit(1))
    held = [connect(shop.server, BODYLESS_POST) for _ in range(300)]
    answers = {}
    qr_s = []
    with selectors.DefaultSelector() as sel:
        for sock in held:
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + 35
        while len(answers) < len(held) and time.monotonic() < deadline:
            qr_s.append(sell(agent, "till-1"))
            for key, _ in sel.select(timeout=0.1):
                answers[key.fileobj] = answer(key.fileobj)
                sel.unregister(key.fileobj)
    for sock in held:
        sock.close()

    assert len(answers) == 300
    assert all(data.startswith(b"HTTP/1.1 408 ") for data in answers.values())
    assert max(qr_s) < 1.0
    assert shop.admin.get("/api/metrics")["http_read_timeouts"] == 300


def test_a_peer_past_its_connection_cap_is_refused_and_others_are_served(tmp_path):
    with running_server(tmp_path, extra=["--max-connections-per-peer", "20"]) as server:
        idle = [connect(server) for _ in range(20)]
        refused = answer(connect(server))
        assert server.admin().get("/api/health")["ok"]  # from 127.0.0.1, another peer

        head, _, body = refused.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert b"Retry-After: 1" in head
        assert json.loads(body)["error"] == "too_many_connections"
        assert json.loads(body)["limit"] == 20
        # Connections that never send a request are closed after the idle deadline, and the
        # address may connect again.
        time.sleep(IDLE_TIMEOUT_S + 1)
        assert all(answer(sock) == b"" for sock in idle)
        again = connect(server, b"GET /api/health HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert answer(again).startswith(b"HTTP/1.1 200 ")
        assert server.admin().get("/api/metrics")["connections_refused_peer_cap"] == 1


def prlimited(files):
    """`qrfleet serve` run with at most `files` open files."""
    return ["prlimit", f"--nofile={files}", sys.executable, "-m", "qrfleet"]


def test_connections_past_what_the_open_file_limit_allows_are_refused_not_crashed_into(
    tmp_path,
):
    # 200 open files: the default cap is 100 connections, with room left for the store.
    with running_server(tmp_path, command=prlimited(200)) as server:
        held = [connect(server) for _ in range(100)]
        refused = [answer(connect(server)) for _ in range(50)]
        for sock in held:
            sock.close()
        time.sleep(0.5)
        metrics = server.admin().get("/api/metrics")

        assert all(data.startswith(b"HTTP/1.1 503 ") for data in refused)
        assert metrics["connections_refused_total_cap"] == 50
        assert metrics["accept_errors"] == 0


def test_accept_errors_past_the_open_file_limit_are_a_few_log_lines_not_a_storm(tmp_path):
    # A cap set above what the open-file limit allows: accept() itself fails (EMFILE).
    command = prlimited(120)
    with running_server(tmp_path, command=command, extra=["--max-connections", "1000"]) as server:
        held = []
        for _ in range(200):
            try:
                held.append(connect(server))
            except OSError:
                break
        time.sleep(3)  # asyncio retries the accept every second meanwhile
        for sock in held:
            sock.close()
        time.sleep(1.5)
        assert server.admin().get("/api/health")["ok"]
        log = open(server.log_path).read().splitlines()

    failures = [json.loads(line) for line in log if '"accept_failed"' in line]
    assert 1 <= len(failures) <= 3
    assert "Too many open files" in failures[0]["reason"]
    assert not any("Traceback" in line for line in log)


def nest(depth):
    """`depth` objects inside each other."""
    doc = 1
    for _ in range(depth):
        doc = {"a": doc}
    return doc


@pytest.mark.parametrize(
    "body",
    [b"[" * 64000, json.dumps({"location_id": "x", "deep": nest(MAX_JSON_DEPTH)}).encode()],
    ids=["64K of [", "an object 33 deep"],
)
def test_deeply_nested_json_is_refused_with_400(server, body):
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT_S) as sock:
        sock.sendall(
            b"POST /api/locations HTTP/1.1\r\nAuthorization: Bearer "
            + server.admin_token.encode()
            + b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        head, _, doc = answer(sock).partition(b"\r\n\r\n")

    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(doc)["error"] == "invalid"
    assert json.loads(doc)["max_depth"] == MAX_JSON_DEPTH
    assert "Recursion" not in doc.decode()


def test_json_nested_to_the_limit_is_read(server):
    admin = server.admin()
    with pytest.raises(ApiClientError) as refused:
        admin.post("/api/locations", {"location_id": "x", "name": "y", "policy": nest(31)})
    assert refused.value.code == "invalid"
    assert "policy" in refused.value.message  # refused for its content, not its depth
