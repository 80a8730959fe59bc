"""The session's decisions (firmware.net.policy): which server a unit tries, how long it waits
between attempts and when it takes a silent server as gone."""

import random

import pytest

from firmware.net.policy import backoff_ms, server_order, server_silent
from tests.firmware.both import run_both

URLS = ["ws://a/ws/device", "ws://b/ws/device", "ws://c/ws/device"]


def first_servers(device_id, urls, count):
    order = server_order(device_id, urls)
    return [next(order) for _ in range(count)]


@pytest.mark.parametrize(
    "attempt, ceiling_ms",
    [(0, 500), (1, 1000), (2, 2000), (3, 4000), (4, 8000), (5, 15000), (6, 15000), (99, 15000)],
)
def test_backoff_is_full_jitter_under_a_ceiling_doubling_from_half_a_second_to_15(
    attempt, ceiling_ms
):
    random.seed(attempt)
    delays = [backoff_ms(attempt) for _ in range(4000)]
    assert 0 <= min(delays) < ceiling_ms * 0.01
    assert ceiling_ms * 0.99 < max(delays) <= ceiling_ms
    # Uniform over the whole range (full jitter), not over its top half (equal jitter).
    assert abs(sum(delays) / len(delays) - ceiling_ms / 2) < ceiling_ms * 0.03


def test_a_unit_always_starts_at_the_same_server():
    assert first_servers("qrf-0a1b2c", URLS, 1) == first_servers("qrf-0a1b2c", list(URLS), 1)


def test_a_fleet_spreads_its_first_connections_over_the_servers():
    starts = [first_servers(f"qrf-{n:06x}", URLS, 1)[0] for n in range(0, 3000, 7)]
    for url in URLS:
        assert 0.25 < starts.count(url) / len(starts) < 0.42


@pytest.mark.parametrize("device_id", ["qrf-0a1b2c", "qrf-ffffff", "qrf-000001"])
def test_a_unit_moves_to_the_next_server_each_time_wrapping_around(device_id):
    tried = first_servers(device_id, URLS, 7)
    first = URLS.index(tried[0])
    assert tried == [URLS[(first + k) % 3] for k in range(7)]


def test_a_single_server_is_tried_again_and_again():
    assert first_servers("qrf-0a1b2c", URLS[:1], 3) == URLS[:1] * 3


def test_a_server_is_gone_once_silent_for_more_than_three_heartbeat_periods():
    assert not server_silent(30000, 0, 10000)
    assert server_silent(30001, 0, 10000)
    assert not server_silent(55000, 25000, 10000)


def test_the_same_decisions_on_micropython_across_the_tick_counters_wrap(unix_port):
    # ticks_ms() wraps on MicroPython (every 2**30 ms): the times below straddle the wrap.
    code = """
import random
from firmware.compat import ticks_add
from firmware.net.policy import backoff_ms, server_order, server_silent, start_index

for device_id in ("qrf-0a1b2c", "qrf-ffffff", "qrf-000000", "a"):
    print("start", device_id, start_index(device_id, 3), start_index(device_id, 7))
order = server_order("qrf-0a1b2c", ["a", "b", "c"])
print("order", " ".join(next(order) for _ in range(7)))
for attempt in range(7):
    ceiling = min(15000, 500 << attempt)
    delays = [backoff_ms(attempt) for _ in range(500)]
    print("backoff", attempt, max(delays) <= ceiling, max(delays) > ceiling * 9 // 10,
          min(delays) >= 0, min(delays) < ceiling // 10)
heard = ticks_add(0, -1500)
print("silent", server_silent(ticks_add(heard, 3000), heard, 1000),
      server_silent(ticks_add(heard, 3001), heard, 1000))
"""
    on_cpython, on_micropython = run_both(unix_port, code)
    assert on_micropython == on_cpython
    lines = on_cpython.splitlines()
    first = int(lines[0].split()[2])
    assert lines[4] == "order " + " ".join(("abc" * 3)[first : first + 7])
    assert lines[5:12] == [f"backoff {n} True True True True" for n in range(7)]
    assert lines[12:] == ["silent False True"]
