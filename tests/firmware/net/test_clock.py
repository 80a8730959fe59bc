"""The unit's SNTP client (firmware.net.clock): what it takes from a time server's answer, and
what it refuses, the same on CPython and on MicroPython."""

import calendar
import time

import pytest

from firmware.net import clock
from tests.firmware.both import run_both
from tools.vboard import ntp

NONCE = bytes(range(1, 9))
# 2026-06-01 12:00:00.25 UTC in NTP's seconds (since 1900) and fraction.
NTP_SECONDS = calendar.timegm((2026, 6, 1, 12, 0, 0)) + 2208988800
QUARTER = 1 << 30

# Replies built on the runtime under test: a server's answer with one field changed.
SNIPPET = f"""
import struct, time
from firmware.net import clock

def reply(head=0x24, stratum=2, origin={NONCE!r}, seconds={NTP_SECONDS}, fraction={QUARTER},
          refid=b"GPS\\0"):
    return (struct.pack("!BBbbII4s", head, stratum, 6, -20, 0, 0, refid) + bytes(8)
            + origin + bytes(8) + struct.pack("!II", seconds, fraction))

def show(**fields):
    try:
        seconds, us = clock.answer(reply(**fields), {NONCE!r})
        print(time.gmtime(seconds)[:6], us)
    except clock.NotAnAnswer as e:
        print("skipped:", e)
    except clock.ClockError as e:
        print("refused:", e)

packet = clock.request({NONCE!r})
print(len(packet), hex(packet[0]), bytes(packet[40:]) == {NONCE!r}, sum(packet[1:40]))
show()
show(head=0x23)
show(origin=bytes(8))
show(stratum=0, refid=b"RATE")
show(stratum=16)
show(head=0xE4)
show(seconds=0, fraction=0)
print(clock.datetime(clock.answer(reply(), {NONCE!r})[0], 5))
"""


def test_an_answer_sets_the_time_and_each_bad_one_says_why(unix_port):
    on_cpython, on_micropython = run_both(unix_port, SNIPPET)
    assert on_micropython == on_cpython
    assert on_cpython.splitlines() == [
        "48 0x23 True 0",  # version 4, mode 3 (client), our nonce as its transmit time
        "(2026, 6, 1, 12, 0, 0) 250000",
        "refused: it answered in NTP mode 3, not as a server (4)",
        "skipped: not an answer to our request",
        "refused: it sent a kiss-of-death (RATE): it will not serve this unit now",
        "refused: its own clock is not synchronised (stratum 16)",
        "refused: its own clock is not synchronised (stratum 2)",
        "refused: its transmit timestamp is zero",
        "(2026, 6, 1, 0, 12, 0, 0, 5)",  # Monday, as the RTC takes it
    ]


def test_the_next_ntp_era_from_2036_on_is_read_as_such():
    """RFC 4330 §3: seconds with the top bit clear are after 2036-02-07 06:28:16."""
    after = calendar.timegm((2040, 1, 1, 0, 0, 0)) + 2208988800 - (1 << 32)
    reply = ntp.reply(clock.request(NONCE), 0)[:40] + after.to_bytes(4, "big") + bytes(4)
    seconds, _ = clock.answer(reply, NONCE)
    assert time.gmtime(seconds)[:3] == (2040, 1, 1)


def test_the_benchs_time_server_answers_the_units_request_with_the_hosts_time():
    now = time.time()
    seconds, us = clock.answer(ntp.reply(clock.request(NONCE), now), NONCE)
    assert seconds + us / 1e6 == pytest.approx(now, abs=1e-4)


def test_the_benchs_time_server_answers_nothing_but_a_client_request():
    assert ntp.reply(bytes(47), 0) is None
    assert ntp.reply(ntp.reply(clock.request(NONCE), 0), 0) is None  # a server's answer
