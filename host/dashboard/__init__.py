"""The live fleet dashboard, served by `qrfleet serve` on its one port: pages for people, built
on the same registry and `device_json` documents as the HTTP API.

    GET  /login, POST /login, POST /logout     log in with the admin or operator token
    GET  /                                     every unit, by location, with its screen
    GET  /units/{device_id}                    one unit: diagnosis, history, admin actions
    GET  /units/{device_id}/screen.svg         what the unit's screen shows now (screen.py)
    GET  /static/{name}                        dashboard.css, dashboard.js

A login is the signed cookie of host/login.py; pages without one send the browser to /login.
The pages are rendered whole on the server (they read without script); static/dashboard.js
then keeps them current from `GET /api/events` and sends the admin's actions to the API, which
checks the cookie (and that the change comes from this origin) itself. A payment QR is
money: nothing here is shown to anyone but the admin and the operator.

Wrong tokens are guesses: each is logged and counted (`refusals` "unauthorized"), and past
LOGIN_GUESSES within a minute from one address, that address waits (host/throttle.py).
"""

from importlib import resources

from host import login
from host.api import device_json
from host.dashboard import pages
from host.dashboard.screen import screen_svg
from host.http import ApiError, Body, parse_query
from host.registry import RegistryError
from host.throttle import GuessThrottle

HTML = "text/html; charset=utf-8"
MAX_LOGIN_FORM = 1024  # bytes of a login form: a token and its name
LOGIN_GUESSES = 10  # wrong tokens from one address within the throttle's window
HISTORY_ENTRIES = 50
# Scripts, styles and pictures only from this server (no inline script, no third party).
CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = (
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def _answer(data, content_type=HTML, *fields):
    return Body(data, content_type, [*fields, *_HEADERS])


def _see_other(location, *fields):
    return 303, _answer(b"", HTML, ("Location", location), *fields)


def _cross_origin(req):
    """A browser sending a form from another site names that site in Origin."""
    return "origin" in req.headers and not login.same_origin(req)


def _static_files():
    """name -> Body of each file in static/, read once (they ship in the package)."""
    files = {}
    for entry in resources.files(__name__).joinpath("static").iterdir():
        content_type = _STATIC_TYPES.get(entry.name[entry.name.rfind(".") :])
        if content_type:
            files[entry.name] = Body(
                entry.read_bytes(),
                content_type,
                [("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff")],
            )
    return files


class Dashboard:
    def __init__(self, server):
        self.server = server
        self.guesses = GuessThrottle(LOGIN_GUESSES)
        self.static = _static_files()

    def mount(self, router):
        router.add("GET", "/login", self.login_page)
        router.add("POST", "/login", self.log_in)
        router.add("POST", "/logout", self.log_out)
        router.add("GET", "/", self._page(self.overview))
        router.add("GET", "/units/{device_id}", self._page(self.unit))
        router.add("GET", "/units/{device_id}/screen.svg", self._picture(self.screen))
        router.add("GET", "/static/{name}", self.static_file)

    # -- who is looking

    def _role(self, req):
        cookie = req.cookie(login.COOKIE)
        return login.role_of(cookie, self.server.role_tokens()) if cookie else None

    def _page(self, handler):
        """A page for a login: without one, to /login; a registry refusal as a page."""

        async def guarded(req):
            role = self._role(req)
            if role is None:
                return _see_other("/login")
            try:
                return await handler(req, role)
            except RegistryError as e:
                return e.status, _answer(pages.error(e.message, role))

        return guarded

    def _picture(self, handler):
        """A picture for a login: without one, 401 (an <img> follows no login redirect)."""

        async def guarded(req):
            if self._role(req) is None:
                raise ApiError(401, "unauthorized", "Log in to the dashboard to see screens.")
            try:
                return await handler(req)
            except RegistryError as e:
                raise ApiError(e.status, e.code, e.message, e.facts) from None

        return guarded

    # -- logging in and out

    async def login_page(self, req):
        return 200, _answer(pages.login())

    async def log_in(self, req):
        def again(status, alert):
            return status, _answer(pages.login(alert))

        if _cross_origin(req):
            return again(403, "This login form was sent from another site; use this server's.")
        address = req.peer[0] if req.peer else None
        wait_s = self.guesses.wait_s(address)
        if wait_s:
            self.server.api.refusals["too_many"] += 1
            return again(
                429, f"Too many wrong tokens from your address: try again in {wait_s:.0f} s."
            )
        if len(req.body) > MAX_LOGIN_FORM:
            return again(413, f"The login form is larger than {MAX_LOGIN_FORM} bytes.")
        token = _form_token(req)
        if not token:
            return again(400, "Enter the admin or operator token.")
        role = self.server.token_role(token)
        if role is None:
            self.server.api.refusals["unauthorized"] += 1
            self.server.log.warning("login_refused", peer=str(address))
            if self.guesses.wrong(address):
                self.server.log.warning(
                    "login_throttled", peer=str(address), wait_s=self.guesses.block_s
                )
            return again(401, "That is neither the admin token nor the operator token.")
        self.server.log.info("logged_in", role=role, peer=str(address))
        cookie = login.set_cookie(login.issue(role, token), secure=self.server.tls is not None)
        return _see_other("/", cookie)

    async def log_out(self, req):
        if _cross_origin(req):
            return 403, _answer(pages.error("Log out from this server's own pages.", None))
        return _see_other("/login", login.set_cookie("", self.server.tls is not None, max_age=0))

    # -- pages

    def _doc(self, status):
        return device_json(status, self.server.hub.session(status.device_id))

    async def overview(self, req, role):
        registry = self.server.registry
        locations = await registry.list_locations()
        docs = [self._doc(s) for s in await registry.list_devices()]
        return 200, _answer(pages.overview(locations, docs, role))

    async def unit(self, req, role):
        device_id = req.params["device_id"]
        registry = self.server.registry
        doc = self._doc(await registry.get_device(device_id))
        verdict = await self.server.doctor(device_id)
        history = await registry.audit(device_id=device_id, limit=HISTORY_ENTRIES)
        agents, locations = [], []
        if role == "admin":  # the choice of agents a unit can be transferred to
            agents, locations = await registry.list_agents(), await registry.list_locations()
        return 200, _answer(pages.unit(doc, verdict, history, agents, locations, role))

    async def screen(self, req):
        # Any query (dashboard.js adds ?v=<event id>) only keeps browsers from reusing a copy.
        doc = self._doc(await self.server.registry.get_device(req.params["device_id"]))
        svg = screen_svg(doc.get("shown"), doc["status"] == "online")
        return 200, _answer(svg, "image/svg+xml")

    async def static_file(self, req):
        body = self.static.get(req.params["name"])
        if body is None:
            raise ApiError(404, "not_found", f"There is no file {req.params['name']} here.")
        return 200, body


def _form_token(req):
    """The `token` field of a login form (application/x-www-form-urlencoded), or None."""
    if not req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    try:
        return parse_query(req.body.decode()).get("token")
    except (UnicodeDecodeError, ApiError):
        return None
