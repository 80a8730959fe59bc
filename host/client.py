"""A small client for the qrfleet HTTP API, used by the CLI, the field tools and the tests."""

import json
import urllib.error
import urllib.request


class ApiClientError(Exception):
    """The server refused: `.status`, `.code` and the server's sentence as the message."""

    def __init__(self, status, code, message):
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code
        self.message = message


class ServerUnreachable(ApiClientError):
    def __init__(self, url, reason):
        super().__init__(0, "unreachable", f"The server at {url} cannot be reached: {reason}")


class ApiClient:
    def __init__(self, base_url, token=None, timeout=30, ssl_context=None):
        """`ssl_context` checks an https:// server (default: against the system's CAs)."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ssl_context = ssl_context

    def request(self, method, path, body=None, headers=None):
        """`body` is JSON-encoded, or sent as is when it is bytes (a file that is JSON already)."""
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(
                req, timeout=self.timeout, context=self.ssl_context
            ) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                doc = json.loads(raw)
                raise ApiClientError(
                    e.code, doc.get("error", "?"), doc.get("message", "")
                ) from None
            except ValueError:
                raise ApiClientError(e.code, "http", raw.decode(errors="replace")) from None
        except (urllib.error.URLError, OSError) as e:
            raise ServerUnreachable(self.base_url, getattr(e, "reason", e)) from None
        return json.loads(raw) if raw else {}

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body=None, headers=None):
        return self.request("POST", path, {} if body is None else body, headers)

    def delete(self, path):
        return self.request("DELETE", path)
