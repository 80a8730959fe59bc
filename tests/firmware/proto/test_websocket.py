"""RFC 6455 framing, byte for byte, on CPython and on the MicroPython Unix port.

Each vector feeds bytes to an open connection (tests/firmware/proto/driver.py) and
lists what must come out: events, errors, frames sent back, final state. Frames
written as literal hex come from RFC 6455 §5.7.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.proto import errors, server, websocket
from tests.firmware.proto import driver

HELLO = "48656c6c6f"
MASKED_HELLO = "37fa213d7f9f4d5158"  # RFC 6455 §5.7: key 37fa213d, "Hello" masked
KEY = bytes.fromhex("01020304")


def frame(first, payload=b"", masked=False, length=None):
    """Hex of a frame; `first` is byte 0 (FIN, RSV, opcode); `length` overrides the header's."""
    n = len(payload) if length is None else length
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([first, mask_bit | n])
    elif n < 0x10000:
        head = bytes([first, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, mask_bit | 127]) + n.to_bytes(8, "big")
    if masked:
        payload = bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))
        head += KEY
    return (head + payload).hex()


def close_frame(code, reason=b"", masked=False):
    return frame(0x88, code.to_bytes(2, "big") + reason, masked)


# name: (role, max_size, items, expected lines)
VECTORS = {
    "unmasked_text_from_server": ("client", 4096, ["810548656c6c6f"], ["text " + HELLO, "state 1"]),
    "masked_text_from_client": (
        "server",
        4096,
        ["8185" + MASKED_HELLO],
        ["text " + HELLO, "state 1"],
    ),
    "fragmented_text_is_reassembled": (
        "client",
        4096,
        ["010348656c", "80026c6f"],
        ["text " + HELLO, "state 1"],
    ),
    "ping_between_fragments_is_answered_at_once": (
        "client",
        4096,
        ["010348656c", "8905" + HELLO, "80026c6f"],
        ["ping " + HELLO, "sent pong masked " + HELLO, "text " + HELLO, "state 1"],
    ),
    "pong_from_client_is_reported": (
        "server",
        4096,
        ["8a85" + MASKED_HELLO],
        ["pong " + HELLO, "state 1"],
    ),
    "server_answers_ping_unmasked": (
        "server",
        4096,
        [frame(0x89, b"hb", masked=True)],
        ["ping 6862", "sent pong plain 6862", "state 1"],
    ),
    "binary_256_bytes_uses_16_bit_length": (
        "client",
        4096,
        ["827e0100" + bytes(range(256)).hex()],
        ["binary " + bytes(range(256)).hex(), "state 1"],
    ),
    "binary_fragments_with_ping_and_pong_between": (
        "server",
        4096,
        [
            frame(0x02, b"\x00\x01", masked=True),
            frame(0x8A, b"", masked=True),
            frame(0x00, b"\x02", masked=True),
            frame(0x89, b"p", masked=True),
            frame(0x80, b"\x03", masked=True),
        ],
        ["pong ", "ping 70", "sent pong plain 70", "binary 00010203", "state 1"],
    ),
    "empty_text_message": ("client", 4096, ["8100"], ["text ", "state 1"]),
    "utf8_split_across_fragments_is_valid": (
        "client",
        4096,
        [frame(0x01, b"\xce"), frame(0x80, b"\xba")],
        ["text ceba", "state 1"],
    ),
    "message_of_exactly_max_size_is_accepted": (
        "client",
        5,
        ["810548656c6c6f"],
        ["text " + HELLO, "state 1"],
    ),
    "oversized_frame_is_rejected_with_1009": (
        "client",
        4096,
        ["827f0000000000010000"],
        [
            "error FrameError 1009",
            "sent close masked 1009 message of 65536 bytes or more; the limit is 4096",
            "state 3",
        ],
    ),
    "oversized_message_across_fragments_is_rejected_with_1009": (
        "client",
        8,
        [frame(0x01, b"hello"), frame(0x80, b"world")],
        [
            "error FrameError 1009",
            "sent close masked 1009 message of 10 bytes or more; the limit is 8",
            "state 3",
        ],
    ),
    "header_claiming_2_to_the_62_bytes_is_rejected_with_1009": (
        "server",
        4096,
        ["82ff4000000000000000" + KEY.hex()],
        [
            "error FrameError 1009",
            "sent close plain 1009 message of 4611686018427387904 bytes or more; the limit is 4096",
            "state 3",
        ],
    ),
    "64_bit_length_with_top_bit_set_is_a_protocol_error": (
        "client",
        4096,
        ["827f8000000000000000"],
        [
            "error FrameError 1002",
            "sent close masked 1002 64-bit frame length has its top bit set",
            "state 3",
        ],
    ),
    "unmasked_frame_from_client_is_rejected_with_1002": (
        "server",
        4096,
        ["810548656c6c6f"],
        ["error FrameError 1002", "sent close plain 1002 a client must mask its frames", "state 3"],
    ),
    "masked_frame_from_server_is_rejected_with_1002": (
        "client",
        4096,
        ["8185" + MASKED_HELLO],
        [
            "error FrameError 1002",
            "sent close masked 1002 a server must not mask its frames",
            "state 3",
        ],
    ),
    "reserved_bits_are_rejected_with_1002": (
        "client",
        4096,
        ["c10548656c6c6f"],
        [
            "error FrameError 1002",
            "sent close masked 1002 reserved bits set, but no extension was negotiated",
            "state 3",
        ],
    ),
    "reserved_data_opcode_is_rejected_with_1002": (
        "client",
        4096,
        ["8300"],
        ["error FrameError 1002", "sent close masked 1002 opcode 0x3 is reserved", "state 3"],
    ),
    "reserved_control_opcode_is_rejected_with_1002": (
        "client",
        4096,
        ["8b00"],
        ["error FrameError 1002", "sent close masked 1002 opcode 0xb is reserved", "state 3"],
    ),
    "fragmented_ping_is_rejected_with_1002": (
        "client",
        4096,
        ["0900"],
        [
            "error FrameError 1002",
            "sent close masked 1002 control frames must not be fragmented",
            "state 3",
        ],
    ),
    "ping_over_125_bytes_is_rejected_with_1002": (
        "client",
        4096,
        [frame(0x89, bytes(126))],
        [
            "error FrameError 1002",
            "sent close masked 1002 control frame of 126 bytes; the limit is 125",
            "state 3",
        ],
    ),
    "continuation_without_a_message_is_rejected_with_1002": (
        "client",
        4096,
        ["8000"],
        [
            "error FrameError 1002",
            "sent close masked 1002 continuation frame without a message to continue",
            "state 3",
        ],
    ),
    "new_message_inside_a_fragmented_one_is_rejected_with_1002": (
        "client",
        4096,
        ["010348656c", "8100"],
        [
            "error FrameError 1002",
            "sent close masked 1002 new message began before the previous one finished",
            "state 3",
        ],
    ),
    "surrogate_in_text_is_rejected_with_1007": (
        "client",
        4096,
        [frame(0x81, b"ok\xed\xa0\x80")],
        ["error FrameError 1007", "sent close masked 1007 text is not valid UTF-8", "state 3"],
    ),
    "overlong_utf8_is_rejected_with_1007": (
        "server",
        4096,
        [frame(0x81, b"\xc0\x80", masked=True)],
        ["error FrameError 1007", "sent close plain 1007 text is not valid UTF-8", "state 3"],
    ),
    "close_from_server_is_echoed_and_ends_the_connection": (
        "client",
        4096,
        [close_frame(1001, b"restarting")],
        ["close 1001 restarting", "sent close masked 1001 ", "state 3"],
    ),
    "empty_close_is_answered_with_an_empty_close": (
        "server",
        4096,
        [frame(0x88, b"", masked=True)],
        ["close 1005 ", "sent close plain", "state 3"],
    ),
    "application_close_code_4001_is_accepted": (
        "client",
        4096,
        [close_frame(4001, b"replaced")],
        ["close 4001 replaced", "sent close masked 4001 ", "state 3"],
    ),
    "close_with_1_byte_payload_is_rejected_with_1002": (
        "client",
        4096,
        ["880103"],
        [
            "error FrameError 1002",
            "sent close masked 1002 close frame payload of 1 byte; a code takes 2",
            "state 3",
        ],
    ),
    "close_code_1005_on_the_wire_is_rejected_with_1002": (
        "client",
        4096,
        [close_frame(1005)],
        [
            "error FrameError 1002",
            "sent close masked 1002 close code 1005 may not be sent on the wire",
            "state 3",
        ],
    ),
    "close_code_999_is_rejected_with_1002": (
        "client",
        4096,
        [close_frame(999)],
        [
            "error FrameError 1002",
            "sent close masked 1002 close code 999 may not be sent on the wire",
            "state 3",
        ],
    ),
    "close_code_5000_is_rejected_with_1002": (
        "client",
        4096,
        [close_frame(5000)],
        [
            "error FrameError 1002",
            "sent close masked 1002 close code 5000 may not be sent on the wire",
            "state 3",
        ],
    ),
    "close_reason_in_invalid_utf8_is_rejected_with_1007": (
        "client",
        4096,
        [close_frame(1000, b"\xff")],
        ["error FrameError 1007", "sent close masked 1007 text is not valid UTF-8", "state 3"],
    ),
    "bytes_after_a_close_frame_are_ignored": (
        "client",
        4096,
        [close_frame(1000) + "810548656c6c6f", "810548656c6c6f"],
        ["close 1000 ", "sent close masked 1000 ", "state 3"],
    ),
    "close_we_started_completes_when_the_peer_answers": (
        "client",
        4096,
        ["send_close", "8905" + HELLO, "810548656c6c6f", close_frame(1000)],
        ["sent close masked 1000 bye", "ping " + HELLO, "text " + HELLO, "close 1000 ", "state 3"],
    ),
    "eof_without_close_frame_is_reported_as_1006": (
        "client",
        4096,
        ["810548", "eof"],
        ["close 1006 connection closed without a close frame", "state 3"],
    ),
}

