import functools

import pytest

from firmware.net import ws
from tests.conftest import wait_for
from tools import provision
from tools.serverproc import running_server
from tools.simdevice import SimulatedUnit


@pytest.fixture
def server(tmp_path):
    with running_server(tmp_path, heartbeat_s=1) as srv:
        yield srv


class Shop:
    """A location with agents and simulated units on a running server."""

    def __init__(self, server, background, location="shop-1", policy="hybrid"):
        self.server = server
        self.background = background
        self.admin = server.admin()
        self.location = location
        self.admin.post(
            "/api/locations", {"location_id": location, "name": "Shop", "policy": policy}
        )
        self.units = []

    def agent(self, agent_id):
        doc = self.admin.post(
            "/api/agents", {"agent_id": agent_id, "name": agent_id, "location_id": self.location}
        )
        return self.server.client(doc["token"])

    def unit(self, n, online=True, kind=SimulatedUnit, url=None, via=None):
        """Unit `n`, registered, connecting to the server (or to `url`); with `via`, its
        upgrade requests say `X-Qrfleet-Via: <via>`, as `qrfleet bridge`'s do for a unit on a
        USB cable (any text, also one a bridge would not send)."""
        device_id = f"qrf-00000000{n:04x}"
        secret = provision.new_secret()
        self.admin.post(
            "/api/devices", {"device_id": device_id, "secret": secret, "location_id": self.location}
        )
        unit = kind(device_id, secret, [url or self.server.device_url])
        if via is not None:
            unit.session.connect = functools.partial(ws.connect, headers=[("X-Qrfleet-Via", via)])
        self.units.append(unit)
        if online:
            self.start(unit)
        return unit

    def start(self, unit):
        self.background.call(unit.start)
        wait_for(
            lambda: unit.shown or unit.online and unit.screen != "booting",
            what=f"{unit.device_id} to come online",
        )

    def stop(self, unit):
        self.background.run(unit.stop())

    def link(self, agent, agent_id, unit):
        wait_for(
            lambda: unit.shown and unit.shown[-1][0] == "pairing",
            what=f"{unit.device_id} to show its pairing QR",
        )
        return agent.post(f"/api/agents/{agent_id}/devices", {"pairing": unit.shown[-1][1]})


@pytest.fixture
def shop(server, background):
    shop = Shop(server, background)
    yield shop
    for unit in shop.units:
        if not unit.task.done():
            shop.stop(unit)
