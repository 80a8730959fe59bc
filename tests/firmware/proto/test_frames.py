"""Frame pieces: headers, masking, close payloads and UTF-8 checks."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.proto import frames
from firmware.proto.errors import FrameError
from tests.firmware.both import run_both

# Edge cases of RFC 3629: overlong forms, surrogates, the top of Unicode, truncations.
TRICKY_UTF8 = [
    b"",
    b"plain",
    b"\xc2\x80",
    b"\xc1\xbf",
    b"\xe0\x9f\xbf",
    b"\xe0\xa0\x80",
    b"\xed\x9f\xbf",
    b"\xed\xa0\x80",
    b"\xee\x80\x80",
    b"\xf0\x8f\xbf\xbf",
    b"\xf0\x90\x80\x80",
    b"\xf4\x8f\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xe2\x82",
    b"\xe2\x82\xac",
    b"\xe2\x82\xac\x80",
    b"\x80",
    b"\xff",
    b"\xce\xbaa\xce",
]


@pytest.mark.parametrize(
    "length, header_hex",
    [
        (0, "8100"),
        (125, "817d"),
        (126, "817e007e"),
        (65535, "817effff"),
        (65536, "817f0000000000010000"),
    ],
)
def test_header_uses_the_shortest_length_encoding(length, header_hex):
    assert frames.header(frames.OP_TEXT, length).hex() == header_hex


def test_header_of_a_masked_non_final_frame():
    assert (
        frames.header(frames.OP_BINARY, 5, fin=False, mask_key=b"\x01\x02\x03\x04").hex()
        == "028501020304"
    )


def test_masking_matches_the_rfc_example():
    buf = bytearray(b"Hello")
    frames.apply_mask(buf, 0, 5, bytes.fromhex("37fa213d"))
    assert buf.hex() == "7f9f4d5158"


@given(data=st.binary(max_size=64), key=st.binary(min_size=4, max_size=4), start=st.integers(0, 5))
def test_masking_twice_restores_the_data_and_leaves_the_rest_alone(data, key, start):
    buf = bytearray(b"\xaa" * start + data + b"\x55")
    frames.apply_mask(buf, start, start + len(data), key)
    assert buf[start : start + len(data)] == bytes(b ^ key[i % 4] for i, b in enumerate(data))
    frames.apply_mask(buf, start, start + len(data), key)
    assert buf == b"\xaa" * start + data + b"\x55"


def test_close_payload_is_code_then_reason():
    assert frames.close_payload(1001, "bye") == b"\x03\xe9bye"
    assert frames.close_payload(frames.CLOSE_NO_STATUS) == b""
    assert frames.parse_close(b"\x03\xe9bye") == (1001, "bye")
    assert frames.parse_close(b"") == (1005, "")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535])
def test_close_codes_that_may_not_be_sent_are_protocol_errors(code):
    with pytest.raises(FrameError, match="may not be sent") as caught:
        frames.parse_close(code.to_bytes(2, "big"))
    assert caught.value.code == 1002


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1014, 3000, 4001, 4999]
)
def test_registered_and_application_close_codes_are_accepted(code):
    assert frames.parse_close(code.to_bytes(2, "big")) == (code, "")


def codec_accepts(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("data", TRICKY_UTF8)
def test_port_utf8_check_agrees_with_cpython_on_edge_cases(data):
    # frames._utf8_valid is what MicroPython relies on, its own decoder being lax.
    assert frames._utf8_valid(data) == codec_accepts(data)


@settings(max_examples=500)
@given(
    st.one_of(
        st.binary(max_size=16),
        st.text(max_size=8).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )
)
def test_port_utf8_check_agrees_with_cpython_on_random_bytes(data):
    assert frames._utf8_valid(data) == codec_accepts(data)


def test_utf8_checks_agree_on_micropython(unix_port):
    rng = random.Random(3629)
    corpus = TRICKY_UTF8 + [
        bytes(
            rng.choice((0x41, 0x80, 0xBF, 0xC2, 0xE0, 0xED, 0xF0, 0xF4, 0xF8))
            for _ in range(rng.randrange(1, 6))
        )
        for _ in range(400)
    ]
    code = f"""
from firmware.proto import frames
from firmware.proto.errors import FrameError
for data in {corpus!r}:
    try:
        frames.decode_utf8(data)
        print(1)
    except FrameError:
        print(0)
"""
    verdicts = unix_port(code).split()
    assert verdicts == ["1" if codec_accepts(d) else "0" for d in corpus]


def test_masking_is_the_same_with_the_ports_viper_loop(unix_port):
    code = """
from firmware.proto import frames
for start, end in ((0, 0), (0, 1), (1, 4), (3, 11), (2, 40), (0, 64)):
    buf = bytearray(range(64))
    frames.apply_mask(buf, start, end, b"\\x37\\xfa\\x21\\x3d")
    print(bytes(buf).hex())
"""
    on_cpython, on_micropython = run_both(unix_port, code)
    assert on_micropython == on_cpython
    assert len(set(on_cpython.split())) == 6
