"""The UART link between a tethered unit and its bridge (firmware.proto.link): what arrives is
what was sent, in order, through line noise, boot chatter and restarts; a terminal sees no
frames; a Ctrl-C byte is never part of one."""

from firmware.proto import link
from firmware.proto.link import CLOSE, DATA, OPEN, Link
from tests.firmware.both import run_both

# Both ends in one process, the bytes between them damaged at a rate: every frame either
# arrives whole or is sent again. Prints what each end received and the number of passes.
NOISY_LINE = """
import random
from firmware.proto import link
random.seed(7)

def ends():
    bridge = link.Link(
        "till-pc", True, link.BRIDGE_WINDOW, link.BRIDGE_PAYLOAD, console=True,
        inbox=bytearray(8192)
    )
    unit = link.Link(
        "qrf-0a0b0c0d0e0f", False, link.UNIT_WINDOW, link.UNIT_PAYLOAD, inbox=bytearray(4096)
    )
    return bridge, unit

def damage(data, every):
    out = bytearray(data)
    for i in range(len(out)):
        if random.getrandbits(16) % every == 0:
            out[i] = random.getrandbits(8)
    return out

def exchange(bridge, unit, to_unit, to_bridge, every):
    now = 0
    bridge.send(link.DATA, link.stream_payload(1, to_unit))
    unit.send(link.DATA, link.stream_payload(1, to_bridge))
    got_unit, got_bridge = bytearray(), bytearray()
    passes = 0
    while (len(got_unit) < len(to_unit) or len(got_bridge) < len(to_bridge)) and passes < 50000:
        unit.receive(damage(bridge.data_to_send(now), every), now)
        bridge.receive(damage(unit.data_to_send(now), every), now)
        for end, got in ((unit, got_unit), (bridge, got_bridge)):
            for kind, payload in end.events:
                got.extend(payload[1:])  # one DATA: the whole message, put together
            end.events.clear()
        now += 5
        passes += 1
    return got_unit, got_bridge, passes

bridge, unit = ends()
for now in (0, 1000):
    unit.receive(bridge.data_to_send(now), now)
    bridge.receive(unit.data_to_send(now), now)
print("attached", bridge.attached(1000), unit.attached(1000), bridge.peer_name, unit.peer_name)
to_unit = bytes(random.getrandbits(8) for _ in range(3000))
to_bridge = bytes(random.getrandbits(8) for _ in range(6000))
got_unit, got_bridge, passes = exchange(bridge, unit, to_unit, to_bridge, 700)
print("intact", got_unit == to_unit, got_bridge == to_bridge, passes < 50000, bridge.damaged > 0)
print("events", len(unit.events), len(bridge.events))
"""


def test_every_byte_arrives_in_order_through_line_noise_on_cpython_and_the_unix_port(unix_port):
    on_cpython, on_unit = run_both(unix_port, NOISY_LINE)
    assert on_cpython == on_unit
    assert on_unit.splitlines() == [
        "attached True True qrf-0a0b0c0d0e0f till-pc",
        "intact True True True True",
        "events 0 0",
    ]


def attached_pair(now=0):
    bridge = Link("till-pc", True, link.BRIDGE_WINDOW, link.BRIDGE_PAYLOAD, console=True)
    unit = Link("qrf-01", False, link.UNIT_WINDOW, link.UNIT_PAYLOAD, inbox=bytearray(1024))
    unit.receive(bridge.data_to_send(now), now)
    bridge.receive(unit.data_to_send(now), now)
    return bridge, unit


def pump(bridge, unit, now, rounds=20):
    for _ in range(rounds):
        unit.receive(bridge.data_to_send(now), now)
        bridge.receive(unit.data_to_send(now), now)


