"""The dashboard on a running `qrfleet serve`, as a browser sees it over HTTP: logins, pages,
unit screens read back with zxing-cpp, and the API refusing what a login may not do."""

import http.client
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from urllib.parse import urlencode, urlsplit

import pytest
import zxingcpp
from PIL import Image, ImageDraw

from tests.conftest import wait_for
from tools import provision
from tools.serverproc import running_server
from tools.simdevice import SimulatedUnit

OPERATOR_TOKEN = "operator-secret"
PAYMENT = "upi://pay?pa=shop@bank&am=12.50"


@pytest.fixture
def server(tmp_path):  # also the server of tests/host/conftest.py's `shop` here
    with running_server(tmp_path, heartbeat_s=1, extra=("--operator-token", OPERATOR_TOKEN)) as srv:
        yield srv


class Answer:
    def __init__(self, response):
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    @property
    def text(self):
        return self.body.decode()

    def json(self):
        return json.loads(self.body)


class Browser:
    """A browser's side of the dashboard: its login cookie, and the Origin it sends with a
    change (its own, unless told otherwise). Redirects are not followed: tests look at them."""

    def __init__(self, url):
        self.url = url
        self.address = urlsplit(url).netloc
        self.cookie = None

    def request(self, method, path, body=None, headers=None, origin=True):
        fields = dict(headers or {})
        if self.cookie:
            fields["Cookie"] = self.cookie
        if origin is True and method != "GET":
            fields["Origin"] = self.url
        elif isinstance(origin, str):
            fields["Origin"] = origin
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            fields["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.address, timeout=10)
        try:
            conn.request(method, path, body, fields)
            return Answer(conn.getresponse())
        finally:
            conn.close()

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body=None, origin=True):
        return self.request("POST", path, {} if body is None else body, origin=origin)

    def log_in(self, token):
        answer = self.request(
            "POST",
            "/login",
            urlencode({"token": token}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        cookie = answer.headers.get("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return answer


def logged_in(server, token):
    browser = Browser(server.url)
    assert browser.log_in(token).status == 303
    return browser


class Page(HTMLParser):
    """The elements of a page, each as (tag, attributes, the location section it is in), and
    the text of each unit card's [data-field] elements."""

    def __init__(self, text):
        super().__init__()
        self.elements = []
        self.fields = {}  # (device_id, field) -> text
        self._location = None
        self._unit = None
        self._field = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and "data-location" in attrs:
            self._location = attrs["data-location"]
        if tag == "article":
            self._unit = attrs.get("data-device")
        if "data-field" in attrs:
            self._field = (self._unit, attrs["data-field"])
            self.fields[self._field] = ""
        self.elements.append((tag, attrs, self._location))

    def handle_endtag(self, tag):
        if tag == "section":
            self._location = None
        self._field = None

    def handle_data(self, data):
        if self._field:
            self.fields[self._field] += data

    def find(self, tag, **attrs):
        return [
            (a, loc)
            for t, a, loc in self.elements
            if t == tag
            and all(a.get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items())
        ]


def decode_svg(svg, scale=3):
    """The QR texts zxing-cpp reads off a screen SVG, drawn with Pillow. No SVG rasteriser is
    installed, so this draws the shapes the server's screens are made of (host/dashboard/
    screen.py): rects and the path of dark module runs; text is left out."""
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    width, height = int(root.get("width")), int(root.get("height"))
    img = Image.new("L", (width * scale, height * scale), 255)
    draw = ImageDraw.Draw(img)

    def box(x, y, w, h, fill):
        grey = 0 if fill == "#000" else 255
        draw.rectangle((x * scale, y * scale, (x + w) * scale - 1, (y + h) * scale - 1), grey)

    for el in root.iter():
        if el.tag == f"{ns}rect" and el.get("fill-opacity") is None:
            box(*(int(el.get(k, 0)) for k in ("x", "y", "width", "height")), el.get("fill"))
        elif el.tag == f"{ns}path":
            for x, y, w, h in re.findall(r"M(\d+) (\d+)h(\d+)v(\d+)h-\d+z", el.get("d")):
                box(int(x), int(y), int(w), int(h), el.get("fill"))
    return [r.text for r in zxingcpp.read_barcodes(img)]


def register(shop, device_id, **fields):
    """A unit registered and never started (offline) -> its id."""
    shop.admin.post(
        "/api/devices", {"device_id": device_id, "secret": provision.new_secret(), **fields}
    )
    return device_id


class RebootUnit(SimulatedUnit):
    reboots = 0

    def handle(self, msg):
        if msg["type"] == "reboot":
            self.reboots += 1
        return super().handle(msg)


def test_the_admin_and_operator_tokens_log_in_with_a_cookie_and_a_wrong_one_does_not(server):
    browser = Browser(server.url)
    page = browser.get("/login")
    assert page.status == 200
    form = Page(page.text)
    assert form.find("form", id="login", method="post", action="/login")
    assert form.find("input", name="token", type="password", id="token")

    wrong = browser.log_in("not-a-token")
    assert wrong.status == 401
    assert 'role="alert"' in wrong.text and Page(wrong.text).find("form", id="login")
    assert "Set-Cookie" not in wrong.headers and browser.cookie is None

    for token, role in ((server.admin_token, "admin"), (OPERATOR_TOKEN, "operator")):
        browser = Browser(server.url)
        answer = browser.log_in(token)
        assert (answer.status, answer.headers["Location"]) == (303, "/")
        cookie = answer.headers["Set-Cookie"]
        assert cookie.startswith(f"qrfleet_login={role}.")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
        overview = browser.get("/")
        assert overview.status == 200
        assert f"Logged in as {role}" in overview.text
        assert overview.headers["Cache-Control"] == "no-store"
        assert "default-src 'self'" in overview.headers["Content-Security-Policy"]
        scripts = Page(overview.text).find("script")
        assert scripts and all(a.get("src") for a, _ in scripts)  # none inline

    out = browser.post("/logout")
    assert (out.status, out.headers["Location"]) == (303, "/login")
    assert "Max-Age=0" in out.headers["Set-Cookie"]


def test_without_a_login_pages_send_the_browser_to_log_in(server):
    browser = Browser(server.url)
    for path in ("/", "/units/qrf-000000000001"):
        answer = browser.get(path)
        assert (answer.status, answer.headers["Location"]) == (303, "/login"), path
    assert browser.get("/units/qrf-000000000001/screen.svg").status == 401
    browser.cookie = "qrfleet_login=admin.99999999999.0123abcd"  # forged
    assert browser.get("/").status == 303
    # What the login page itself needs is served to anyone.
    for name, kind in (("dashboard.css", "text/css"), ("dashboard.js", "text/javascript")):
        answer = browser.get(f"/static/{name}")
        assert answer.status == 200 and answer.headers["Content-Type"].startswith(kind)
    assert browser.get("/static/nothing.js").status == 404


def test_an_address_guessing_tokens_waits_even_with_the_right_one(server):
    browser = Browser(server.url)
    for _ in range(10):
        assert browser.log_in("guess").status == 401
    answer = browser.log_in(server.admin_token)
    assert answer.status == 429 and 'role="alert"' in answer.text
    assert "Set-Cookie" not in answer.headers
    assert server.admin().get("/api/metrics")["refusals"]["unauthorized"] == 10


def test_the_overview_shows_each_location_with_its_units_and_their_status(shop):
    online = shop.unit(1)
    offline = register(shop, "qrf-asleep", location_id=shop.location)
    shop.admin.post("/api/locations", {"location_id": "shop-2", "name": "Second shop"})
    loose = register(shop, "qrf-loose", name="Spare <unit>")
    browser = logged_in(shop.server, shop.server.admin_token)

    answer = browser.get("/")
    page = Page(answer.text)
    sections = [a["data-location"] for a, _ in page.find("section", class_="location")]
    assert sections == ["shop-1", "shop-2", ""]
    units = {a["data-device"]: (a, loc) for a, loc in page.find("article", class_="unit")}
    assert {d: loc for d, (_, loc) in units.items()} == {
        online.device_id: "shop-1",
        offline: "shop-1",
        loose: "",
    }
    assert units[online.device_id][0]["data-status"] == "online"
    assert page.fields[online.device_id, "status"] == "Online"
    assert units[offline][0]["data-status"] == "offline"
    assert page.fields[offline, "status"] == "Offline"
    wait_for(  # from the unit's first heartbeat
        lambda: Page(browser.get("/").text).fields[online.device_id, "rssi"] == "-50 dBm",
        what="the unit's signal strength",
    )
    assert "Spare &lt;unit&gt;" in answer.text  # a name is text, never markup
    for device_id in units:
        assert page.find("a", href=f"/units/{device_id}")
        (img, _), *_ = [
            (a, loc) for a, loc in page.find("img", class_="screen") if device_id in a["src"]
        ]
        assert img["src"] == f"/units/{device_id}/screen.svg" and img["alt"]


def test_a_units_screen_shows_the_very_qr_it_verified_and_how_the_sale_ended(shop):
    till = shop.agent("till-1")
    unit = shop.unit(1)
    browser = logged_in(shop.server, shop.server.admin_token)
    screen = f"/units/{unit.device_id}/screen.svg"

    wait_for(lambda: unit.shown and unit.shown[-1][0] == "pairing", what="the pairing QR")
    wait_for(lambda: decode_svg(browser.get(screen).body) == [unit.shown[-1][1]], what="pairing")

    shop.link(till, "till-1", unit)
    sale = till.post("/api/agents/till-1/qr", {"payload": PAYMENT, "caption": "12.50 EUR"})
    answer = browser.get(screen)
    assert answer.headers["Content-Type"] == "image/svg+xml"
    assert decode_svg(answer.body) == [PAYMENT]
    assert "12.50 EUR" in answer.text
    card = Page(browser.get("/").text).find("article", data_device=unit.device_id)[0][0]
    assert card["data-screen"] == "payment"

    till.post(f"/api/txns/{sale['txn_id']}/complete", {})
    wait_for(lambda: ">PAID<" in browser.get(screen).text, what="the result on the screen")

    shop.stop(unit)
    wait_for(lambda: ">offline<" in browser.get(screen).text, what="the screen to be offline")


def test_a_card_says_how_its_unit_reaches_the_server_and_a_lost_usb_units_page_what_to_check(
    shop,
):
    tethered = shop.unit(1, via="bridge@till-3")
    wireless = shop.unit(2)
    asleep = register(shop, "qrf-asleep", location_id=shop.location)
    browser = logged_in(shop.server, shop.server.admin_token)

    fields = Page(browser.get("/").text).fields
    assert fields[tethered.device_id, "via"] == "USB via bridge@till-3"
    assert fields[wireless.device_id, "via"] == "Wi-Fi"
    assert fields[asleep, "via"] == "—"  # never seen
    ((checks, _),) = Page(browser.get(f"/units/{tethered.device_id}").text).find("ol", id="checks")
    assert "hidden" in checks  # online: nothing to check

    shop.stop(tethered)
    wait_for(
        lambda: Page(browser.get("/").text).fields[tethered.device_id, "status"] == "Offline",
        what="the unit on USB to be offline",
    )
    answer = browser.get(f"/units/{tethered.device_id}")
    page = Page(answer.text)
    ((checks, _),) = page.find("ol", id="checks")
    assert "hidden" not in checks
    assert len(page.find("li")) == 4
    assert "It reaches the server through the PC till-3" in answer.text
    assert "Is the bridge running on till-3?" in answer.text
    assert page.fields[tethered.device_id, "via"] == "USB via bridge@till-3"  # its last session


def test_the_operator_sees_a_unit_but_no_actions_and_the_api_refuses_them(shop):
    unit = shop.unit(1)
    admin = logged_in(shop.server, shop.server.admin_token)
    operator = logged_in(shop.server, OPERATOR_TOKEN)
    path = f"/units/{unit.device_id}"

    page = Page(admin.get(path).text)
    actions = {a["data-action"] for a, _ in page.find("button") if "data-action" in a}
    assert actions == {"unlink", "transfer", "pairing", "reboot"}
    assert page.find("dialog", id="confirm")

    answer = operator.get(path)
    page = Page(answer.text)
    assert page.find("p", id="verdict") and "Unit is online but not linked" in answer.text
    assert page.find("table", id="history") and "<td>session</td>" in answer.text
    assert not [a for a, _ in page.find("button") if "data-action" in a]
    missing = operator.get("/units/qrf-nobody")
    assert missing.status == 404 and 'role="alert"' in missing.text
    refused = operator.post(f"/api/devices/{unit.device_id}/reboot")
    assert (refused.status, refused.json()["error"]) == (403, "forbidden")
    refused = operator.post(f"/api/devices/{unit.device_id}/pairing")
    assert refused.status == 403


def test_a_change_sent_with_the_login_from_another_site_is_refused(shop):
    unit = shop.unit(1, kind=RebootUnit)
    admin = logged_in(shop.server, shop.server.admin_token)
    for origin in ("http://evil.example", False):  # another site; no Origin at all
        answer = admin.post(f"/api/devices/{unit.device_id}/reboot", origin=origin)
        assert (answer.status, answer.json()["error"]) == (403, "forbidden")
    assert unit.reboots == 0


def test_the_admin_reboots_a_unit_from_the_dashboard(shop):
    unit = shop.unit(1, kind=RebootUnit)
    asleep = register(shop, "qrf-asleep", location_id=shop.location)
    admin = logged_in(shop.server, shop.server.admin_token)

    answer = admin.post(f"/api/devices/{unit.device_id}/reboot")
    assert (answer.status, answer.json()) == (202, {"device_id": unit.device_id, "rebooting": True})
    assert unit.reboots == 1
    answer = admin.post(f"/api/devices/{asleep}/reboot")
    assert (answer.status, answer.json()["error"]) == (503, "device_offline")
    assert admin.post("/api/devices/qrf-nobody/reboot").status == 404
