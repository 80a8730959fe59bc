"""Headless Chromium for tests and pictures: Debian's `chromium` package, driven by Playwright.

Nothing here downloads a browser build (Playwright's own `playwright install` is never run):
`install()` puts Debian's package in place with apt-get, and `launch()` hands Playwright that
executable. The flags keep Chromium from calling out on its own (sync, component updates,
field trials, QUIC); on a machine whose network reaches only package registries those calls
would just fail, many at a time, at every start.

    python -m tools.browser install            Debian's chromium, with apt-get where missing
    python -m tools.browser screenshot PNG     the dashboard of a small virtual fleet, with a
                                               unit showing a payment QR (docs/img/dashboard.png)
"""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tools.background import BackgroundLoop, wait_for
from tools.serverproc import running_server
from tools.vboard import fleet
from tools.vboard.screen import wait_for_qr

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)  # and a fresh --user-data-dir, which Playwright makes (and removes) per launch
VIEWPORT = {"width": 1280, "height": 800}
_APT_TIMEOUT_S = 900
_ACTION_TIMEOUT_MS = 10_000  # a click or a fill on a page of this machine's own server


class BrowserError(Exception):
    """Chromium is missing and cannot be installed here; the message says how to get it."""


def find():
    """The path of Debian's Chromium, or None where it is not installed."""
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else None


