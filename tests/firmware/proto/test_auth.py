"""HMAC-SHA256 challenge-response: checked against CPython's hmac and on the Unix port."""

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.proto import auth
from tests.firmware.both import run_both

SECRET = "s3cret-provisioned-unit-key"
NONCE = "00112233445566778899aabbccddeeff"  # the server's
UNIT_NONCE = "ffeeddccbbaa99887766554433221100"
DEVICE = "qrf-a4cf12345678"


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=200), message=st.binary(max_size=300))
def test_hmac_sha256_matches_cpython_hmac(key, message):
    # Keys longer than the 64-byte block are hashed first (RFC 2104 §2); both sides are covered.
    assert auth.hmac_sha256(key, message) == hmac.new(key, message, hashlib.sha256).digest()


def test_hmac_sha256_matches_rfc_4231_test_case_2():
    mac = auth.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert mac.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def _hmac(label, first, second):
    message = label + bytes.fromhex(first) + bytes.fromhex(second) + DEVICE.encode()
    return hmac.new(SECRET.encode(), message, hashlib.sha256).digest()


def test_proof_answer_and_keys_are_hmacs_with_their_own_labels():
    assert (
        auth.proof(SECRET, UNIT_NONCE, NONCE, DEVICE)
        == _hmac(b"qrfleet/2 server", UNIT_NONCE, NONCE).hex()
    )
    assert (
        auth.answer(SECRET, NONCE, UNIT_NONCE, DEVICE)
        == _hmac(b"qrfleet/2 unit", NONCE, UNIT_NONCE).hex()
    )
    # The first message each way: MAC under that direction's key over sequence number 0.
    key = _hmac(b"qrfleet/2 to-unit", UNIT_NONCE, NONCE)
    mac = hmac.new(key, bytes(8) + b'{"type":"welcome"}', hashlib.sha256).hexdigest()[:32]
    assert server_channel().seal('{"type":"welcome"}') == mac + '{"type":"welcome"}'


def test_right_answer_and_proof_pass_their_checks():
    assert auth.check_answer(
        SECRET, NONCE, UNIT_NONCE, DEVICE, auth.answer(SECRET, NONCE, UNIT_NONCE, DEVICE)
    )
    assert auth.check_proof(
        SECRET, UNIT_NONCE, NONCE, DEVICE, auth.proof(SECRET, UNIT_NONCE, NONCE, DEVICE)
    )


def test_a_proof_is_no_answer():
    """An impostor posing as the unit cannot use the server's proof as its answer."""
    proof = auth.proof(SECRET, UNIT_NONCE, NONCE, DEVICE)
    assert not auth.check_answer(SECRET, NONCE, UNIT_NONCE, DEVICE, proof)


def test_answers_with_the_wrong_secret_nonce_or_device_fail_the_check():
    right = (SECRET, NONCE, UNIT_NONCE, DEVICE)
    for wrong in [
        ("another-units-secret", NONCE, UNIT_NONCE, DEVICE),
        (SECRET, auth.new_nonce(), UNIT_NONCE, DEVICE),  # a captured answer, replayed
        (SECRET, NONCE, auth.new_nonce(), DEVICE),
        (SECRET, NONCE, UNIT_NONCE, "qrf-000000000000"),
    ]:
        assert not auth.check_answer(*right, auth.answer(*wrong))


def unit_channel():
    return auth.Channel(SECRET, UNIT_NONCE, NONCE, DEVICE, "unit")


def server_channel():
    return auth.Channel(SECRET, UNIT_NONCE, NONCE, DEVICE, "server")


def test_sealed_messages_open_on_the_other_side_in_order():
    unit, server = unit_channel(), server_channel()
    for text in ['{"type":"welcome"}', '{"type":"show_qr","payload":"pix é"}', "{}"]:
        assert unit.open(server.seal(text)) == text.encode()
        assert server.open(unit.seal(text)) == text.encode()


def test_rewritten_dropped_replayed_or_reflected_messages_are_untrusted():
    sent = server_channel()
    messages = [sent.seal(f'{{"n":{n}}}') for n in range(3)]
    rewritten = messages[0][:-2] + "2}"
    cases = {
        "rewritten": [rewritten],
        "dropped": [messages[1]],
        "replayed": [messages[0], messages[0]],
        "reordered": [messages[1], messages[0]],
        "reflected": [unit_channel().seal('{"n":0}')],  # the unit's own message sent back
        "unsealed": ['{"n":0}'],
        "another session": [
            auth.Channel(SECRET, auth.new_nonce(), NONCE, DEVICE, "server").seal('{"n":0}')
        ],
    }
    for name, arriving in cases.items():
        unit = unit_channel()
        with pytest.raises(auth.Untrusted):
            for text in arriving:
                unit.open(text)
            pytest.fail(f"a {name} message was taken")


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
args = {(SECRET, NONCE, UNIT_NONCE, DEVICE)!r}
print(auth.answer(*args))
print(auth.proof(args[0], args[2], args[1], args[3]))
print(auth.check_answer(*args, auth.answer("wrong-secret-000", *args[1:])))
print(len(auth.new_nonce()))
unit = auth.Channel(args[0], args[2], args[1], args[3], "unit")
server = auth.Channel(args[0], args[2], args[1], args[3], "server")
for text in ('{{"type":"heartbeat"}}', '{{"payload":"pix é"}}'):
    sealed = unit.seal(text)
    print(sealed, bytes(server.open(sealed)) == text.encode())
    sealed = server.seal(text)
    print(sealed, bytes(unit.open(sealed)) == text.encode())
try:
    unit.open(server.seal("{{}}")[:-1] + "]")
except auth.Untrusted as e:
    print("untrusted:", e)
"""
    on_cpython, on_micropython = run_both(unix_port, code)
    assert on_micropython == on_cpython
    assert auth.answer(SECRET, NONCE, UNIT_NONCE, DEVICE) in on_micropython
    assert "untrusted: message 2 has a wrong MAC" in on_micropython