# The same bytes one at a time must give the same result.
VECTORS["byte_at_a_time_fragments_with_ping"] = (
    "server",
    4096,
    [
        part[i : i + 2]
        for part in (
            frame(0x01, b"He", masked=True),
            frame(0x89, b"!", masked=True),
            frame(0x80, b"llo", masked=True),
        )
        for i in range(0, len(part), 2)
    ],
    ["ping 21", "sent pong plain 21", "text " + HELLO, "state 1"],
)


def driver_input(vectors):
    lines = []
    for name, (role, max_size, items, _) in vectors.items():
        lines.append(f"case {name} {role} {max_size}")
        lines.extend(items)
        lines.append("end")
    return "\n".join(lines) + "\n"


def split_cases(output):
    cases = {}
    for line in output.splitlines():
        if line.startswith("case "):
            lines = cases[line[5:]] = []
        else:
            lines.append(line)
    return cases


@pytest.fixture(scope="module")
def unix_port_results(unix_port):
    """Every vector run once on the Unix port (one process for all of them)."""
    out = unix_port(
        "import sys\nfrom tests.firmware.proto import driver\ndriver.main(sys.stdin.read())\n",
        stdin=driver_input(VECTORS).encode(),
    )
    return split_cases(out)


@pytest.mark.parametrize("name", VECTORS)
def test_vector_on_cpython(name):
    role, max_size, items, expected = VECTORS[name]
    assert driver.run(role, max_size, items) == expected


