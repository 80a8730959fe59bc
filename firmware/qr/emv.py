"""EMVCo merchant-presented QR payloads (EMV QRCPS Merchant-Presented Mode): build and parse.

A payload is a string of data objects, each `ID` (2 digits) + `length` (2 digits, in
characters) + value; templates (IDs 26-51 merchant account information, 62 additional data,
64 language template, 80-99 unreserved) hold data objects of their own. The last object is the
CRC, `63` `04` + 4 upper-case hex digits: CRC-16/CCITT-FALSE (polynomial 0x1021, initial
0xFFFF, no reflection, no final XOR) over the UTF-8 bytes of everything before the 4 digits,
`6304` included.

Objects are (id, value) pairs; a template's value is a list of pairs.

    EMVError(ValueError)   malformed payload, wrong CRC, or a field that cannot be encoded
"""

_CRC_ID = 63


class EMVError(ValueError):
    """A payload or field that does not follow the EMVCo format; the message says where."""


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of `data` (bytes); crc16(b"123456789") == 0x29B1."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        crc &= 0xFFFF
    return crc


def _objects(objects):
    out = []
    for tag, value in objects:
        if not isinstance(tag, int) or not 0 <= tag <= 99:
            raise EMVError("data object ID must be an int from 0 to 99, not %r" % (tag,))
        if not isinstance(value, str):
            value = _objects(value)
        if not value or len(value) > 99:
            raise EMVError(
                "data object %02d must hold 1 to 99 characters, not %d" % (tag, len(value))
            )
        out.append("%02d%02d%s" % (tag, len(value), value))
    return "".join(out)


def build(objects):
    """Payload from (id, value) pairs in order, with the CRC object appended."""
    for tag, _ in objects:
        if tag == _CRC_ID:
            raise EMVError("the CRC object (63) is added by build(); leave it out")
    body = _objects(objects) + "6304"
    return body + "%04X" % crc16(body.encode())


def _amount(amount):
    text = amount if isinstance(amount, str) else "%.2f" % amount
    digits = text.replace(".", "", 1)
    if not digits.isdigit() or len(text) > 13 or text.endswith("."):
        raise EMVError(
            "amount must be digits with an optional decimal point, at most 13 characters, not %r"
            % (amount,)
        )
    return text


def merchant(
    account,
    name,
    city,
    mcc="0000",
    currency="356",
    country="IN",
    amount=None,
    postal_code=None,
    additional=None,
):
    """Merchant-presented payload from its fields.

    account: merchant account information, (id, template) pairs with ids 26-51, e.g.
    [(26, [(0, "A000000677010111"), (1, "0066999999999")])]; mcc: merchant category code
    (4 digits); currency: ISO 4217 numeric (356 = INR); country: ISO 3166 alpha-2; amount:
    str or number, which also makes the payload dynamic (point of initiation 12, else 11);
    additional: (id, value) pairs for template 62 (bill number, terminal label, ...).
    """
    for tag, _ in account:
        if not 26 <= tag <= 51:
            raise EMVError("merchant account information uses IDs 26 to 51, not %r" % (tag,))
    objects = [(0, "01"), (1, "11" if amount is None else "12")]
    objects += account
    objects += [(52, mcc), (53, currency)]
    if amount is not None:
        objects.append((54, _amount(amount)))
    objects += [(58, country), (59, name), (60, city)]
    if postal_code is not None:
        objects.append((61, postal_code))
    if additional:
        objects.append((62, additional))
    return build(objects)


def parse_objects(text, where=0):
    """(id, value) pairs of a string of data objects, without CRC checking or nesting;
    `where` is the offset of `text` in the payload, for error messages."""
    out = []
    i = 0
    while i < len(text):
        head = text[i : i + 4]
        if len(head) < 4 or not head.isdigit():
            raise EMVError(
                "malformed data object at character %d: expected 2-digit ID and 2-digit length, got %r"
                % (where + i, head)
            )
        n = int(head[2:])
        if i + 4 + n > len(text):
            raise EMVError(
                "data object %s at character %d says %d characters but only %d remain"
                % (head[:2], where + i, n, len(text) - i - 4)
            )
        out.append((int(head[:2]), text[i + 4 : i + 4 + n]))
        i += 4 + n
    return out


def parse(payload):
    """Top-level (id, value) pairs of a payload (str or bytes), CRC object included, after
    checking the CRC; template values are left as strings (see parse_objects)."""
    if isinstance(payload, (bytes, bytearray)):
        payload = payload.decode()
    if len(payload) < 8 or payload[-8:-4] != "6304":
        raise EMVError("payload must end with the CRC object 6304XXXX")
    objects = parse_objects(payload)
    if objects[-1][0] != _CRC_ID or objects[-1][1] != payload[-4:]:
        raise EMVError("payload must end with the CRC object 6304XXXX")
    if not objects or objects[0] != (0, "01"):
        raise EMVError("payload must start with the payload format indicator 000201")
    computed = crc16(payload[:-4].encode())
    stated = payload[-4:].upper()
    if stated != "%04X" % computed:
        raise EMVError(
            "CRC mismatch: the payload says %s but its content gives %04X; it was altered or cut"
            % (payload[-4:], computed)
        )
    return objects