def test_a_unit_that_heard_no_bridge_writes_nothing_a_terminal_would_see():
    unit = Link("qrf-01", False, link.UNIT_WINDOW, link.UNIT_PAYLOAD)
    unit.receive(b"print('hello')\r\n\x1b[A garbage ~bm90IGEgZnJhbWU=\n", 0)
    unit.send(OPEN, link.stream_payload(1, "ws://10.0.0.2:8000/ws/device"))
    assert unit.data_to_send(0) == b""
    assert not unit.attached(0) and unit.events == []


def test_the_unit_stops_writing_frames_once_its_bridge_is_silent():
    bridge, unit = attached_pair()
    unit.send(DATA, link.stream_payload(1, b"x"))
    assert unit.data_to_send(10)
    unit.send(DATA, link.stream_payload(1, b"y"))
    assert unit.data_to_send(link.PEER_TIMEOUT_MS + 10) == b""


def test_frames_are_printable_lines_without_a_ctrl_c_whatever_they_carry():
    bridge, unit = attached_pair()
    bridge.send(DATA, link.stream_payload(1, bytes(range(256)) * 3))
    out = b""
    for now in range(1, 20):
        sent = bridge.data_to_send(now)
        out += sent
        unit.receive(sent, now)
        bridge.receive(unit.data_to_send(now), now)
    assert unit.events == [(DATA, link.stream_payload(1, bytes(range(256)) * 3))]
    assert all(32 <= b < 127 or b in b"\r\n" for b in out)
    ack_line = len(unit._line_of(link.ACK, 0, b""))
    for line in out.split(b"\r\n")[:-1]:
        assert line.startswith(b"~")
        assert len(line) + 2 + 2 * ack_line <= 260  # the ESP32's UART input, two ACKs beside


def test_the_bridge_keeps_one_frame_in_flight_and_sends_it_again_until_acknowledged():
    bridge, unit = attached_pair()
    bridge.send(DATA, link.stream_payload(3, b"a" * 400))  # two PARTs and a DATA
    first = bridge.data_to_send(1)
    assert first.count(b"\n") == 1
    assert bridge.data_to_send(2) == b""  # the window is full
    again = bridge.data_to_send(2 + link.RETRY_MS)
    assert again == first  # nothing acknowledged: the same frame again
    unit.receive(again, 600)
    bridge.receive(unit.data_to_send(600), 600)
    assert unit.events == []  # a part: the message is not whole yet
    assert bridge.data_to_send(601).count(b"\n") == 1  # the next one, lost on the way
    pump(bridge, unit, 601 + link.RETRY_MS)
    assert unit.events == [(DATA, link.stream_payload(3, b"a" * 400))]


def test_a_message_larger_than_the_inbox_ends_its_stream_instead_of_arriving_cut():
    bridge, unit = attached_pair()
    bridge.send(DATA, link.stream_payload(2, b"b" * 1500))  # the unit's inbox takes 1024
    bridge.send(DATA, link.stream_payload(2, b"next"))
    pump(bridge, unit, 1, rounds=40)
    assert unit.events == [
        (CLOSE, link.stream_payload(2, "message too large")),
        (DATA, link.stream_payload(2, b"next")),
    ]


def test_console_lines_are_kept_for_the_bridge_and_damaged_frames_are_not_among_them():
    bridge, unit = attached_pair()
    unit.send(CLOSE, link.stream_payload(1, "bye"))
    frame = unit.data_to_send(0)
    damaged = frame[:5] + (b"A" if frame[5:6] != b"A" else b"B") + frame[6:]
    bridge.receive(b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET)\r\n" + damaged, 0)
    bridge.receive(b"qrfleet: online at ws://10.0.0.2:8000/ws/device\r\n", 0)
    assert bridge.console == [
        "ets Jun  8 2016 00:22:57",
        "rst:0x1 (POWERON_RESET)",
        "qrfleet: online at ws://10.0.0.2:8000/ws/device",
    ]
    assert bridge.damaged == 1 and bridge.events == []
    bridge.receive(frame, 1)
    assert bridge.events == [(CLOSE, link.stream_payload(1, "bye"))]


