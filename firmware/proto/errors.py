"""Errors raised by the protocol package.

Every parser in `firmware.proto` raises only these, whatever bytes it is fed, so an
I/O layer needs one `except ProtocolError` to answer bad input instead of crashing::

    ProtocolError                 base class; str() is a sentence for a person
     ├── HeadError                malformed HTTP/1.1 head; `.status` is the answer to send
     ├── HandshakeError           WebSocket opening handshake refused or failed; on the
     │                            server side `.status` is the HTTP answer to send
     ├── FrameError               peer broke RFC 6455; `.code` is the close code sent to it
     └── MessageError             malformed app message; `.code` is the app error code,
                                  `.id` the command id to answer (None if unknown)
"""


class ProtocolError(Exception):
    pass


class HeadError(ProtocolError):
    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


class HandshakeError(ProtocolError):
    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class FrameError(ProtocolError):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class MessageError(ProtocolError):
    def __init__(self, code, message, id=None):
        super().__init__(message)
        self.code = code
        self.id = id
