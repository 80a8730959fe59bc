"""The encoder is bit-exact with the reference implementation (qrcodegen) on CPython and on
the MicroPython Unix port, for payloads of every mode, all ECC levels and versions 1-40."""

import binascii

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.qr import encode

from .conftest import digest, packed, reference
from .strategies import cases


def assert_same_as_reference(data, ecc, version, mask):
    ours = encode(data, ecc, version=version, mask=mask)
    ref = reference(data, ecc, version, mask)
    assert (ours.version, ours.mask, ours.size) == (
        ref.get_version(),
        ref.get_mask(),
        ref.get_size(),
    )
    assert ours.matrix == packed(ref.get_module, ref.get_size()), (data, ecc, version, mask)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_matrix_equals_the_reference_with_version_and_mask_forced(case):
    assert_same_as_reference(*case)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(versions=(1, 12), masks=False))
def test_automatic_mask_is_the_one_the_reference_chooses(case):
    assert_same_as_reference(*case)


def test_automatic_mask_matches_the_reference_at_the_largest_version():
    assert_same_as_reference("upi://pay?pa=merchant@bank&am=1.00" * 30, "H", 40, None)


# Batch format on stdin, one case per line: ECC letter, version, mask, s|b, hex of the data.
_UNIX_BATCH = """
import binascii, hashlib
from firmware.qr import encode
for line in sys.stdin.buffer.read().split(b"\\n"):
    if not line:
        continue
    ecc, version, mask, kind, hexdata = line.split(b" ")
    data = binascii.unhexlify(hexdata)
    if kind == b"s":
        data = data.decode()
    q = encode(data, ecc.decode(), version=int(version), mask=int(mask))
    print(binascii.hexlify(hashlib.sha256(bytes(q.matrix) + bytes([q.version, q.mask])).digest()).decode())
"""


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(cases(), min_size=50, max_size=50))
def test_unix_port_matrices_equal_the_reference(unix_port, batch):
    lines = []
    expected = []
    for data, ecc, version, mask in batch:
        raw = data.encode() if isinstance(data, str) else data
        kind = "s" if isinstance(data, str) else "b"
        lines.append(f"{ecc} {version} {mask} {kind} {binascii.hexlify(raw).decode()}")
        ref = reference(data, ecc, version, mask)
        expected.append(digest(packed(ref.get_module, ref.get_size()), version, mask))
    # The batch, read at once, holds up to 50 hex payloads of up to 2953 bytes: more than
    # the 160K test heap (the encoder's own heap is tested in test_encoder.py).
    out = unix_port(_UNIX_BATCH, heap="512K", stdin="\n".join(lines).encode() + b"\n")
    assert out.split() == expected
