"""App messages: what each side may send, and the errors malformed ones get."""

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qrcodegen import QrCode

from firmware.proto import messages
from firmware.proto.errors import MessageError
from tests.firmware.both import run_both


def test_show_qr_round_trips_with_defaults_filled_in():
    text = messages.encode("show_qr", id=7, payload="upi://pay?pa=shop@bank&am=10")
    assert text == '{"type":"show_qr","id":7,"payload":"upi://pay?pa=shop@bank&am=10"}'
    assert messages.from_server(text) == {
        "type": "show_qr",
        "id": 7,
        "payload": "upi://pay?pa=shop@bank&am=10",
        "caption": "",
        "ecc": "M",
    }


def test_ack_keeps_the_command_results_it_carries():
    text = messages.encode("ack", id=7, version=3, mask=5, sha256="ab" * 32)
    assert text == '{"type":"ack","id":7,"mask":5,"sha256":"' + "ab" * 32 + '","version":3}'
    assert messages.from_device(text)["version"] == 3


@pytest.mark.parametrize(
    "kind, fields",
    [
        (
            "hello",
            {
                "device_id": "qrf-a4cf12345678",
                "fw": "1.0.0",
                "proto": messages.PROTOCOL_VERSION,
                "nonce": "ab" * 16,
                "max_message": 1050,
                "reset": "watchdog",
                "update": {"version": "0.2.0", "state": "rolled_back", "reason": "crash loop"},
            },
        ),
        ("auth", {"mac": "0f" * 32}),
        (
            "heartbeat",
            {"uptime_s": 60, "free_heap": 81234, "rssi": -61, "fw": "1.0.0", "screen": "qr"},
        ),
        ("error", {"id": 9, "code": messages.RENDER_FAILED, "message": "panel did not answer"}),
    ],
)
def test_device_messages_round_trip(kind, fields):
    assert messages.from_device(messages.encode(kind, **fields)) == dict(fields, type=kind)


@pytest.mark.parametrize("update", ["trial", [1], 7])
def test_an_update_status_that_is_not_an_object_is_refused(update):
    hello = messages.encode(
        "hello", device_id="qrf-a4cf12345678", fw="1.0.0", proto=2, nonce="ab" * 16
    )
    text = hello[:-1] + ',"update":' + json.dumps(update) + "}"
    with pytest.raises(MessageError, match="hello field 'update' must be a JSON object"):
        messages.from_device(text)


@pytest.mark.parametrize(
    "kind, fields",
    [
        ("challenge", {"nonce": "00" * 16, "proof": "cd" * 32}),
        ("welcome", {"heartbeat_s": 10, "server_id": "host-a"}),
        ("heartbeat_ack", {}),
        ("show_result", {"id": 2, "result": "paid"}),
        ("clear", {"id": 3}),
        ("show_pairing", {"id": 4, "code": "K7Q2"}),
        ("info", {"id": 5}),
        ("reboot", {"id": 6}),
    ],
)
def test_server_messages_round_trip(kind, fields):
    assert messages.from_server(messages.encode(kind, **fields)) == dict(fields, type=kind)


def test_heartbeat_from_a_board_without_wifi_has_rssi_null():
    text = messages.encode("heartbeat", uptime_s=1, free_heap=2, fw="1", screen="idle")
    assert messages.from_device(text)["rssi"] is None


@pytest.mark.parametrize(
    "text, code, command_id, message",
    [
        ("{not json", messages.BAD_MESSAGE, None, "message is not JSON"),
        ("[1, 2]", messages.BAD_MESSAGE, None, 'must be a JSON object with a "type"'),
        ('{"id": 4}', messages.BAD_MESSAGE, 4, 'needs a "type" string, got None'),
        (
            '{"type": "selfdestruct", "id": 4}',
            messages.UNKNOWN_COMMAND,
            4,
            "unknown message type 'selfdestruct'",
        ),
        ('{"type": "show_qr", "id": 4}', messages.BAD_MESSAGE, 4, "show_qr needs field 'payload'"),
        (
            '{"type": "show_qr", "payload": "x"}',
            messages.BAD_MESSAGE,
            None,
            "show_qr needs field 'id'",
        ),
        (
            '{"type": "show_qr", "id": 4, "payload": 5}',
            messages.BAD_MESSAGE,
            4,
            "'payload' must be a string",
        ),
        (
            '{"type": "show_qr", "id": 4, "payload": "x", "ecc": "Z"}',
            messages.BAD_MESSAGE,
            4,
            "one of L, M, Q, H",
        ),
        (
            '{"type": "show_result", "id": 4, "result": "refunded"}',
            messages.BAD_MESSAGE,
            4,
            "paid, cancelled, expired",
        ),
        ('{"type": "clear", "id": true}', messages.BAD_MESSAGE, None, "'id' must be an integer"),
        (
            '{"type": "clear", "id": -1}',
            messages.BAD_MESSAGE,
            None,
            "'id' must be an integer from 1",
        ),
        ('{"type": "hello", "id": 4}', messages.UNKNOWN_COMMAND, 4, "unknown message type 'hello'"),
    ],
)
def test_malformed_server_message_gets_an_error_code_and_a_reason(text, code, command_id, message):
    with pytest.raises(MessageError, match=message.replace("(", r"\(")) as caught:
        messages.from_server(text)
    assert (caught.value.code, caught.value.id) == (code, command_id)


def test_error_reply_to_a_malformed_command_carries_its_id():
    try:
        messages.from_server('{"type": "show_qr", "id": 12, "payload": ""}')
    except MessageError as exc:
        reply = messages.encode("error", id=exc.id, code=exc.code, message=str(exc))
    assert json.loads(reply) == {
        "type": "error",
        "id": 12,
        "code": "bad_message",
        "message": "show_qr field 'payload' must be a string of 1 to 4096 characters, got ''",
    }


