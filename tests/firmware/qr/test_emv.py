"""EMVCo merchant-presented payloads: built from fields, parsed back, CRC checked."""

import pytest

from firmware.qr import emv, encode

from .conftest import decode

ACCOUNT = [(26, [(0, "A000000677010111"), (1, "0066999999999")])]


def test_crc_is_ccitt_false():
    assert emv.crc16(b"123456789") == 0x29B1  # the catalogue check value
    assert emv.crc16(b"") == 0xFFFF


def test_merchant_payload_has_the_fields_in_order_and_a_valid_crc():
    payload = emv.merchant(ACCOUNT, "TEST MERCHANT", "BENGALURU", mcc="5411", amount="150.00")
    assert payload.startswith("000201010212")  # format 01, dynamic because of the amount
    assert "26370016A000000677010111011300669999999995204541153033565406150.00" in payload
    assert "5802IN5913TEST MERCHANT6009BENGALURU6304" in payload
    assert payload[-4:] == f"{emv.crc16(payload[:-4].encode()):04X}"


def test_static_payload_without_amount():
    payload = emv.merchant(ACCOUNT, "SHOP", "PUNE")
    assert payload.startswith("000201010211") and 54 not in dict(emv.parse(payload))


def test_parse_gives_back_what_was_built_with_templates_as_strings():
    payload = emv.merchant(
        ACCOUNT, "SHOP", "PUNE", amount=12.5, postal_code="411001", additional=[(7, "T1")]
    )
    objects = emv.parse(payload)
    assert objects[:2] == [(0, "01"), (1, "12")]
    assert dict(objects)[54] == "12.50"
    assert emv.parse_objects(dict(objects)[26]) == ACCOUNT[0][1]
    assert emv.parse_objects(dict(objects)[62]) == [(7, "T1")]
    assert objects[-1] == (63, payload[-4:])


def test_parse_accepts_bytes_and_a_lower_case_crc():
    payload = emv.merchant(ACCOUNT, "SHOP", "PUNE")
    assert emv.parse(payload.encode()) == emv.parse(payload)
    assert emv.parse(payload[:-4] + payload[-4:].lower())[-1][0] == 63


def test_wrong_crc_is_refused_with_both_values():
    payload = emv.merchant(ACCOUNT, "SHOP", "PUNE", amount="10.00")
    tampered = payload.replace("10.00", "90.00")
    with pytest.raises(emv.EMVError, match=r"CRC mismatch: the payload says [0-9A-F]{4} but"):
        emv.parse(tampered)


@pytest.mark.parametrize(
    "payload, message",
    [
        ("000201", "must end with the CRC object"),
        ("0002015901", "must end with the CRC object"),
        ("00020159XXSHOP63041234", "malformed data object at character 6"),
        ("0002015920SHOP63041234", "says 20 characters but only"),
        ("0102126304ABCD", "payload format indicator 000201"),
    ],
)
def test_malformed_payloads_say_where(payload, message):
    with pytest.raises(emv.EMVError, match=message):
        emv.parse(payload)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: emv.build([(63, "ABCD")]), "CRC object .* is added by build"),
        (lambda: emv.build([(100, "x")]), "ID must be an int from 0 to 99"),
        (lambda: emv.build([(59, "x" * 100)]), "1 to 99 characters, not 100"),
        (lambda: emv.merchant([(12, "x")], "S", "C"), "IDs 26 to 51"),
        (lambda: emv.merchant(ACCOUNT, "S", "C", amount="1,00"), "amount must be digits"),
    ],
)
def test_fields_that_cannot_be_encoded_are_refused(call, message):
    with pytest.raises(emv.EMVError, match=message):
        call()


def test_errors_are_value_errors():
    assert issubclass(emv.EMVError, ValueError)


def test_a_merchant_qr_scans_back_to_a_valid_payload():
    payload = emv.merchant(ACCOUNT, "TEST MERCHANT", "BENGALURU", amount="99.00")
    scanned = decode(encode(payload)).text
    assert scanned == payload and emv.parse(scanned)[-1][0] == 63


def test_unix_port_builds_the_same_payload_and_refuses_a_wrong_crc(unix_port):
    out = unix_port(
        "from firmware.qr import emv\n"
        "p = emv.merchant([(26, [(0, 'A000000677010111'), (1, '0066999999999')])],"
        " 'SHOP', 'PUNE', amount='10.00')\n"
        "print(p)\n"
        "try:\n"
        "    emv.parse(p[:-1] + ('0' if p[-1] != '0' else '1'))\n"
        "except emv.EMVError as e:\n"
        "    print(str(e).split(':')[0])\n"
    )
    assert out.splitlines() == [
        emv.merchant(ACCOUNT, "SHOP", "PUNE", amount="10.00"),
        "CRC mismatch",
    ]
