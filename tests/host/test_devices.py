"""The /ws/device endpoint against a unit that authenticates and then falls silent, and what
it takes of the bridge a unit on USB says it came through."""

import pytest

from host.devices import bridge_via
from tests.conftest import wait_for
from tools import hostile, provision

HEARTBEAT_S = 1  # the `server` fixture's


async def authenticate_then_listen(url, device_id, secret):
    """Log in as the unit, send no heartbeat, answer nothing -> (seconds until closed, code)."""
    return await hostile.listen_until_closed(await hostile.log_in(url, device_id, secret))


def test_a_unit_silent_for_three_heartbeats_is_closed_and_goes_offline(server, background):
    admin = server.admin()
    admin.post("/api/locations", {"location_id": "shop-1", "name": "Shop", "policy": "hybrid"})
    device_id, secret = "qrf-00000000beef", provision.new_secret()
    admin.post("/api/devices", {"device_id": device_id, "secret": secret, "location_id": "shop-1"})

    silent_s, code = background.run(
        authenticate_then_listen(server.device_url, device_id, secret), timeout=30
    )

    assert code == 1001
    assert 3 * HEARTBEAT_S <= silent_s < 5 * HEARTBEAT_S
    wait_for(
        lambda: admin.get("/api/devices")["devices"][0]["status"] == "offline",
        what=f"{device_id} to be offline",
    )


@pytest.mark.parametrize(
    "claimed, via",
    [
        ("bridge@till-3", "bridge@till-3"),
        ("bridge@" + "t" * 73, "bridge@" + "t" * 73),  # 80 characters
        ("bridge@" + "t" * 74, None),
        ("bridge@", None),
        ("till-3", None),
        ("BRIDGE@till-3", None),
        ("bridge@till 3", None),
        ("bridge@till-3, bridge@till-4", None),  # the field twice
        ("bridge@caf\u00e9", None),
        (None, None),
    ],
)
def test_a_via_is_bridge_at_a_host_in_visible_ascii_of_80_characters_at_most(claimed, via):
    assert bridge_via(claimed) == via