def test_auth_with_a_short_mac_is_refused():
    with pytest.raises(MessageError, match="'mac' must be 64 lower-case hex digits"):
        messages.from_device('{"type": "auth", "mac": "abc"}')


def test_encoding_a_message_with_a_wrong_field_is_refused():
    with pytest.raises(
        MessageError, match="welcome field 'heartbeat_s' must be an integer from 1 to 3600"
    ):
        messages.encode("welcome", heartbeat_s=0, server_id="a")


def test_encoding_an_unknown_type_is_refused():
    with pytest.raises(MessageError, match="unknown message type 'hi'"):
        messages.encode("hi")


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["type", "id", "payload", "ecc", "mac", "x"]), inner, max_size=4
                )
            ),
            max_leaves=8,
        ).map(json.dumps),
        st.builds(
            lambda kind, extra: json.dumps(dict(extra, type=kind)),
            st.sampled_from(sorted(messages.SERVER_MESSAGES) + sorted(messages.DEVICE_MESSAGES)),
            st.dictionaries(
                st.sampled_from(["id", "payload", "ecc", "result", "code", "mac", "rssi"]),
                st.none() | st.integers() | st.text(max_size=5),
                max_size=4,
            ),
        ),
    )
)
def test_random_messages_raise_nothing_but_message_errors(text):
    for decode in (messages.from_server, messages.from_device):
        try:
            decode(text)
        except MessageError as exc:
            assert exc.code in (messages.BAD_MESSAGE, messages.UNKNOWN_COMMAND)


def test_deeply_nested_json_is_a_bad_message():
    with pytest.raises(MessageError, match="nested too deeply"):
        messages.from_server("[" * 4000)


def test_deeply_nested_json_leaves_a_unit_on_a_160k_heap_decoding_the_next(unix_port):
    """MicroPython runs out of heap building the lists, where CPython hits its recursion limit:
    the unit answers busy, and the next message decodes."""
    code = """
import gc
from firmware.proto import messages
from firmware.proto.errors import MessageError
try:
    messages.from_server("[" * 4000)
except MessageError as exc:
    print(exc.code, exc)
gc.collect()
print(messages.from_server('{"type": "clear", "id": 1}')["type"])
"""
    assert unix_port(code).splitlines() == [
        "busy unit is out of memory for a message of 4000 bytes",
        "clear",
    ]


def reference_digest(qr):
    rows = b""
    for y in range(qr.get_size()):
        bits = "".join("1" if qr.get_module(x, y) else "0" for x in range(qr.get_size()))
        bits += "0" * (-len(bits) % 8)
        rows += int(bits, 2).to_bytes(len(bits) // 8, "big")
    return hashlib.sha256(rows).hexdigest()


class Symbol:
    """qrcodegen's QrCode seen through the firmware encoder's interface (size, module)."""

    def __init__(self, qr):
        self.size = qr.get_size()
        self.module = qr.get_module


@pytest.mark.parametrize("text", ["A", "upi://pay?pa=shop@bank&am=10", "x" * 300])
def test_matrix_digest_packs_rows_msb_first(text):
    qr = QrCode.encode_text(text, QrCode.Ecc.MEDIUM)
    assert messages.matrix_digest(Symbol(qr)) == reference_digest(qr)


def test_messages_are_the_same_on_micropython(unix_port):
    code = """
from firmware.proto import messages
from firmware.proto.errors import MessageError

class Checker:
    size = 25
    def module(self, x, y):
        return (x * 7 + y * 3) % 5 < 2

print(messages.matrix_digest(Checker()))
print(messages.encode("show_qr", id=7, payload="upi://pay?am=10", caption="Table 4", ecc="Q"))
print(messages.encode("ack", id=7, version=2, mask=3, sha256="00" * 32))
print(messages.encode("heartbeat", uptime_s=5, free_heap=90000, rssi=None, fw="1.0", screen="idle"))
msg = messages.from_server('{"type": "show_qr", "id": 3, "payload": "p"}')
print(sorted(msg.items()))
for text in ('{"type": "show_qr", "id": 3}', '{"type": "zap", "id": 3}', '{"type": "clear", "id": 1.5}', '{', '"x"',
             '{"type": "show_result", "id": 9, "result": "paid", "extra": [1]}'):
    try:
        print(sorted(messages.from_server(text).items()))
    except MessageError as exc:
        print(exc.code, exc.id, exc)
"""
    on_cpython, on_micropython = run_both(unix_port, code)
    assert on_micropython == on_cpython
    assert (
        '{"type":"show_qr","id":7,"payload":"upi://pay?am=10","caption":"Table 4","ecc":"Q"}'
        in on_cpython
    )


def test_a_message_the_unit_has_no_heap_for_is_answered_busy_with_its_id(monkeypatch):
    """A fragmented heap can refuse the payload's copy: the unit answers at once, with the
    command's id read from the text's head, instead of leaving the server to time out."""
    text = messages.encode("show_qr", id=4711, payload="pix" * 300)

    def out_of_memory(text):
        raise MemoryError

    monkeypatch.setattr(messages.json, "loads", out_of_memory)
    with pytest.raises(MessageError) as refused:
        messages.from_server(text)

    assert (refused.value.code, refused.value.id) == (messages.BUSY, 4711)
    assert "out of memory" in str(refused.value)
    with pytest.raises(MessageError) as refused:
        messages.from_server(memoryview(b'{"type":"show_qr","payload":"x"}'))
    assert refused.value.id is None