def test_a_unit_that_restarted_is_numbered_afresh_and_the_bridge_counts_the_reset():
    bridge, unit = attached_pair()
    for n in range(5):
        unit.send(DATA, link.stream_payload(1, b"%d" % n))
    pump(bridge, unit, 10)
    assert len(bridge.events) == 5
    bridge.events.clear()
    restarted = Link("qrf-01", False, link.UNIT_WINDOW, link.UNIT_PAYLOAD)
    restarted.receive(bridge.data_to_send(2000), 2000)
    bridge.receive(restarted.data_to_send(2000), 2000)
    assert bridge.resets == 1
    restarted.send(OPEN, link.stream_payload(2, "wss://10.0.0.2/ws/device"))
    pump(bridge, restarted, 2001)
    assert bridge.events == [(OPEN, link.stream_payload(2, "wss://10.0.0.2/ws/device"))]


def test_an_overlong_line_of_noise_is_dropped_whole():
    bridge, unit = attached_pair()
    unit.send(DATA, link.stream_payload(1, b"kept"))
    frame = unit.data_to_send(0)
    bridge.receive(b"~" + b"A" * 5000 + frame, 0)  # no newline before the frame's own
    assert bridge.events == [] and bridge.console == []
    bridge.receive(unit.data_to_send(link.RETRY_MS), link.RETRY_MS)
    assert bridge.events == [(DATA, link.stream_payload(1, b"kept"))]


def test_a_retransmission_crossing_a_unit_restart_is_not_taken_for_the_new_numbering():
    bridge, unit = attached_pair()
    bridge.send(DATA, link.stream_payload(1, b"old stream"))
    stale = bridge.data_to_send(10)  # the unit restarts before it arrives
    restarted = Link("qrf-01", False, link.UNIT_WINDOW, link.UNIT_PAYLOAD)
    restarted.receive(bridge.data_to_send(10 + link.HELLO_MS), 10 + link.HELLO_MS)
    restarted.receive(stale, 1100)
    assert restarted.events == []
    bridge.receive(restarted.data_to_send(1100), 1100)  # its HELLO: the bridge starts afresh
    bridge.send(link.OPENED, link.stream_payload(1))
    pump(bridge, restarted, 1200)
    assert restarted.events == [(link.OPENED, link.stream_payload(1))]


def test_the_bridge_ignores_its_own_hello_echoed_by_the_port():
    bridge = Link("till-pc", True, link.BRIDGE_WINDOW, link.BRIDGE_PAYLOAD, console=True)
    bridge.receive(bridge.data_to_send(0), 0)
    assert bridge.peer is None and not bridge.attached(0)


def test_hello_goes_each_second_to_a_unit_and_each_fifth_to_nobody():
    bridge = Link("till-pc", True, link.BRIDGE_WINDOW, link.BRIDGE_PAYLOAD)
    sent = [t for t in range(0, 30000, 100) if bridge.data_to_send(t)]
    assert sent[:4] == [0, 1000, 2000, 3000]  # a unit may be booting
    assert all(b - a == 5000 for a, b in zip(sent[4:], sent[5:], strict=False))  # nobody answers
    bridge, unit = attached_pair(30000)
    sent = []
    for t in range(30000, 33000, 100):
        out = bridge.data_to_send(t)
        unit.receive(out, t)
        bridge.receive(unit.data_to_send(t), t)
        sent += [t] if out else []
    assert sent == [31000, 32000]  # attached_pair sent the one at 30000


def test_a_reason_longer_than_a_frame_is_cut_not_sent_oversized():
    bridge, unit = attached_pair()
    bridge.send(link.REFUSED, link.stream_payload(1, "x" * 400))
    line = bridge.data_to_send(1)
    unit.receive(line, 1)
    assert unit.events == [(link.REFUSED, link.stream_payload(1, "x" * (link.BRIDGE_PAYLOAD - 1)))]
