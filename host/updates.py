"""A release sent to one unit over its session, and the proof that ends a unit's trial.

The unit's side is firmware/ota/update.py (docs/updates.md). `push` offers the release, then
sends what the unit says it lacks, one chunk per command, as large as the unit's messages
take, and switches it to the new version; the unit restarts into it on trial. The first offer
restarts the unit into update mode (firmware/ota/mode.py), where its heap is the
download's, and a whole manifest restarts it once more, to check the signature before its
network takes a share of the heap; each next session's push goes on. After a dropped session or a power cut,
pushing again resumes where the unit stands. Chunks go only while no
transaction holds the unit, so a sale never waits behind an update, and so does the switch.

`prove_trial` is what a unit on trial waits for: a QR it drew that the server verified, then
`update_commit`. A unit whose trial is never proven goes back to its old version by itself.
"""

import asyncio
import base64

from firmware.proto import auth, messages
from host.devices import CommandFailed, command_text

OFFER_TIMEOUT_S = 10
CHUNK_TIMEOUT_S = 10
IDLE_POLL_S = 0.2
BUSY_PAUSE_S = 0.2
IDLE_WAIT_S = 600  # a unit busy selling this long is left for a later attempt
# A unit that asks for the same bytes again and again (its flash corrupts what it writes, its
# heap is too short for the messages) is given up after this many times the release's chunks.
_RESENDS = 2


class UpdateFailed(Exception):
    """The unit did not take the release; the message says why (the unit's words if it said),
    `.code` the unit's error code."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class UnitBusy(UpdateFailed):
    """Transactions kept the unit busy for IDLE_WAIT_S: nothing is wrong with it or the
    release; try again later."""


def chunk_size(max_message):
    """The most bytes one update_chunk carries to a unit that takes `max_message` bytes."""
    probe = command_text("update_chunk", file=0xFFFF, offset=0x7FFFFFFF, data="AAAA")
    room = max_message - (len(probe.encode()) - 4) - auth.SEAL_OVERHEAD
    return room // 4 * 3


async def push(session, release, idle):
    """Send `release` (host.releases.Release) to the unit of `session` (host.devices
    DeviceSession) and switch it over; `idle()` -> True while no transaction holds the unit.
    Returns the unit's state: "installing" (it restarts into the release), or "restarting" (it
    restarts into update mode, or to check the manifest it took: push again to its next
    session). Raises UpdateFailed."""
    blobs = [release.manifest_text.encode()] + [data for _, data in release.files]
    size = chunk_size(session.max_message)
    allowed = _RESENDS * sum(len(b) // size + 1 for b in blobs)
    ack = await _offer(session, release)
    while ack["state"] != "ready":
        if ack["state"] in ("restarting", "checking"):  # into update mode; to check the manifest
            return "restarting"
        file, offset = ack.get("file"), ack.get("offset")
        if not (isinstance(file, int) and 0 <= file < len(blobs)) or not (
            isinstance(offset, int) and 0 <= offset < len(blobs[file])
        ):
            raise UpdateFailed(f"the unit asked for {file}:{offset}, which the release lacks")
        allowed -= 1
        if allowed < 0:
            raise UpdateFailed("the unit keeps asking for what it was sent (flash failing?)")
        await _until_idle(idle)
        try:
            ack = await _command(
                session,
                "update_chunk",
                CHUNK_TIMEOUT_S,
                file=file,
                offset=offset,
                data=base64.b64encode(blobs[file][offset : offset + size]).decode(),
            )
        except UpdateFailed as e:
            if e.code == messages.BUSY:  # out of heap for that message: the unit collected
                await asyncio.sleep(BUSY_PAUSE_S)
                continue
            if e.code != messages.UPDATE_FAILED:
                raise
            ack = await _offer(session, release)  # a file arrived corrupted: from its start
    await _until_idle(idle)
    return (await _command(session, "update_switch", OFFER_TIMEOUT_S))["state"]


async def _offer(session, release):
    ack = await _command(
        session,
        "update_offer",
        OFFER_TIMEOUT_S,
        version=release.version,
        size=len(release.manifest_text.encode()),
        sig=release.signature,
        min_free=release.manifest["min_free"],
    )
    session.hub.log.info(
        "update_offered",
        device_id=session.device_id,
        version=release.version,
        state=ack["state"],
        file=ack.get("file"),
        offset=ack.get("offset"),
    )
    return ack


async def _command(session, kind, timeout_s, **fields):
    try:
        return await session.command(kind, timeout_s, **fields)
    except CommandFailed as e:
        raise UpdateFailed(f"{e.code}: {e.message}", e.code) from None


async def _until_idle(idle):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + IDLE_WAIT_S
    while not await idle():
        if loop.time() > deadline:
            raise UnitBusy(f"the unit was busy with sales for {IDLE_WAIT_S} s")
        await asyncio.sleep(IDLE_POLL_S)


def check_payload(device_id, version):
    """What the QR a unit on trial draws to prove itself encodes: nothing a customer can pay."""
    return f"qrfleet://check?device={device_id}&version={version}"


async def prove_trial(session, expected):
    """Have the unit on trial draw a check QR and commit its version once it drew exactly
    `expected` (host.symbols.Symbol of check_payload). Raises UpdateFailed."""
    version = session.update["version"]
    ack = await _command(
        session,
        "show_qr",
        OFFER_TIMEOUT_S,
        payload=check_payload(session.device_id, version),
        caption=f"update {version}",
    )
    if not expected.drawn_in(ack):
        raise UpdateFailed(f"version {version} drew a different QR than the payload encodes")
    await _command(session, "update_commit", OFFER_TIMEOUT_S)