def version():
    """What Chromium says of its version ("Chromium 156.0.8078.114 built on Debian ...")."""
    done = subprocess.run(
        [CHROMIUM, "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    return done.stdout.strip()


def install(say=print):
    """Debian's chromium package, installed with apt-get (as root) where it is missing; returns
    the executable's path. Runs apt-get only when Chromium is not there yet."""
    if find():
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise BrowserError(
            f"no Chromium at {CHROMIUM}: install Debian's chromium package as root "
            "(apt-get install --no-install-recommends chromium), then run this again"
        )
    say("Chromium: not installed; installing Debian's chromium package with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (
        ["apt-get", "update", "-qq"],  # a fresh machine's package lists may be empty or old
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ):
        done = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_APT_TIMEOUT_S,
        )
        if done.returncode != 0:
            raise BrowserError(
                f"{' '.join(argv)} failed with exit code {done.returncode}:\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )
    if not find():
        raise BrowserError(f"apt-get installed chromium, but there is no {CHROMIUM}")
    return CHROMIUM


@contextmanager
def launch():
    """A headless Chromium (a Playwright `Browser`), closed on exit."""
    if not find():
        raise BrowserError(f"no Chromium at {CHROMIUM}: `make browser` installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(FLAGS)
        )
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(chromium, base_url, viewport=VIEWPORT):
    """A page in a new, cookie-less context, with relative URLs resolved against `base_url`.
    An https:// server here has a certificate from the harness's own CA, which Chromium does
    not know: the page accepts it."""
    context = chromium.new_context(
        base_url=base_url,
        viewport=viewport,
        ignore_https_errors=base_url.startswith("https://"),
    )
    context.set_default_timeout(_ACTION_TIMEOUT_MS)
    return context.new_page()


def log_in(page, token):
    """Log in to the dashboard at /login with `token` (admin or operator) as a person would:
    type it in the form and submit. Returns once the overview has loaded."""
    answer = page.goto("/login")
    if not answer.ok:
        raise BrowserError(f"GET /login answered {answer.status}: is the dashboard served there?")
    page.fill("#token", token)
    with page.expect_navigation():
        page.click("#login button[type=submit]")
    if page.locator("#login").count():
        alert = page.locator("p[role=alert]")
        raise BrowserError(
            f"the dashboard refused the login: {alert.inner_text() if alert.count() else '?'}"
        )


def read_qr(png, scale=4):
    """Texts of the QR codes zxing-cpp finds in a PNG a browser took (scaled up, nearest
    neighbour, so a small screen's modules stay sharp squares)."""
    import zxingcpp
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        img = img.convert("L")
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return [r.text for r in zxingcpp.read_barcodes(img)]


# -- the README's picture of the dashboard -------------------------------------------------

_SHOP = "demo-shop"
_TOKEN = "screenshot-admin"
# Fixed eFuse MACs (locally administered), so the picture shows the same unit ids every time.
_MACS = ("02:5e:00:00:00:01", "02:5e:00:00:00:02", "02:5e:00:00:00:03")
_README_VIEWPORT = {"width": 980, "height": 600}  # three cards side by side, nothing beside
_PAYLOAD = "upi://pay?pa=demo-shop@bank&pn=Demo%20Shop&am=12.50&cu=INR&tn=till-1-sale-1"


def screenshot_dashboard(out, say=print):
    """The dashboard's overview as a PNG at `out`: a server on SQLite and three virtual boards
    at one shop; till-1's unit shows a payment QR, till-2's is ready, the pool unit has lost
    power."""
    from playwright.sync_api import expect

    with tempfile.TemporaryDirectory(prefix="qrfleet-screenshot-") as tmp:
        tmp = Path(tmp)
        for mac, board_dir in zip(_MACS, fleet.board_dirs(tmp / "boards", len(_MACS)), strict=True):
            board_dir.mkdir(parents=True)
            (board_dir / "efuse.json").write_text(json.dumps({"mac": mac}) + "\n")
        with running_server(tmp, _TOKEN, server_id="shop-server", heartbeat_s=2) as server:
            admin = server.admin()
            admin.post("/api/locations", {"location_id": _SHOP, "name": "Demo shop"})
            tills = {}
            for agent_id in ("till-1", "till-2"):
                doc = admin.post(
                    "/api/agents", {"agent_id": agent_id, "name": agent_id, "location_id": _SHOP}
                )
                tills[agent_id] = server.client(doc["token"])
            loop = BackgroundLoop()
            boards = []
            try:
                provisioning = fleet.Provisioning([server.url], _TOKEN, _SHOP)
                boards = loop.run(
                    fleet.start_boards(tmp / "boards", len(_MACS), provisioning=provisioning), 120
                )
                say(
                    f"{len(boards)} virtual boards at {_SHOP}: "
                    + ", ".join(b.device_id for b in boards)
                )
                for (agent_id, till), board in zip(tills.items(), boards, strict=False):
                    pairing = wait_for_qr(board.dir / "display.pbm", "qrfleet://pair?", 30)
                    till.post(f"/api/agents/{agent_id}/devices", {"pairing": pairing})
                pool = boards[2]
                loop.run(pool.power_off())
                wait_for(
                    lambda: admin.get(f"/api/devices/{pool.device_id}")["status"] == "offline",
                    20,
                    f"{pool.device_id} offline",
                )
                shown = tills["till-1"].post(
                    "/api/agents/till-1/qr",
                    {"payload": _PAYLOAD, "caption": "12.50 INR", "ttl_s": 600},
                )
                with launch() as chromium:
                    page = new_page(chromium, server.url, _README_VIEWPORT)
                    log_in(page, _TOKEN)
                    card = page.locator(f'article.unit[data-device="{shown["device_id"]}"]')
                    expect(card).to_have_attribute("data-screen", "payment", timeout=10_000)
                    wait_for(
                        lambda: _PAYLOAD in read_qr(card.locator("img.screen").screenshot()),
                        10,
                        "the payment QR on the dashboard",
                    )
                    Path(out).parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(out), full_page=True)
                say(f"the dashboard's overview saved in {out}")
            finally:
                loop.run(_stop_all(boards), 60)
                loop.close()


async def _stop_all(boards):
    for board in boards:  # the one without power too: its port and runner are still open
        await board.stop()


def _say(text):
    print(text, flush=True)  # before a long apt-get, also where the output is a pipe (CI's log)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tools.browser", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="Debian's chromium, installed with apt-get where it is missing")
    shot = sub.add_parser("screenshot", help="the dashboard of a small virtual fleet, as a PNG")
    shot.add_argument("out", type=Path, help="where the PNG goes, e.g. docs/img/dashboard.png")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(_say)
            print(f"Chromium: {version()} at {CHROMIUM}")
        else:
            screenshot_dashboard(args.out, _say)
    except BrowserError as e:
        print(f"tools.browser: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
