"""The server's one port: HTTP/1.1 for the JSON API and the upgrade to `/ws/device`.

Request heads are parsed by `firmware.proto.server`, on the head reader and field parser of
`firmware.proto.http11` that the units use. This module only moves bytes: it reads a head and
a bounded body, hands them to a router, writes the JSON answer, and keeps the connection for
the next request. A WebSocket upgrade is handed over, with the connection, to the device
endpoint.

Every failure is JSON `{"error": code, "message": sentence}` with a fitting status, plus the
facts the sentence was built from where there are any (e.g. `"waiting": 2`).

Every wait on a peer has a deadline and every peer a cap (README, "Limits"): a connection
waits IDLE_TIMEOUT_S for its next request, a request must arrive whole (head and body) within
REQUEST_TIMEOUT_S, an answer must be taken within WRITE_TIMEOUT_S, and connections are capped
in total and per peer address.
"""

import asyncio
import json
import re
import resource
import ssl
from urllib.parse import parse_qsl

from firmware.proto import http11, server
from firmware.proto.errors import HeadError
from host import streams
from host.log import Log, Tally

MAX_BODY = 64 * 1024
MAX_JSON_DEPTH = 32  # arrays and objects inside each other in a request body
IDLE_TIMEOUT_S = 15  # for the next request on an open connection
REQUEST_TIMEOUT_S = 10  # from a request's first byte to its last (and for a TLS handshake)
WRITE_TIMEOUT_S = 10  # for the peer to take an answer
MAX_CONNECTIONS_PER_PEER = 1000  # a shop's units and tills behind one address fit
_FD_RESERVE = 100  # descriptors kept for the store and the logs when connections are at the cap


def default_max_connections():
    """The total cap: what the process's open-file limit leaves after a reserve, so a flood of
    connections is refused before accept() runs out of descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - _FD_RESERVE)


def tls_context(cert_file, key_file):
    """A server-side TLS context from PEM files: the certificate (chain) and its private key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


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


class JsonTooDeep(ApiError):
    def __init__(self):
        super().__init__(
            400,
            "invalid",
            f"The request body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels.",
            {"max_depth": MAX_JSON_DEPTH},
        )


