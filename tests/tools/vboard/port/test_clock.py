"""A virtual board's clock is as unkind as a unit's: its RTC reads 2000-01-01 plus uptime until
it is set, and TLS refuses every server meanwhile; the bench's time server sets it."""

import time

from tests.tools.vboard.port.conftest import run
from tools.certs import CertificateAuthority

_EPOCH_2000 = 946684800

RTC = (
    "import time, machine\n"
    "rtc = machine.RTC()\n"
    "print(time.gmtime(0), time.time() < 60, rtc.datetime()[:7])\n"
    "rtc.datetime((2026, 6, 1, 0, 12, 30, 15, 500000))\n"
    "print(time.gmtime()[:6], rtc.datetime()[:6], time.localtime() == time.gmtime())\n"
    "print(time.mktime((2026, 6, 1, 12, 30, 15, 0, 0)) - time.time() <= 0)\n"
)


def test_the_rtc_reads_2000_after_a_reset_until_it_is_set(board):
    said = run(board, RTC, resume=False)  # a soft reset: the clock is gone, as on a unit
    assert said.splitlines() == [
        "(2000, 1, 1, 0, 0, 0, 5, 1) True (2000, 1, 1, 5, 0, 0, 0)",
        "(2026, 6, 1, 12, 30, 15) (2026, 6, 1, 0, 12, 30) True",
        "True",
    ]


TLS = (
    "import machine, socket, ssl, time\n"
    "tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); tls.verify_mode = ssl.CERT_REQUIRED\n"
    "tls.load_verify_locations(cadata={ca!r})\n"
    "def wrap():\n"
    " try:\n"
    "  tls.wrap_socket(socket.socket(), server_hostname='x', do_handshake_on_connect=False)\n"
    "  print('handshake goes on')\n"
    " except ValueError as e:\n"
    "  print(repr(str(e)))\n"
    "wrap()\n"
    "machine.RTC().datetime(time.gmtime({now})[:3] + (0,) + time.gmtime({now})[3:6] + (0,))\n"
    "wrap()\n"
    "machine.RTC().datetime((2040, 1, 1, 0, 0, 0, 0, 0))\n"
    "wrap()\n"
)


def test_tls_refuses_every_server_with_mbedtls_words_while_the_clock_is_unset(board, tmp_path):
    ca = CertificateAuthority(tmp_path, "shop").der
    said = run(board, TLS.format(ca=ca, now=int(time.time()) - _EPOCH_2000), resume=False)
    assert said.splitlines() == [
        "'\\nThe certificate validity starts in the future\\n'",
        "handshake goes on",
        "'\\nThe certificate validity has expired\\n'",
    ]


SYNC = (
    "import asyncio, network\n"
    "from firmware.net import clock\n"
    "sta = network.WLAN(network.STA_IF); sta.active(True); sta.connect('bench', '')\n"
    "try:\n"
    " seconds, us = asyncio.run(clock.query('pool.ntp.org', tries=2, wait_ms=300))\n"
    " print('off by', abs(seconds - {now}) // 5 * 5, 's')\n"
    "except (clock.ClockError, OSError) as e:\n"
    " print(type(e).__name__, e)\n"
)


def test_the_boards_ntp_host_is_the_benchs_time_server_unless_withheld_or_wifi_is_down(
    background, radio_board
):
    board, info = radio_board

    def sync():
        return run(info, SYNC.format(now=int(time.time()) - _EPOCH_2000)).strip()

    assert sync() == "off by 0 s"  # the host's time, in the ESP32 port's epoch
    board.radio.answers_time = False
    assert sync() == "ClockError no answer to 2 requests in 300 ms each"
    board.radio.answers_time = True
    background.call(board.wifi_down, 30)
    assert sync() == "OSError -202"  # the name does not resolve without Wi-Fi
