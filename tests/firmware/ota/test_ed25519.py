"""Ed25519 verification accepts RFC 8032's and PyNaCl's signatures and rejects altered ones, on
the MicroPython Unix port with the test heap (each batch of cases is one port process)."""

import hashlib
import os

import nacl.exceptions
import nacl.signing
import pytest

from firmware.ota import ed25519
from firmware.ota.sha512 import sha512

# RFC 8032 §7.1: (name, secret key, public key, message, signature), hex.
RFC8032_7_1 = (
    (
        "TEST 1",
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "TEST 2",
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "TEST 3",
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "TEST 1024",
        "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
        "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
        "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc103b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed185ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f27088d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128bab27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb751fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34dff7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e488acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac0943bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5fb93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f1610e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380db2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8cac60c905c15fc910840b94c00a0b9d0",
        "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03",
    ),
    (
        "TEST SHA(abc)",
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
)

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493

# One case per stdin line: public key, signature and message in hex; prints 1 or 0 per case.
_VERIFY_BATCH = """
import binascii
from firmware.ota.ed25519 import verify
while True:
    line = sys.stdin.buffer.readline()
    if not line:
        break
    key, sig, msg = [binascii.unhexlify(f) for f in line.rstrip(b"\\n").split(b" ")]
    print(int(verify(key, msg, sig)))
"""

# One message per stdin line, in hex; prints its SHA-512 in hex.
_SHA512_BATCH = """
import binascii
from firmware.ota.sha512 import sha512
while True:
    line = sys.stdin.buffer.readline()
    if not line:
        break
    print(binascii.hexlify(sha512(binascii.unhexlify(line.rstrip(b"\\n"))).digest()).decode())
"""


def verdicts_on_unix_port(unix_port, cases):
    """verify(key, message, signature) on the Unix port for each (key, message, signature)."""
    lines = "".join(f"{key.hex()} {sig.hex()} {msg.hex()}\n" for key, msg, sig in cases)
    out = unix_port(_VERIFY_BATCH, stdin=lines.encode())
    return [line == "1" for line in out.split()]


def rfc_cases():
    return [
        (bytes.fromhex(key), bytes.fromhex(msg), bytes.fromhex(sig))
        for _, _, key, msg, sig in RFC8032_7_1
    ]


def flip(data, index, bit=0):
    changed = bytearray(data)
    changed[index] ^= 1 << bit
    return bytes(changed)


def with_s(signature, s):
    return signature[:32] + s.to_bytes(32, "little")


def test_rfc_8032_vectors_are_the_ones_pynacl_makes():
    for name, secret, key, msg, sig in RFC8032_7_1:
        signing = nacl.signing.SigningKey(bytes.fromhex(secret))
        assert bytes(signing.verify_key).hex() == key, name
        assert signing.sign(bytes.fromhex(msg)).signature.hex() == sig, name


def test_unix_port_accepts_rfc_8032_vectors(unix_port):
    assert verdicts_on_unix_port(unix_port, rfc_cases()) == [True] * len(RFC8032_7_1)


def test_cpython_accepts_rfc_8032_vectors():
    assert all(ed25519.verify(key, msg, sig) for key, msg, sig in rfc_cases())


def test_unix_port_accepts_pynacl_signatures_up_to_a_manifests_size(unix_port):
    cases = []
    for size in (0, 1, 64, 300, 2048, 4096):
        signing = nacl.signing.SigningKey.generate()
        msg = os.urandom(size)
        cases.append((bytes(signing.verify_key), msg, signing.sign(msg).signature))
    assert verdicts_on_unix_port(unix_port, cases) == [True] * len(cases)


def altered_signatures():
    """(what, key, message, signature): each must be rejected, by PyNaCl too."""
    key, msg, sig = rfc_cases()[2]  # TEST 3
    other_key = bytes.fromhex(RFC8032_7_1[1][2])
    s = int.from_bytes(sig[32:], "little")
    return [
        ("message bit flipped", key, flip(msg, 0), sig),
        ("message extended", key, msg + b"\x00", sig),
        ("message empty", key, b"", sig),
        ("R bit flipped", key, msg, flip(sig, 0)),
        ("R's sign bit flipped", key, msg, flip(sig, 31, 7)),
        ("S bit flipped", key, msg, flip(sig, 32)),
        ("S + L, the same scalar mod L", key, msg, with_s(sig, s + L)),
        ("S = L", key, msg, with_s(sig, L)),
        ("S = 2^256 - 1", key, msg, with_s(sig, 2**256 - 1)),
        ("another key", other_key, msg, sig),
        ("key bit flipped", flip(key, 0), msg, sig),
        ("R non-canonical (y = p + 1)", key, msg, (P + 1).to_bytes(32, "little") + sig[32:]),
        ("key non-canonical (y = p + 1)", (P + 1).to_bytes(32, "little"), msg, sig),
        ("key x = 0 with the sign bit set", (1 | 1 << 255).to_bytes(32, "little"), msg, sig),
        ("key off the curve (y = 2)", (2).to_bytes(32, "little"), msg, sig),
        ("key all ones", b"\xff" * 32, msg, sig),
        ("signature all zeros", key, msg, bytes(64)),
    ]


def test_altered_signatures_fail_here_as_in_pynacl():
    for what, key, msg, sig in altered_signatures():
        with pytest.raises(nacl.exceptions.BadSignatureError):
            nacl.signing.VerifyKey(key).verify(msg, sig)
        assert not ed25519.verify(key, msg, sig), what


def test_unix_port_rejects_altered_signatures(unix_port):
    altered = altered_signatures()
    verdicts = verdicts_on_unix_port(unix_port, [case[1:] for case in altered])
    assert [case[0] for case, ok in zip(altered, verdicts, strict=True) if ok] == []


def test_off_curve_key_does_not_decode():
    # y = 2: (y^2 - 1) / (d y^2 + 1) has no square root mod p, so no point has this y.
    assert ed25519.point_decompress((2).to_bytes(32, "little")) is None


def test_wrong_lengths_are_false_not_errors():
    key, msg, sig = rfc_cases()[0]
    for bad_key, bad_sig in ((key[:31], sig), (key + b"\x00", sig), (key, sig[:63]), (b"", b"")):
        assert ed25519.verify(bad_key, msg, bad_sig) is False


SHA512_LENGTHS = (0, 1, 111, 112, 127, 128, 129, 1000)


def test_unix_port_sha512_equals_hashlib(unix_port):
    messages = [os.urandom(n) for n in SHA512_LENGTHS]
    out = unix_port(_SHA512_BATCH, stdin="".join(m.hex() + "\n" for m in messages).encode())
    assert out.split() == [hashlib.sha512(m).hexdigest() for m in messages]


def test_sha512_in_pieces_equals_hashlib():
    data = os.urandom(1000)
    h = sha512()
    for start in range(0, len(data), 37):
        h.update(data[start : start + 37])
    assert h.digest() == hashlib.sha512(data).digest()
    h.update(b"more")
    assert h.digest() == hashlib.sha512(data + b"more").digest()