def _nesting_within(doc, limit):
    """Whether arrays and objects in `doc` nest at most `limit` deep (walked without recursion)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return False
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return True


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
        except RecursionError:
            raise JsonTooDeep() from None
        # Cheap first: a body with few brackets cannot nest deeply.
        brackets = self.body.count(b"[") + self.body.count(b"{")
        if brackets > MAX_JSON_DEPTH and not _nesting_within(doc, MAX_JSON_DEPTH):
            raise JsonTooDeep()
        if not isinstance(doc, dict):
            raise ApiError(400, "bad_json", "The request body must be a JSON object.")
        return doc

    def bearer(self):
        value = self.headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def cookie(self, name):
        """The value of cookie `name` ("" if the request has none)."""
        for pair in self.headers.get("cookie", "").split(";"):
            key, _, value = pair.strip().partition("=")
            if key == name:
                return value
        return ""


class Router:
    """Routes `METHOD /path/{name}` patterns to `async handler(request) -> (status, object)`;
    a route takes bodies of up to MAX_BODY bytes unless it says `max_body`."""

    def __init__(self):
        self._routes = []

    def add(self, method, pattern, handler, max_body=MAX_BODY):
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self._routes.append((method, re.compile(f"^{regex}$"), handler, max_body))

    def max_body(self, method, path):
        """The largest body the route of `method path` takes (MAX_BODY if none matches)."""
        for route_method, regex, _, limit in self._routes:
            if route_method == method and regex.match(path):
                return limit
        return MAX_BODY

    def match(self, method, path):
        allowed = []
        for route_method, regex, handler, _ in self._routes:
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


class Body:
    """An answer that is not JSON (a page, `/metrics`): its bytes, their content type and any
    further header fields, (name, value) each (e.g. Set-Cookie, Location)."""

    def __init__(self, data, content_type, headers=()):
        self.data = data
        self.content_type = content_type
        self.headers = list(headers)


class Stream:
    """An answer sent as it happens (Server-Sent Events): `chunks` is an async iterator of bytes,
    each of which the peer must take within WRITE_TIMEOUT_S; the connection closes when it ends
    or the server stops."""

    def __init__(self, chunks, content_type="text/event-stream; charset=utf-8", headers=()):
        self.chunks = chunks
        self.content_type = content_type
        self.headers = list(headers)


def json_response(status, obj, keep_alive=True, extra_fields=()):
    body = json.dumps(obj).encode()
    fields = [("Content-Type", "application/json"), ("Content-Length", len(body)), *extra_fields]
    if not keep_alive:
        fields.append(("Connection", "close"))
    return server.response_head(status, fields) + body


def error_body(error):
    return {**error.facts, "error": error.code, "message": error.message}


class HttpServer:
    """Serves `router` on a port; `upgrade(head, leftover, reader, writer)` takes WebSocket
    connections, which count towards the connection caps for as long as they last.

    `tls` (an ssl.SSLContext from `tls_context`) serves https:// and wss:// instead. A
    connection past a cap is refused before anything of it is read: on plain HTTP with a 503
    `too_many_connections` and `Retry-After`, on TLS with a plain close (no handshake is spent
    on a refusal).
    """

    def __init__(
        self,
        router,
        upgrade=None,
        log=None,
        tls=None,
        max_connections=None,
        max_connections_per_peer=MAX_CONNECTIONS_PER_PEER,
    ):
        if tls is not None and not hasattr(asyncio.StreamWriter, "start_tls"):
            raise RuntimeError("serving TLS needs Python 3.11 or newer")
        self.router = router
        self.upgrade = upgrade
        self.log = log or Log("error")
        self.tls = tls
        self.max_connections = max_connections or default_max_connections()
        self.max_connections_per_peer = max_connections_per_peer
        self.connections = 0
        self._per_peer = {}  # peer address -> its open connections
        self.metrics = {
            "connections_refused_total_cap": 0,
            "connections_refused_peer_cap": 0,
            "http_read_timeouts": 0,
            "http_write_timeouts": 0,
            "tls_handshakes_failed": 0,
            "json_too_deep": 0,
            "bodies_too_large": 0,
            "accept_errors": 0,
        }
        self._refusals = Tally(self.log, "connections_refused")
        self._accept_errors = Tally(self.log, "accept_failed", level="error")
        self._server = None
        self._previous_handler = None
        self._streams = set()  # tasks sending a Stream answer, ended when the server stops

    async def start(self, host, port):
        loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        self._server = await asyncio.start_server(self._serve, host, port)
        return self._server.sockets[0].getsockname()[1]

    async def close(self):
        for task in list(self._streams):
            task.cancel()
        if self._server:
            self._server.close()
            await self._server.wait_closed()
            asyncio.get_running_loop().set_exception_handler(self._previous_handler)

    def _loop_exception(self, loop, context):
        """Accept errors (EMFILE and the like) are one log line per interval with a count;
        asyncio itself retries the accept a second later."""
        if "socket" in context and context.get("message", "").startswith("socket.accept()"):
            self.metrics["accept_errors"] += 1
            self._accept_errors.note(reason=str(context.get("exception")))
        elif self._previous_handler:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    async def _serve(self, reader, writer):
        # Counted before the first await: with TLS, the handshake's first bytes must not be read
        # into `reader` before start_tls takes over the transport.
        peer = writer.get_extra_info("peername")
        address = peer[0] if peer else None
        if self._refused(address, writer):
            return
        self.connections += 1
        self._per_peer[address] = self._per_peer.get(address, 0) + 1
        try:
            if self.tls:
                try:
                    await writer.start_tls(self.tls, ssl_handshake_timeout=REQUEST_TIMEOUT_S)
                except (OSError, asyncio.TimeoutError):
                    self.metrics["tls_handshakes_failed"] += 1
                    return
            await self._requests(reader, writer, peer)
        except (ConnectionError, asyncio.TimeoutError):
            pass
        finally:
            self.connections -= 1
            if self._per_peer[address] == 1:
                del self._per_peer[address]
            else:
                self._per_peer[address] -= 1
            streams.close(writer)

    def _refused(self, address, writer):
        """Whether the connection is past a cap; if so it is answered and closed here."""
        if self.connections >= self.max_connections:
            kind, limit = "total", self.max_connections
        elif self._per_peer.get(address, 0) >= self.max_connections_per_peer:
            kind, limit = "peer", self.max_connections_per_peer
        else:
            return False
        self.metrics[f"connections_refused_{kind}_cap"] += 1
        self._refusals.note(cap=kind, limit=limit, peer=address)
        if not self.tls:
            error = ApiError(
                503,
                "too_many_connections",
                f"The server holds its limit of {limit} connections"
                + (" from your address" if kind == "peer" else "")
                + "; retry in a moment.",
                {"limit": limit},
            )
            writer.write(json_response(503, error_body(error), False, [("Retry-After", 1)]))
        streams.close(writer)
        return True

    async def _requests(self, reader, writer, peer):
        buf = bytearray()
        while True:
            if not buf:  # idle between requests (nothing pipelined)
                try:
                    data = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT_S)
                except asyncio.TimeoutError:
                    return
                if not data:
                    return
                buf.extend(data)
            try:
                request = await asyncio.wait_for(self._read_request(reader, buf), REQUEST_TIMEOUT_S)
            except asyncio.TimeoutError:
                self.metrics["http_read_timeouts"] += 1
                error = ApiError(
                    408,
                    "request_timeout",
                    f"The request did not arrive whole within {REQUEST_TIMEOUT_S} s.",
                )
                writer.write(json_response(408, error_body(error), keep_alive=False))
                return
            except HeadError as e:
                writer.write(
                    json_response(
                        e.status, {"error": "bad_request", "message": str(e)}, keep_alive=False
                    )
                )
                return
            if request is None:
                return
            head, body = request
            if self._upgrades(head):
                await self.upgrade(head, bytes(buf), reader, writer)
                return
            keep_alive = head.headers.get("connection", "").lower() != "close"
            if body is None:
                keep_alive = False
                self.metrics["bodies_too_large"] += 1
                error = ApiError(
                    413,
                    "body_too_large",
                    f"The request body is larger than {self._max_body(head)} bytes.",
                )
                response = json_response(413, error_body(error), keep_alive)
            else:
                response = await self._answer(head, body, peer)
                if isinstance(response, Stream):
                    await self._stream(response, reader, writer)
                    return
            writer.write(response)
            try:
                await streams.drain(writer, WRITE_TIMEOUT_S)
            except asyncio.TimeoutError:
                self.metrics["http_write_timeouts"] += 1
                return
            if not keep_alive:
                return

    async def _read_request(self, reader, buf):
        """-> (head, body) of the next request; body None for an upgrade to `/ws/device` (read
        no further) or for a body over its route's limit (not read); None at the end of the
        stream."""
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
            head = server.parse_request_head(done.value)
        if self._upgrades(head) or head.content_length > self._max_body(head):
            return head, None
        while len(buf) < head.content_length:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("body cut short")
            buf.extend(data)
        body = bytes(buf[: head.content_length])
        del buf[: head.content_length]
        return head, body

    async def _stream(self, stream, reader, writer):
        fields = [
            ("Content-Type", stream.content_type),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
            *stream.headers,
        ]
        writer.write(server.response_head(200, fields))
        task = asyncio.current_task()
        self._streams.add(task)
        # The client sends nothing more: the end of its side means it left (closed the page, or
        # reconnected), and the stream ends now rather than at its next write.
        left = asyncio.ensure_future(reader.read(1))

        def end(read):
            # The end of its side, or a reset, is the client leaving.
            if not read.cancelled() and (read.exception() is not None or read.result() == b""):
                task.cancel()

        left.add_done_callback(end)
        try:
            await streams.drain(writer, WRITE_TIMEOUT_S)
            async for chunk in stream.chunks:
                writer.write(chunk)
                await streams.drain(writer, WRITE_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.metrics["http_write_timeouts"] += 1
        except asyncio.CancelledError:
            if not left.done() and (not self._server or self._server.is_serving()):
                raise  # neither the client leaving nor the server stopping: let it go on up
        finally:
            left.cancel()
            self._streams.discard(task)
            await stream.chunks.aclose()

    def _max_body(self, head):
        return self.router.max_body(head.method, head.path.partition("?")[0])

    def _upgrades(self, head):
        return self.upgrade and head.path.split("?", 1)[0] == "/ws/device"

    async def _answer(self, head, body, peer):
        """The whole response for one request."""
        try:
            request = Request(head, body, peer)
            handler, request.params = self.router.match(request.method, request.path)
            status, obj = await handler(request)
        except ApiError as e:
            status, obj = e.status, error_body(e)
            if isinstance(e, JsonTooDeep):
                self.metrics["json_too_deep"] += 1
            if status in (401, 403, 409):  # who tried what they may not do
                self.log.warning(
                    "api_refused",
                    status=status,
                    error=e.code,
                    method=head.method,
                    path=head.path.split("?", 1)[0],
                    peer=str(peer),
                )
        except Exception:  # noqa: BLE001 - one bad request must not take the port down
            self.log.exception("request failed", method=head.method, path=head.path)
            # What failed is in the log; an answer must not show the server's insides.
            status, obj = (
                500,
                {
                    "error": "internal",
                    "message": "The server failed to answer this request; its log says why.",
                },
            )
        if isinstance(obj, Stream):
            return obj
        if isinstance(obj, Body):
            fields = [
                ("Content-Type", obj.content_type),
                ("Content-Length", len(obj.data)),
                *obj.headers,
            ]
            return server.response_head(status, fields) + obj.data
        return json_response(status, obj)
