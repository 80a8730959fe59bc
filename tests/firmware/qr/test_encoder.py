"""encode(): what a caller sees — the symbol object, the smallest version, what decoders read
back, capacities, and the errors for bad input."""

from hashlib import sha256

import pytest
import segno
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qrcodegen import QrCode, QrSegment

from firmware.qr import QRCode, QRError, capacity, encode, fit
from tools.bench.qr_bench import payloads

from .conftest import REFERENCE_ECC, decode, source_of
from .strategies import KINDS, generators, make_payload


class TestSymbol:
    def test_has_version_size_ecc_and_mask(self):
        q = encode("HELLO WORLD", "Q", version=3, mask=5)
        assert isinstance(q, QRCode)
        assert (q.version, q.size, q.ecc, q.mask) == (3, 29, "Q", 5)

    def test_matrix_is_packed_msb_first_with_rows_padded_to_bytes(self):
        q = encode("packed", version=2)  # 25 modules: rows of 4 bytes, 7 padding bits
        assert isinstance(q.matrix, bytearray)
        assert len(q.matrix) == 4 * 25 == ((q.size + 7) // 8) * q.size
        for y in range(q.size):
            for x in range(q.size):
                bit = (q.matrix[y * 4 + x // 8] >> (7 - x % 8)) & 1
                assert q.module(x, y) is (bit == 1)
            assert q.matrix[y * 4 + 3] & 0x7F == 0  # padding stays 0

    def test_finder_corners_are_dark_and_quiet_zone_is_light(self):
        q = encode("x")
        for x, y in ((0, 0), (q.size - 1, 0), (0, q.size - 1)):
            assert q.module(x, y) is True
        assert q.module(-1, 0) is False
        assert q.module(q.size, q.size) is False

    def test_smallest_version_is_chosen(self):
        assert encode("1" * capacity(1, "M", "numeric")).version == 1
        assert encode("1" * (capacity(1, "M", "numeric") + 1)).version == 2
        assert encode(b"\x00" * capacity(40, "L", "byte"), "L").version == 40

    def test_empty_data_makes_a_version_1_symbol(self):
        assert encode("").version == 1

    def test_non_ascii_text_gets_an_eci_utf8_header_and_bytes_do_not(self):
        text = "नमस्ते ₹150"
        utf8 = QrSegment.make_bytes(text.encode())
        eci = QrSegment.make_eci(26)
        for data, segs in ((text, [eci, utf8]), (text.encode(), [utf8]), ("ascii", None)):
            q = encode(data, "M", mask=0)
            segs = segs or [QrSegment.make_bytes(b"ascii")]
            ref = QrCode.encode_segments(segs, QrCode.Ecc.MEDIUM, q.version, q.version, 0, False)
            assert all(
                q.module(x, y) == ref.get_module(x, y) for y in range(q.size) for x in range(q.size)
            ), data
        assert decode(encode(text)).text == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    ecc=st.sampled_from("LMQH"),
    n=st.integers(1, 600),
    rnd=generators,
)
def test_every_symbol_decodes_back_to_its_payload(kind, ecc, n, rnd):
    data = make_payload(kind, n, rnd) or "0"
    symbol = encode(data, ecc)
    found = decode(symbol)
    assert found.bytes == source_of(data)[0]
    if isinstance(data, str):
        assert found.text == data or not data.isprintable()
    assert found.extra["Version"] == str(symbol.version)
    assert found.extra["ECLevel"] == ecc


@pytest.mark.parametrize(
    "data",
    [
        "0000000000000000ABCDEFGHabcdefgh0000000000000000",  # numeric, alphanumeric, byte
        "upi://pay?pa=shop@bank&am=123456789012&cu=INR",
        "Grüße 12345678901234567890 ¥€₹ 😀",  # mixed modes after an ECI header
    ],
)
def test_mixed_segment_symbols_decode(data):
    for ecc in "LMQH":
        assert decode(encode(data, ecc)).bytes == data.encode()


@pytest.mark.parametrize("name", ["emv", "upi", "alnum500"])
def test_benchmark_payloads_are_no_larger_than_other_encoders_make_them(name):
    import qrcode

    data = payloads()[name]
    peer = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
    peer.add_data(data, optimize=20)
    peer.make(fit=True)
    versions = [
        segno.make_qr(data, error="m", boost_error=False).version,
        peer.version,
        QrCode.encode_segments(
            QrSegment.make_segments(data), QrCode.Ecc.MEDIUM, boostecl=False
        ).get_version(),
    ]
    assert encode(data, "M").version <= min(versions)


class TestCapacity:
    @pytest.mark.parametrize("mode", ["numeric", "alphanumeric", "byte"])
    @pytest.mark.parametrize("ecc", "LMQH")
    def test_capacity_fills_the_version_exactly(self, mode, ecc):
        fill = {"numeric": "7", "alphanumeric": "Z", "byte": "z"}[mode]
        for version in range(1, 41):
            n = capacity(version, ecc, mode)
            assert encode(fill * n, ecc, version=version).version == version
            with pytest.raises(QRError, match="too long"):
                encode(fill * (n + 1), ecc, version=version)

    @pytest.mark.parametrize("data", ["7" * 500, "HELLO " * 90, "é" * 300, b"\xff" * 1300])
    def test_fit_picks_the_version_encode_picks_and_refuses_what_encode_refuses(self, data):
        for ecc in "LMQH":
            try:
                version = encode(data, ecc).version
            except QRError:
                with pytest.raises(QRError, match="too long"):
                    fit(data, ecc)
            else:
                assert fit(data, ecc) == version

    def test_capacity_matches_the_standard_tables(self):
        # ISO/IEC 18004 Table 7, a few corners.
        assert capacity(1, "L", "numeric") == 41
        assert capacity(1, "H", "alphanumeric") == 10
        assert capacity(10, "M", "byte") == 213
        assert capacity(40, "L", "numeric") == 7089
        assert capacity(40, "L", "alphanumeric") == 4296
        assert capacity(40, "L", "byte") == 2953
        assert capacity(40, "H", "byte") == 1273

    def test_capacity_never_exceeds_what_the_count_field_can_say(self):
        widths = {"numeric": (10, 12, 14), "alphanumeric": (9, 11, 13), "byte": (8, 16, 16)}
        for version in range(1, 41):
            group = 0 if version < 10 else 1 if version < 27 else 2
            for ecc in "LMQH":
                for mode, width in widths.items():
                    assert capacity(version, ecc, mode) < 1 << width[group]

    def test_capacity_agrees_with_the_reference(self):
        for version in (1, 9, 10, 26, 27, 40):
            for ecc, level in REFERENCE_ECC.items():
                n = capacity(version, ecc, "byte")
                seg = QrSegment.make_bytes(b"x" * n)
                code = QrCode.encode_segments([seg], level, version, version, 0, False)
                assert code.get_version() == version


class TestErrors:
    def test_too_long_names_the_capacity(self):
        with pytest.raises(QRError) as e:
            encode(b"\xff" * 2954, "L")
        message = str(e.value)
        assert "too long for any version at ECC L" in message
        assert "2953 bytes" in message and "4296 alphanumeric" in message
        assert "7089 digits" in message

    def test_too_long_for_a_forced_version_says_to_choose_a_larger_one(self):
        with pytest.raises(QRError, match=r"version 2-M: .*choose a larger version"):
            encode("x" * 100, "M", version=2)

    def test_too_long_suggests_a_lower_ecc_level(self):
        with pytest.raises(QRError, match="lower the ECC level"):
            encode(b"x" * 1300, "H")

    @pytest.mark.parametrize("ecc", ["m", "X", "", None, 1, "LM"])
    def test_bad_ecc_lists_the_levels(self, ecc):
        with pytest.raises(QRError, match="ecc must be one of 'L', 'M', 'Q', 'H'"):
            encode("x", ecc)

    @pytest.mark.parametrize("version", [0, 41, -1, "5", 2.0, True])
    def test_bad_version_says_1_to_40(self, version):
        with pytest.raises(QRError, match="version must be an int from 1 to 40"):
            encode("x", version=version)

    @pytest.mark.parametrize("mask", [-1, 8, "0", 1.5])
    def test_bad_mask_says_0_to_7(self, mask):
        with pytest.raises(QRError, match="mask must be an int from 0 to 7"):
            encode("x", mask=mask)

    def test_bad_data_type(self):
        with pytest.raises(QRError, match="data must be str or bytes, not int"):
            encode(12345)

    def test_bad_capacity_mode(self):
        with pytest.raises(QRError, match="mode must be 'numeric', 'alphanumeric' or 'byte'"):
            capacity(1, "M", "kanji")

    def test_errors_are_value_errors(self):
        assert issubclass(QRError, ValueError)


def test_unix_port_encodes_like_cpython_and_raises_the_same_errors(unix_port):
    emv = payloads()["emv"]
    out = unix_port(
        "from firmware.qr import encode, QRError\n"
        "q = encode(sys.stdin.buffer.read().decode())\n"
        "print(q.version, q.mask, bytes(q.matrix).hex())\n"
        "try:\n"
        "    encode('x', 'Z')\n"
        "except QRError as e:\n"
        "    print(isinstance(e, ValueError), e)\n",
        stdin=emv.encode(),
    )
    ours = encode(emv)
    assert out.splitlines() == [
        f"{ours.version} {ours.mask} {bytes(ours.matrix).hex()}",
        "True ecc must be one of 'L', 'M', 'Q', 'H', not 'Z'",
    ]


def test_unix_port_matrix_is_a_mono_hlsb_framebuffer(unix_port):
    out = unix_port(
        "import framebuf\n"
        "from firmware.qr import encode\n"
        "q = encode('framebuf')\n"
        "fb = framebuf.FrameBuffer(q.matrix, q.size, q.size, framebuf.MONO_HLSB)\n"
        "print(all((fb.pixel(x, y) == 1) == q.module(x, y)"
        " for y in range(q.size) for x in range(q.size)))\n"
    )
    assert out.strip() == "True"


_FRAGMENTED_HEAP = """
import binascii, gc, hashlib
from firmware.qr import encode
encode("warm")
data = sys.stdin.buffer.read()
gc.collect()
# Fill the heap with 5000-byte blocks, then free every other one: what is free afterwards
# lies in holes of about 5 KB, as in a heap fragmented by a long-running unit.
blocks = [None] * 40
for i in range(40):
    try:
        blocks[i] = bytearray(5000)
    except MemoryError:
        break
for i in range(0, 40, 2):
    blocks[i] = None
gc.collect()
for ecc in "LH":
    q = encode(data, ecc, 40)
    print(q.version, q.mask, binascii.hexlify(hashlib.sha256(q.matrix).digest()).decode())
"""


def test_unix_port_encodes_version_40_when_the_free_heap_is_in_5_kb_holes(unix_port):
    data = bytes(range(256)) * 4
    out = unix_port(_FRAGMENTED_HEAP, stdin=data)
    expected = [encode(data, ecc, 40) for ecc in "LH"]
    assert out.splitlines() == [f"40 {q.mask} {sha256(q.matrix).hexdigest()}" for q in expected]