@pytest.mark.parametrize("name", VECTORS)
def test_vector_on_micropython(name, unix_port_results):
    assert unix_port_results[name] == VECTORS[name][3]


def test_claimed_2_to_the_62_bytes_allocates_almost_nothing_on_a_64k_heap(unix_port, tmp_path):
    # As on a board: compiled modules, a 64K heap, and a header claiming 2**62 bytes.
    from tools.firmware_check import compile_to
    from tools.micropython import REPO_ROOT

    for source in [REPO_ROOT / "firmware/__init__.py", REPO_ROOT / "firmware/compat.py"] + sorted(
        (REPO_ROOT / "firmware/proto").glob("*.py")
    ):
        out = tmp_path / source.relative_to(REPO_ROOT).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        compile_to(source, out, arch="x64")  # the Unix port's, for the viper mask loop
    code = f"""
import sys, gc, micropython
sys.path.insert(0, {str(tmp_path)!r})
from firmware.proto import errors
from tests.firmware.proto import driver
proto = driver.open_connection("server", 4096)
gc.collect()
before = micropython.mem_total()
try:
    proto.receive_data(b"\\x82\\xff\\x40\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01\\x02\\x03\\x04")
except errors.FrameError as exc:
    print("code", exc.code)
print("allocated", micropython.mem_total() - before)
"""
    out = unix_port(code, heap="64K").split()
    assert out[:2] == ["code", "1009"]
    allocated = int(out[3])
    print(f"bytes allocated while refusing a 2**62-byte frame on a 64K heap: {allocated}")
    assert allocated < 4096


