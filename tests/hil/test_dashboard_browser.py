"""The fleet dashboard in a real browser (headless Chromium): a person logs in and watches a unit
lose power, come back and show a payment QR, live, without reloading the page; and the unit's
screen on the dashboard reads back as the very QR its customer scans."""

import time

import pytest

from tools import browser

pytestmark = pytest.mark.slow

_LIVE_MS = 5_000  # an event reaches its card within about a second; slack for a busy machine
_BOOT_MS = 30_000  # a unit's power comes back: it boots and opens a new session


@pytest.fixture
def page(request, server, picture):
    """A page of headless Chromium on the harness's server; when the scenario fails, the page
    as it was then goes to the run report."""
    if browser.find() is None:
        pytest.skip(f"no Chromium at {browser.CHROMIUM}: `make browser` installs it")
    failed_before = request.session.testsfailed
    with browser.launch() as chromium:
        page = browser.new_page(chromium, server.url)
        yield page
        if request.session.testsfailed > failed_before:
            picture("the page when the scenario failed", page.screenshot(full_page=True))


def card(page, unit_id):
    return page.locator(f'article.unit[data-device="{unit_id}"]')


@pytest.mark.parametrize("qrfleet_board", ["virtual:3"], indirect=True)
def test_a_unit_going_offline_coming_back_and_showing_a_payment_updates_its_card_live(
    boards, agents, server, page, picture, record
):
    from playwright.sync_api import expect

    browser.log_in(page, server.admin_token)
    for unit in boards:
        expect(card(page, unit.id)).to_have_attribute("data-status", "online", timeout=_LIVE_MS)
    expect(page.locator("#live")).to_contain_text("Live", timeout=_LIVE_MS)
    page.evaluate("window.sameDocument = true")  # gone if anything reloads the page
    picture("overview after login", page.screenshot(full_page=True))

    unit = boards[0]
    cut = time.monotonic()
    unit.power_off()
    try:
        expect(card(page, unit.id)).to_have_attribute("data-status", "offline", timeout=_LIVE_MS)
        record("offline_on_card_s", round(time.monotonic() - cut, 2))
        picture(f"{unit.id} without power", page.screenshot(full_page=True))
    finally:
        unit.power_on()
    expect(card(page, unit.id)).to_have_attribute("data-status", "online", timeout=_BOOT_MS)
    record("back_on_card_s", round(time.monotonic() - cut, 2))

    (till,) = agents(1)  # nothing linked to it: the location's pool serves it
    payload = f"upi://pay?pa=shop@bank&pn=Dashboard%20Test&am=12.50&cu=INR&tn={till.id}"
    shown = till.show(payload, caption="12.50 INR")
    verified = time.monotonic()
    assert shown["verified"]
    paying = card(page, shown["device_id"])
    expect(paying).to_have_attribute("data-screen", "payment", timeout=_LIVE_MS)
    record("payment_on_card_s", round(time.monotonic() - verified, 2))

    # What the browser drew of the unit's screen, read as a customer's phone would read it.
    screen = paying.locator("img.screen")
    seen = []
    deadline = time.monotonic() + _LIVE_MS / 1000
    while payload not in seen and time.monotonic() < deadline:
        seen = browser.read_qr(screen.screenshot())
    picture(f"{shown['device_id']}'s screen on the dashboard", screen.screenshot())
    picture("a payment QR on the overview", page.screenshot(full_page=True))
    assert seen == [payload]
    assert page.evaluate("window.sameDocument === true"), "the dashboard reloaded the page"
