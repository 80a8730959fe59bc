"""Hostile cashiers on the HTTP API, for the tests and the abuse benchmark (tools/bench/abuse.py).

Each load makes an agent of its own with the admin token, at the location of the unit it is
given, and runs until cancelled.
"""

import asyncio
import random
import string

from firmware.net.session import CommandError
from firmware.proto import messages
from host.client import ApiClientError
from tools.simdevice import SimulatedUnit


class BlankUnit(SimulatedUnit):
    """A unit that refuses at once to draw a payment QR: the server still encodes each one."""

    def handle(self, msg):
        if msg["type"] == "show_qr":
            raise CommandError(messages.RENDER_FAILED, "panel is blank")
        return super().handle(msg)


def large_ecc_h_payload(rng):
    """1,800 alphanumeric characters: a version-40 ECC-H symbol, different every time."""
    return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(1800))


async def _agent_with_unit(server, device_id, secret, agent_id, kind, link):
    """A new agent at the unit's location, the unit online (linked to it if `link`)."""
    admin = server.admin()
    location = (await asyncio.to_thread(admin.get, f"/api/devices/{device_id}"))["location_id"]
    token = (
        await asyncio.to_thread(
            admin.post,
            "/api/agents",
            {"agent_id": agent_id, "name": agent_id, "location_id": location},
        )
    )["token"]
    unit = kind(device_id, secret, [server.device_url])
    unit.start()
    if link:
        await asyncio.to_thread(
            admin.post, f"/api/agents/{agent_id}/devices", {"device_id": device_id}
        )
    return server.client(token), unit


async def _post_forever(client, path, bodies):
    while True:
        try:
            await asyncio.to_thread(client.post, path, next(bodies))
        except ApiClientError:
            pass


async def large_payloads(server, device_id, secret, connections=4):
    """`connections` requests at a time of 1,800-character ECC-H payloads, from an agent whose
    own unit refuses to draw them."""
    client, unit = await _agent_with_unit(server, device_id, secret, "abuser", BlankUnit, True)
    rng = random.Random(1)
    bodies = iter(lambda: {"payload": large_ecc_h_payload(rng), "ecc": "H"}, None)
    try:
        await asyncio.gather(
            *(_post_forever(client, "/api/agents/abuser/qr", bodies) for _ in range(connections))
        )
    finally:
        await unit.stop()


async def pool_hoarder(server, device_id, secret, requests=8):
    """One cashier asking for every pool unit for an hour and for places in the wait queue,
    `requests` at a time; the unit it is given serves the pool."""
    client, unit = await _agent_with_unit(
        server, device_id, secret, "hoarder", SimulatedUnit, False
    )
    body = {"payload": "hold", "ttl_s": 3600, "wait_s": 60}
    try:
        await asyncio.gather(
            *(
                _post_forever(client, "/api/agents/hoarder/qr", iter(lambda: body, None))
                for _ in range(requests)
            )
        )
    finally:
        await unit.stop()
