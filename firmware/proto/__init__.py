"""The qrfleet wire protocol without I/O, shared by the firmware and the host.

- `http11`: HTTP/1.1 heads as the handshake's client sends and reads them
- `handshake`: the WebSocket opening handshake, the client's side (RFC 6455 §4)
- `frames`: the frame format, masking and close payloads (RFC 6455 §5, §7)
- `websocket`: `Protocol` and `ClientProtocol`, bytes in, events and bytes out
- `server`: the server role of those three (request heads and responses, the handshake's
  checks and answers, `ServerProtocol`); the host's only, a unit never imports it
- `messages`: the app messages carried in text frames (docs/protocol.md)
- `auth`: HMAC-SHA256 challenge-response
- `errors`: the one exception tree every parser here raises from

Modules are imported one by one, so a unit loads only what it uses.
"""
