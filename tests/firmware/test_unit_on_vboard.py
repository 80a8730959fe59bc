"""The firmware on a virtual board (160K heap) against a real `websockets` server."""

import time

import pytest

from firmware import qr
from firmware.proto import messages
from tests.conftest import wait_for
from tests.firmware.unit_server import UnitServer
from tools import image
from tools.vboard.board import VirtualBoard
from tools.vboard.screen import decode_qr

SECRET = "5e" * 16


@pytest.fixture
def unit_server(background):
    server = UnitServer({})
    background.run(server.start())
    yield server
    background.run(server.stop())


def boot_board(background, directory, servers, secret=SECRET, display="virtual-128x64"):
    config = {"secret": secret, "servers": servers, "name": "till 3", "display": display}
    board = VirtualBoard(directory, files=image.board_files(config))
    board.prepare_identity()
    background.run(board.start())
    return board


@pytest.fixture
def board(background, unit_server, tmp_path):
    boards = []

    def make(servers=None, secret=SECRET, **kwargs):
        b = boot_board(
            background,
            tmp_path / f"board-{len(boards)}",
            servers or [unit_server.url],
            secret,
            **kwargs,
        )
        unit_server.secrets[b.device_id] = SECRET
        boards.append(b)
        return b

    yield make
    for b in boards:
        background.run(b.stop())


def serial_log(board):
    return (board.dir / "serial.log").read_text(errors="replace")


def test_unit_authenticates_heartbeats_and_shows_a_verified_qr(background, unit_server, board):
    unit = board()
    wait_for(lambda: unit.device_id in unit_server.sessions, 20, "the unit to authenticate")
    wait_for(lambda: len(unit_server.heartbeats) >= 2, 10, "two heartbeats")
    beat = unit_server.heartbeats[-1]
    assert beat["fw"] == "0.1.0" and 0 < beat["free_heap"] < 160 * 1024

    payload = "upi://pay?pa=cafe@bank&pn=Cafe&am=4.20&cu=INR"
    ack = background.run(
        unit_server.command(unit.device_id, "show_qr", payload=payload, caption="4.20 INR", ecc="M")
    )
    expected = qr.encode(payload, "M")
    assert ack["type"] == "ack"
    assert (ack["version"], ack["mask"], ack["sha256"]) == (
        expected.version,
        expected.mask,
        messages.matrix_digest(expected),
    )
    assert decode_qr(unit.dir / "display.pbm") == [payload]


def test_bad_commands_get_errors_and_the_session_goes_on(background, unit_server, board):
    unit = board()
    wait_for(lambda: unit.device_id in unit_server.sessions, 20, "the unit to authenticate")
    # 300 bytes at ECC H: a 128x64 panel shows at most 119 (the message fits its 512 bytes).
    too_big = background.run(
        unit_server.command(unit.device_id, "show_qr", payload="x" * 300, ecc="H")
    )
    assert (too_big["type"], too_big["code"]) == ("error", messages.PAYLOAD_TOO_LARGE)
    assert "shorten the payload" in too_big["message"]
    unknown = background.run(
        unit_server.raw_command(unit.device_id, 900, '{"type": "dance", "id": 900}')
    )
    assert unknown["code"] == messages.UNKNOWN_COMMAND
    malformed = background.run(
        unit_server.raw_command(unit.device_id, 901, '{"type": "show_qr", "id": 901}')
    )
    assert malformed["code"] == messages.BAD_MESSAGE and "payload" in malformed["message"]
    background.run(unit_server.send_raw(unit.device_id, "{not json"))
    info = background.run(unit_server.command(unit.device_id, "info"))
    assert info["device_id"] == unit.device_id and info["boot_count"] >= 1


def test_unit_reconnects_by_itself_after_the_server_restarts(background, unit_server, board):
    unit = board()
    wait_for(lambda: unit.device_id in unit_server.sessions, 20, "the unit to authenticate")
    port = unit_server.port
    background.run(unit_server.stop())
    time.sleep(2)
    restarted = time.monotonic()
    background.run(unit_server.start(port))
    wait_for(lambda: unit.device_id in unit_server.sessions, 20, "the unit to come back")
    # Backoff is capped at 15 s (full jitter), so the unit is back within the cap.
    assert time.monotonic() - restarted < 16
    assert unit_server.authenticated == 2


def test_unit_refuses_a_server_that_fails_the_handshake_check(background, board):
    def wrong_accept(connection, request, response):
        response.headers["Sec-WebSocket-Accept"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA="

    liar = UnitServer({}, process_response=wrong_accept)
    background.run(liar.start())
    try:
        unit = board(servers=[liar.url])
        liar.secrets[unit.device_id] = SECRET
        wait_for(lambda: "HandshakeError" in serial_log(unit), 20, "the handshake to fail")
        time.sleep(1)
        assert liar.authenticated == 0
    finally:
        background.run(liar.stop())


def test_unit_with_a_wrong_secret_trusts_no_server_and_keeps_trying(background, unit_server, board):
    """The server's proof is made with the secret it holds: a unit holding another one cannot
    tell it from an impostor, and says so."""
    unit = board(secret="00" * 16)
    wait_for(lambda: unit_server.refused >= 2, 30, "two refused attempts")
    assert unit.device_id not in unit_server.sessions
    assert "could not prove it knows this unit's secret" in serial_log(unit)


@pytest.mark.slow
def test_free_heap_stays_flat_over_1000_show_qr(background, unit_server, board):
    unit = board()
    wait_for(lambda: unit.device_id in unit_server.sessions, 20, "the unit to authenticate")

    async def run():
        heap = []
        for i in range(1000):
            ack = await unit_server.command(
                unit.device_id, "show_qr", payload=f"upi://pay?pa=shop@bank&am={i}.00&tn=sale{i}"
            )
            assert ack["type"] == "ack", ack
            if i % 100 == 99:
                heap.append((await unit_server.command(unit.device_id, "info"))["free_heap"])
        return heap

    heap = background.run(run(), timeout=600)
    print("free heap every 100 show_qr:", heap)
    assert heap[0] - min(heap) < 4096, heap
