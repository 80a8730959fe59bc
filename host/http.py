"""The server's one port: HTTP/1.1 for the JSON API and the upgrade to `/ws/device`.

Request heads are parsed by `firmware.proto.http11`, the same code the units use. This module
only moves bytes: it reads a head and a bounded body, hands them to a router, writes the JSON
answer, and keeps the connection for the next request. A WebSocket upgrade is handed over,
with the connection, to the device endpoint.

Every failure is JSON `{"error": code, "message": sentence}` with a fitting status, plus the
facts the sentence was built from where there are any (e.g. `"waiting": 2`).
"""

import asyncio
import json
import re
from urllib.parse import parse_qsl

from firmware.proto import http11
from firmware.proto.errors import HeadError

MAX_BODY = 64 * 1024
_READ_TIMEOUT_S = 30


class ApiError(Exception):
    """An answer other than success: status, a stable code, a sentence for a person, and the
    facts behind it (more fields of the JSON body)."""

    def __init__(self, status, code, message, facts=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.facts = facts or {}


def parse_query(query):
    """`a=1&b=x%20y` -> {"a": "1", "b": "x y"}; a malformed query or a repeated name is a 400."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, errors="strict")
    except ValueError as e:  # UnicodeDecodeError included: escapes must spell UTF-8
        raise ApiError(
            400,
            "bad_query",
            f"The query string is malformed ({e}); send name=value pairs joined by '&', "
            "percent-encoded as UTF-8.",
        ) from None
    params = dict(pairs)
    if len(params) < len(pairs):
        raise ApiError(400, "bad_query", "Give each query parameter at most once.")
    return params


class Request:
    """`path` is the target without its query; `query` the query's parameters, decoded;
    `params` the parts of the path the route named."""

    def __init__(self, head, body, peer):
        self.method = head.method
        self.path, _, query = head.path.partition("?")
        self.query = parse_query(query)
        self.headers = head.headers
        self.body = body
        self.params = {}
        self.peer = peer

    def json(self):
        """The body as a JSON object; malformed or non-object bodies are a 400."""
        if not self.body:
            return {}
        try:
            doc = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "bad_json", "The request body is not valid JSON.") from None
        if not isinstance(doc, dict):
            raise ApiError(400, "bad_json", "The request body must be a JSON object.")
        return doc

    def bearer(self):
        value = self.headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""


class Router:
    """Routes `METHOD /path/{name}` patterns to `async handler(request) -> (status, object)`."""

    def __init__(self):
        self._routes = []

    def add(self, method, pattern, handler):
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self._routes.append((method, re.compile(f"^{regex}$"), handler))

    def match(self, method, path):
        allowed = []
        for route_method, regex, handler in self._routes:
            m = regex.match(path)
            if m:
                if route_method == method:
                    return handler, m.groupdict()
                allowed.append(route_method)
        if allowed:
            raise ApiError(
                405,
                "method_not_allowed",
                f"{method} is not allowed on {path}; use {', '.join(allowed)}.",
            )
        raise ApiError(404, "not_found", f"There is no endpoint at {path}.")


def json_response(status, obj, keep_alive=True):
    body = json.dumps(obj).encode()
    fields = [("Content-Type", "application/json"), ("Content-Length", len(body))]
    if not keep_alive:
        fields.append(("Connection", "close"))
    return http11.response_head(status, fields) + body


def error_body(error):
    return {**error.facts, "error": error.code, "message": error.message}


class HttpServer:
    """Serves `router` on a port; `upgrade(head, reader, writer)` takes WebSocket connections."""

    def __init__(self, router, upgrade=None, log=None):
        self.router = router
        self.upgrade = upgrade
        self.log = log
        self._server = None

    async def start(self, host, port):
        self._server = await asyncio.start_server(self._serve, host, port)
        return self._server.sockets[0].getsockname()[1]

    async def close(self):
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader, writer):
        peer = writer.get_extra_info("peername")
        buf = bytearray()
        try:
            while True:
                try:
                    head = await asyncio.wait_for(self._read_head(reader, buf), _READ_TIMEOUT_S)
                except (TimeoutError, asyncio.TimeoutError, ConnectionError):
                    return
                if head is None:
                    return
                if head.path.split("?", 1)[0] == "/ws/device" and self.upgrade:
                    await self.upgrade(head, bytes(buf), reader, writer)
                    return
                keep_alive = head.headers.get("connection", "").lower() != "close"
                response = await self._answer(head, buf, reader, peer)
                if response is None:
                    keep_alive = False
                    response = json_response(
                        413,
                        error_body(
                            ApiError(
                                413,
                                "body_too_large",
                                f"The request body is larger than {MAX_BODY} bytes.",
                            )
                        ),
                        keep_alive,
                    )
                writer.write(response)
                await writer.drain()
                if not keep_alive:
                    return
        except HeadError as e:
            writer.write(
                json_response(
                    e.status, {"error": "bad_request", "message": str(e)}, keep_alive=False
                )
            )
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _read_head(self, reader, buf):
        parser = http11.read_head(buf)
        try:
            next(parser)
            while True:
                data = await reader.read(65536)
                if not data:
                    return None
                buf.extend(data)
                parser.send(None)
        except StopIteration as done:
            return http11.parse_request_head(done.value)

    async def _answer(self, head, buf, reader, peer):
        """The whole response for one request; None when its body is too large to read."""
        if head.content_length > MAX_BODY:
            return None
        while len(buf) < head.content_length:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("body cut short")
            buf.extend(data)
        body = bytes(buf[: head.content_length])
        del buf[: head.content_length]
        try:
            request = Request(head, body, peer)
            handler, request.params = self.router.match(request.method, request.path)
            status, obj = await handler(request)
        except ApiError as e:
            status, obj = e.status, error_body(e)
            if self.log and status in (401, 403, 409):  # who tried what they may not do
                self.log.warning(
                    "api_refused",
                    status=status,
                    error=e.code,
                    method=head.method,
                    path=head.path.split("?", 1)[0],
                    peer=str(peer),
                )
        except Exception as e:  # noqa: BLE001 - one bad request must not take the port down
            if self.log:
                self.log.exception("request failed", method=head.method, path=head.path)
            status, obj = 500, {"error": "internal", "message": f"The server failed: {e}"}
        return json_response(status, obj)
