"""Dashboard logins: a signed cookie instead of a token in every request.

A person logs in at `/login` with the admin token or the read-only operator token; the answer
sets `qrfleet_login=ROLE.EXPIRES.MAC`, where MAC is an HMAC-SHA256 of `ROLE.EXPIRES` keyed by
a digest of that role's token. No state is kept, so any instance of a cluster (they share the
tokens) accepts a login made on another, and changing a token ends every login made with it.

The cookie is HttpOnly and SameSite=Strict; a request that changes something with it must also
come from the dashboard's own origin (`same_origin`), which a page elsewhere cannot fake.
"""

import hashlib
import hmac
import time

COOKIE = "qrfleet_login"
LOGIN_S = 12 * 3600
ROLES = ("admin", "operator")


def _mac(role, expires, token):
    key = hashlib.sha256(b"qrfleet login " + token.encode()).digest()
    return hmac.new(key, f"{role}.{expires}".encode(), hashlib.sha256).hexdigest()


def issue(role, token, now=None, lifetime_s=LOGIN_S):
    """The cookie value for a login as `role`, made with that role's `token`."""
    expires = int((time.time() if now is None else now) + lifetime_s)
    return f"{role}.{expires}.{_mac(role, expires, token)}"


def role_of(value, tokens, now=None):
    """The role a cookie value logs in as, or None if it is forged, expired or made with a
    token that changed since. `tokens`: role -> its token (None: that role has no token)."""
    role, _, rest = value.partition(".")
    expires, _, mac = rest.partition(".")
    token = tokens.get(role)
    if role not in ROLES or not token or not expires.isdigit():
        return None
    if int(expires) <= (time.time() if now is None else now):
        return None
    return role if hmac.compare_digest(mac, _mac(role, int(expires), token)) else None


def set_cookie(value, secure, max_age=LOGIN_S):
    """The Set-Cookie field of a login (max_age 0 logs out)."""
    flags = "; Secure" if secure else ""
    return (
        "Set-Cookie",
        f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{flags}",
    )


def same_origin(req):
    """Whether a browser sent `req` from a page of this server (the Origin field names it)."""
    origin = req.headers.get("origin", "")
    host = req.headers.get("host", "")
    return bool(host) and origin.partition("://")[2] == host
