"""network and socket on a virtual board: the ESP32 port's WLAN, over the board's radio."""

import socket
import ssl
import subprocess
import threading

import pytest

from tests.tools.vboard.port.conftest import run


def test_station_joins_with_the_ports_errors_constants_and_macs(board):
    said = run(
        board,
        "import network, machine\n"
        "sta = network.WLAN(network.STA_IF)\n"
        "print(sta is network.WLAN(), sta.active())\n"
        "try:\n sta.connect('Shop-WiFi', 'secret')\nexcept OSError as e:\n print(e)\n"
        "sta.active(True)\n"
        "print(sta.status() == network.STAT_IDLE, sta.isconnected(), sta.ifconfig()[0])\n"
        "sta.connect('Shop-WiFi', 'secret')\n"
        "print(sta.isconnected(), sta.status() == network.STAT_GOT_IP, sta.status('rssi'))\n"
        "print(sta.ipconfig('addr4'), len(sta.scan()[0]))\n"
        "mac, ap = sta.config('mac'), network.WLAN(network.AP_IF).config('mac')\n"
        "print(mac == machine.unique_id(), ap[:5] == mac[:5], (ap[5] - mac[5]) % 256)\n"
        "sta.disconnect()\n"
        "print(sta.isconnected(), sta.status() == network.STAT_IDLE)\n",
    )
    assert said.splitlines() == [
        "True False",
        "Wifi Not Started",
        "True False 0.0.0.0",
        "True True -55",
        "('192.168.4.2', '255.255.255.0') 6",
        "True True 1",
        "False True",
    ]


@pytest.fixture
def tls_echo(tmp_path):
    """A TLS server on the host that echoes one line (a self-signed certificate)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-keyout", key, "-out", cert, "-days", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


CONNECT = (
    "import asyncio, network, socket, ssl\n"
    "sta = network.WLAN(network.STA_IF); sta.active(True); sta.connect('bench', '')\n"
    "async def echo():\n"
    " tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); tls.verify_mode = ssl.CERT_NONE\n"
    " r, w = await asyncio.open_connection('localhost', {port}, ssl=tls)\n"
    " w.write(b'till 4\\n'); await w.drain(); print(await r.readline()); w.close()\n"
    "def attempt(step):\n"
    " try:\n  step()\n except OSError as e:\n  print('OSError', e)\n"
    "print(sta.isconnected(), sta.status())\n"
    "attempt(lambda: asyncio.run(echo()))\n"
)


def test_tls_goes_over_the_radio_and_wifi_down_takes_the_station_off(
    background, radio_board, tls_echo
):
    board, info = radio_board
    said = run(info, CONNECT.format(port=tls_echo), resume=False)
    assert said.splitlines() == ["True 1010", "b'till 4\\n'"]

    background.call(board.wifi_down, 30)
    said = run(info, CONNECT.format(port=tls_echo), resume=False)
    assert said.splitlines() == ["False 201", "OSError -202"]
