"""Virtual boards running the real firmware against a real server, for the tests that put
something on the path between them (a man in the middle, TLS): provisioning, screens, logs."""

from tools import framebuf, image, provision
from tools.vboard.board import VirtualBoard
from tools.vboard.screen import decode_qr, wait_for_qr

SCREEN = (128, 64)


def start_board(shop, directory, urls, server_ca=None, answers_time=True):
    """A virtual board registered with the shop's server whose config lists `urls` (ws:// or
    wss://, trusting `server_ca`, DER), started; stop it with shop.background.run(b.stop()).
    `answers_time=False`: the bench's time server never answers it."""
    secret = provision.new_secret()
    config = {"secret": secret, "servers": urls, "name": "till 1"}
    if server_ca:
        config["tls"] = provision.tls_config(server_ca)
    board = VirtualBoard(directory, files=image.board_files(config))
    board.prepare_identity()
    board.radio.answers_time = answers_time
    shop.admin.post(
        "/api/devices",
        {"device_id": board.device_id, "secret": secret, "location_id": shop.location},
    )
    shop.background.run(board.start())
    return board


def link_and_sell(shop, board, agent_id="till-1"):
    """A cashier links the board by its pairing QR, read off its screen, and shows a QR on it
    that the server verifies and zxing-cpp reads back; returns the cashier's client."""
    agent = shop.agent(agent_id)
    pairing = wait_for_qr(board.dir / "display.pbm", "qrfleet://pair?", timeout=30)
    agent.post(f"/api/agents/{agent_id}/devices", {"pairing": pairing})
    doc = agent.post(f"/api/agents/{agent_id}/qr", {"payload": "upi://pay?pa=shop@bank&am=1.00"})
    assert doc["verified"]
    assert decode_qr(board.dir / "display.pbm") == ["upi://pay?pa=shop@bank&am=1.00"]
    agent.post(f"/api/txns/{doc['txn_id']}/complete", {})
    return agent


def untrusted_screen(url):
    """display.pbm as the unit's "Server not trusted" screen, drawn by the firmware's renderer."""
    return status_screen("untrusted", url)


def status_screen(state, detail):
    """display.pbm as the unit's status screen `state` (e.g. "clock", "Clock not set"), drawn
    by the firmware's renderer."""
    framebuf.install()  # the renderer's framebuf, on CPython
    from firmware.display.render import Renderer
    from firmware.display.virtual import VirtualDisplay

    frames = []
    display = VirtualDisplay(*SCREEN, lambda w, h, rows: frames.append(bytes(rows)))
    Renderer(display).status(state, detail)
    return b"P4\n%d %d\n" % SCREEN + frames[-1]


def shows(board, screen):
    return (board.dir / "display.pbm").read_bytes() == screen


def serial_log(board):
    return (board.dir / "serial.log").read_text(errors="replace")
