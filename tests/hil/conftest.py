from tools.background import wait_for
from tools.vboard.screen import wait_for_qr


def pairing_text(unit, timeout=20):
    """What the unit's pairing QR says, read off its screen as a cashier's phone would."""
    return wait_for_qr(unit.screen_path, "qrfleet://pair?", timeout)


def link(agent, unit):
    return agent.link(pairing_text(unit))


def on_screen(unit, payload, timeout=10):
    """True once the unit's screen shows a QR reading exactly `payload`."""
    try:
        wait_for(lambda: payload in unit.screen(), timeout, f"{unit.id} to show the QR")
        return True
    except TimeoutError:
        return False
