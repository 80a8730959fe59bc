"""HMAC-SHA256 challenge-response: checked against CPython's hmac and on the Unix port."""

import hashlib
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.proto import auth
from tests.firmware.both import run_both

SECRET = "s3cret-provisioned-unit-key"
NONCE = "00112233445566778899aabbccddeeff"
DEVICE = "qrf-a4cf12345678"


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=200), message=st.binary(max_size=300))
def test_hmac_sha256_matches_cpython_hmac(key, message):
    # Keys longer than the 64-byte block are hashed first (RFC 2104 §2); both sides are covered.
    assert auth.hmac_sha256(key, message) == hmac.new(key, message, hashlib.sha256).digest()


def test_hmac_sha256_matches_rfc_4231_test_case_2():
    mac = auth.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert mac.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_answer_is_hmac_over_nonce_bytes_and_device_id():
    expected = hmac.new(
        SECRET.encode(), bytes.fromhex(NONCE) + DEVICE.encode(), hashlib.sha256
    ).hexdigest()
    assert auth.answer(SECRET, NONCE, DEVICE) == expected


def test_right_answer_passes_the_check():
    assert auth.check_answer(SECRET, NONCE, DEVICE, auth.answer(SECRET, NONCE, DEVICE))


def test_answer_with_the_wrong_secret_fails_the_check():
    assert not auth.check_answer(
        SECRET, NONCE, DEVICE, auth.answer("another-units-secret", NONCE, DEVICE)
    )


def test_answer_for_another_nonce_cannot_be_replayed():
    captured = auth.answer(SECRET, NONCE, DEVICE)
    assert not auth.check_answer(SECRET, auth.new_nonce(), DEVICE, captured)


def test_answer_for_another_device_fails_the_check():
    assert not auth.check_answer(
        SECRET, NONCE, "qrf-000000000000", auth.answer(SECRET, NONCE, DEVICE)
    )


def test_nonces_are_fresh_32_hex_digits():
    nonces = {auth.new_nonce() for _ in range(16)}
    assert len(nonces) == 16
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in nonces)


def test_equal_compares_contents_and_lengths():
    assert auth.equal(b"abc", b"abc")
    assert not auth.equal(b"abc", b"abd")
    assert not auth.equal(b"abc", b"ab")


def test_authentication_gives_the_same_answers_on_micropython(unix_port):
    code = f"""
from firmware.proto import auth
print(auth.hmac_sha256(b"Jefe", b"what do ya want for nothing?"))
print(auth.hmac_sha256(bytes(range(100)), b"long key"))
args = {(SECRET, NONCE, DEVICE)!r}
print(auth.answer(*args))
print(auth.check_answer(*args, auth.answer("wrong-secret-000", *args[1:])))
print(len(auth.new_nonce()))
"""
    on_cpython, on_micropython = run_both(unix_port, code)
    assert on_micropython == on_cpython
    assert auth.answer(SECRET, NONCE, DEVICE) in on_micropython
