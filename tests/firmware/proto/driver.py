"""Feeds byte vectors to an open WebSocket connection and prints what comes out.

Runs unchanged on CPython and on the MicroPython Unix port, so a test can check
that both give the same lines for the same bytes. Input, one item per line:

    case NAME ROLE MAX_SIZE     ROLE is client or server
    48656c6c6f                  hex bytes for one receive_data() call
    eof                         receive_eof()
    send_close                  send_close(1000, "bye")
    end

Output per case: "case NAME", one line per event, error and frame sent, and
the final state. Frames the connection sent are shown unmasked.
"""

import sys
from binascii import hexlify, unhexlify

from firmware.proto import errors, server, websocket

# RFC 6455 §1.3's example key.
REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
_OPCODES = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}


def open_connection(role, max_size):
    """A protocol of that role past its opening handshake."""
    if role == "server":
        proto = server.ServerProtocol(max_size)
        proto.accept(server.parse_request_head(REQUEST))
    else:
        proto = websocket.ClientProtocol("server.example.com", "/ws", max_size=max_size)
        proto.receive_data(server.accept_response(proto.key))
    proto.data_to_send()
    proto.events_received()
    return proto


def describe_event(event):
    if isinstance(event, str):
        return "text " + _hex(event.encode())
    if isinstance(event, bytes):
        return "binary " + _hex(event)
    if isinstance(event, websocket.Ping):
        return "ping " + _hex(event.data)
    if isinstance(event, websocket.Pong):
        return "pong " + _hex(event.data)
    if isinstance(event, websocket.Close):
        return f"close {event.code} {event.reason}"
    return "head"


def describe_sent(data):
    """One line per frame in `data`: opcode, masked or plain, payload (unmasked)."""
    lines = []
    i = 0
    while i < len(data):
        b0, b1 = data[i], data[i + 1]
        n = b1 & 0x7F
        i += 2
        if n == 126:
            n = data[i] << 8 | data[i + 1]
            i += 2
        elif n == 127:
            n = int.from_bytes(data[i : i + 8], "big")
            i += 8
        key = None
        if b1 & 0x80:
            key = data[i : i + 4]
            i += 4
        payload = bytearray(data[i : i + n])
        i += n
        if key:
            for j in range(n):
                payload[j] ^= key[j & 3]
        opcode = b0 & 0x0F
        fin = "" if b0 & 0x80 else " nofin"
        masking = "masked" if key else "plain"
        line = f"sent {_OPCODES[opcode]}{fin} {masking}"
        if opcode == 8 and n >= 2:
            code = payload[0] << 8 | payload[1]
            reason = str(bytes(payload[2:]), "utf-8")
            line += f" {code} {reason}"
        elif n:
            line += " " + _hex(payload)
        lines.append(line)
    return lines


def run(role, max_size, items):
    proto = open_connection(role, max_size)
    lines = []
    for item in items:
        error = None
        try:
            if item == "eof":
                proto.receive_eof()
            elif item == "send_close":
                proto.send_close(1000, "bye")
            else:
                proto.receive_data(unhexlify(item))
        except errors.ProtocolError as exc:
            name = type(exc).__name__
            code = getattr(exc, "code", "")
            error = f"error {name} {code}"
        for event in proto.events_received():
            lines.append(describe_event(event))
        if error:
            lines.append(error)
        lines.extend(describe_sent(b"".join(proto.data_to_send())))
    lines.append(f"state {proto.state}")
    return lines


def main(text):
    """Run every case in `text` (the input format above) and print the results."""
    case = None
    for line in text.split("\n"):
        words = line.split()
        if not words:
            continue
        if words[0] == "case":
            case, role, max_size, items = words[1], words[2], int(words[3]), []
        elif words[0] == "end":
            print("case " + case)
            for out in run(role, max_size, items):
                print(out)
        else:
            items.append(words[0])


def _hex(data):
    return hexlify(data).decode()


if __name__ == "__main__":
    main(sys.stdin.read())
