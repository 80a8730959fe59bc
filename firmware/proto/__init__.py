"""The qrfleet wire protocol without I/O, shared by the firmware and the host.

- `http11`: HTTP/1.1 heads (the handshake's, and the host API's requests)
- `handshake`: the WebSocket opening handshake, both roles (RFC 6455 §4)
- `frames`: the frame format, masking and close payloads (RFC 6455 §5, §7)
- `websocket`: `ClientProtocol` / `ServerProtocol`, bytes in, events and bytes out
- `messages`: the app messages carried in text frames (docs/protocol.md)
- `auth`: HMAC-SHA256 challenge-response
- `errors`: the one exception tree every parser here raises from

Modules are imported one by one, so a unit loads only what it uses.
"""
