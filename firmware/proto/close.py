"""How a session's connection ends, whatever carries it (a WebSocket, or a tethered unit's
stream through its bridge): ConnectionClosed, and the RFC 6455 close codes a session reports
or sends (firmware.proto.frames has the rest). Imported only with the network code: the
modules a unit loads at boot stay as small as they were."""

from firmware.compat import const

CLOSE_GOING_AWAY = const(1001)
CLOSE_ABNORMAL = const(1006)  # never sent, only reported: the connection just dropped
CLOSE_POLICY_VIOLATION = const(1008)


class ConnectionClosed(Exception):
    """The session ended; `code` and `reason` say how (1006: the connection just dropped)."""

    def __init__(self, code, reason):
        super().__init__("connection closed (%d) %s" % (code, reason))
        self.code = code
        self.reason = reason
