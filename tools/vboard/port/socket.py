# socket, as the Unix port has it, with the board's radio in the path: getaddrinfo asks the
# supervisor's relay (tools/vboard/radio.py) for a port that leads to the host, so every
# connection made the usual way (asyncio.open_connection, TLS included: the relay only moves
# bytes) goes over the board's Wi-Fi, and fails when the harness takes Wi-Fi down.
#
# Names resolve only while the access point is in range (OSError -202, as lwIP's failed lookup
# on a unit); a numeric address needs no lookup, but its connections are refused while Wi-Fi is
# down. The address returned is the relay's (127.0.0.1 and a port of its own); for UDP, only
# NTP's port 123 leads anywhere: to the bench's time server.

import sys

_path = sys.path
sys.path = ()  # the Unix port's built-in socket, not this module
try:
    import socket as _port
    from socket import *  # noqa: F403
finally:
    sys.path = _path
del _path

import link  # noqa: E402

_host, _port_number = link.RADIO.split(":")
_RELAY = _port.getaddrinfo(_host, int(_port_number))[0][-1]
_RELAY_TIMEOUT_S = 10
_LOOKUP_FAILED = -202  # lwIP's EAI_FAIL, as the ESP32 port raises it


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    relay = _port.socket()
    try:
        relay.settimeout(_RELAY_TIMEOUT_S)
        relay.connect(_RELAY)
        kind = b"udp" if type == SOCK_DGRAM else b"tcp"  # noqa: F405
        relay.write(b"%s %d %s\n" % (host.encode(), port, kind))
        answer = relay.readline()
    finally:
        relay.close()
    if not answer.startswith(b"OK "):
        raise OSError(_LOOKUP_FAILED)
    return _port.getaddrinfo("127.0.0.1", int(answer[3:]), af, type, proto, flags)