@settings(max_examples=300, deadline=None)
@given(
    role=st.sampled_from(["client", "server"]), chunks=st.lists(st.binary(max_size=40), max_size=8)
)
def test_random_bytes_raise_nothing_but_protocol_errors(role, chunks):
    proto = driver.open_connection(role, 64)
    for chunk in chunks:
        try:
            proto.receive_data(chunk)
        except errors.ProtocolError:
            assert proto.state == websocket.CLOSED
        proto.events_received()
        proto.data_to_send()


@settings(max_examples=200, deadline=None)
@given(role=st.sampled_from(["client", "server"]), data=st.binary(max_size=300))
def test_random_bytes_before_the_handshake_raise_nothing_but_protocol_errors(role, data):
    proto = websocket.ClientProtocol("h", "/") if role == "client" else server.ServerProtocol()
    try:
        proto.receive_data(data)
        proto.receive_eof()
    except errors.ProtocolError:
        assert proto.state == websocket.CLOSED


def test_random_bytes_on_micropython_raise_nothing_but_protocol_errors(unix_port):
    # Same fuzzing on the port: a seeded generator there, thousands of inputs in one run.
    code = """
import random
from firmware.proto import errors
from tests.firmware.proto import driver
random.seed(6455)
others = 0
# Frames that parse far enough to matter: valid-looking first bytes, random rest.
starts = (0x81, 0x01, 0x80, 0x82, 0x88, 0x89, 0x8a, 0x00)
for case in range(3000):
    server = case & 1
    proto = driver.open_connection(("client", "server")[server], 64)
    for _ in range(6):
        n = random.getrandbits(5)
        chunk = bytearray(random.getrandbits(8) for _ in range(n))
        if n > 1 and random.getrandbits(1):
            chunk[0] = starts[random.getrandbits(3)]
            chunk[1] = (chunk[1] & 0x7F) | (0x80 if server else 0)
        try:
            proto.receive_data(chunk)
        except errors.ProtocolError:
            pass
        except Exception as exc:
            others += 1
            print("unexpected", type(exc).__name__, exc, bytes(chunk))
print("others", others)
"""
    out = unix_port(code, timeout=300)
    assert out.strip().endswith("others 0"), out


def test_sending_a_fragmented_message_with_a_ping_between():
    client = driver.open_connection("client", 4096)
    server = driver.open_connection("server", 4096)
    client.send_text("He", fin=False)
    client.send_ping(b"?")
    client.send_continuation(b"llo", fin=True)
    for data in client.data_to_send():
        server.receive_data(data)
    events = server.events_received()
    assert [driver.describe_event(e) for e in events] == ["ping 3f", "text " + HELLO]


def test_client_frames_are_masked_with_a_fresh_key_each():
    client = driver.open_connection("client", 4096)
    for _ in range(4):
        client.send_text("same text")
    frames = client.data_to_send()
    assert all(f[1] & 0x80 for f in frames)
    assert len({bytes(f[2:6]) for f in frames}) == 4
    assert driver.describe_sent(b"".join(frames)) == ["sent text masked " + b"same text".hex()] * 4


def test_server_frames_are_sent_unmasked_byte_for_byte():
    server = driver.open_connection("server", 4096)
    server.send_text("Hello")
    server.send_binary(bytes(256))
    server.send_binary(bytes(65536))
    sent = server.data_to_send()
    assert bytes(sent[0]) == bytes.fromhex("810548656c6c6f")
    assert bytes(sent[1][:4]) == bytes.fromhex("827e0100")
    assert bytes(sent[2][:10]) == bytes.fromhex("827f0000000000010000")


def test_continuing_without_a_fragmented_message_is_refused():
    client = driver.open_connection("client", 4096)
    with pytest.raises(errors.ProtocolError, match="no fragmented message to continue"):
        client.send_continuation(b"x", fin=True)


def test_new_message_while_one_is_being_sent_in_fragments_is_refused():
    client = driver.open_connection("client", 4096)
    client.send_text("a", fin=False)
    with pytest.raises(errors.ProtocolError, match="finish the fragmented message"):
        client.send_binary(b"b")


def test_sending_after_close_is_refused_with_the_state():
    server = driver.open_connection("server", 4096)
    server.send_close()
    with pytest.raises(errors.ProtocolError, match="the connection is CLOSING"):
        server.send_text("late")


def test_close_reason_longer_than_123_bytes_is_refused():
    server = driver.open_connection("server", 4096)
    with pytest.raises(ValueError, match="the limit is 123"):
        server.send_close(1000, "x" * 124)
