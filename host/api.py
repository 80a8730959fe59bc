"""The HTTP API: what cashier systems, provisioning tools and operators call.

Bearer tokens: the admin token (server config or QRFLEET_ADMIN_TOKEN) may do everything; the
operator token (QRFLEET_OPERATOR_TOKEN) sees what the admin sees and changes nothing; an
agent's token acts for that agent only. The dashboard's login cookie (host/login.py) stands
for the admin or operator token it was made with. Every refusal is `{"error", "message"}`,
plus the facts behind it, with a status an integrator can branch on; a registry refusal carries its own
(`host.registry.errors`). A refused request changes nothing: each registry operation is one
transaction.
"""

import hashlib
import json
import time
import uuid
from collections import Counter

from firmware import qr
from firmware.proto import messages
from host import login
from host.devices import CommandFailed, command_text
from host.http import ApiError, Router
from host.metrics import code_label
from host.registry import (
    ADMIN,
    OPERATOR,
    Actor,
    Forbidden,
    IdempotentRequest,
    InvalidInput,
    NotFound,
    PairingRejected,
    PairingThrottled,
    RegistryError,
    Unauthorized,
    parse_pairing_uri,
)
from host.registry.errors import format_time
from host.releases import ReleaseError, read_bundle
from host.rollouts import assess
from host.symbols import EncoderBusy
from host.throttle import GUESSES_PER_AGENT, GUESSES_PER_UNIT, GuessThrottle

_COMMAND_STATUS = {
    "device_offline": 503,
    "store_unavailable": 503,
    "device_timeout": 504,
    messages.PAYLOAD_TOO_LARGE: 422,
    messages.BAD_MESSAGE: 422,
    messages.BUSY: 503,
}
COMMAND_TIMEOUT_S = 5.0
MAX_WAIT_S = 60.0
MAX_TTL_S = 3600.0
MAX_AUDIT_ENTRIES = 10000
MAX_IDEMPOTENCY_KEY = 255
MAX_RELEASE = 4 * 1024 * 1024  # a release bundle's bytes, the one body larger than MAX_BODY
_ROLES = {"admin": ADMIN, "operator": OPERATOR}


def _field(doc, name, kind, required=True, default=None, check=None, what=""):
    value = doc.get(name, default)
    if value is None and not required:
        return None
    if value is None or not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise InvalidInput(f"Field {name!r} must be {what or kind.__name__}.")
    if check and not check(value):
        raise InvalidInput(f"Field {name!r} must be {what}.")
    return value


def _text(doc, name, limit=200, required=True, default=None):
    return _field(
        doc,
        name,
        str,
        required,
        default,
        lambda v: 0 < len(v) <= limit,
        f"a string of 1 to {limit} characters",
    )


def _seconds(doc, name, default, limit):
    return float(
        _field(
            doc,
            name,
            (int, float),
            False,
            default,
            lambda v: 0 <= v <= limit,
            f"a number of seconds from 0 to {limit:g}",
        )
    )


def device_json(status, session=None, viewer=None):
    """A unit as the API shows it to `viewer` (an Actor; None: the server's own pages). An agent
    sees what another cashier's unit shows only as its kind: a payment QR is that sale's."""
    d = status.device
    heartbeat = d.last_screen or {}  # what the unit's last heartbeat said of itself
    doc = {
        "device_id": d.device_id,
        "name": d.name,
        "status": status.status,
        "agent_id": status.agent_id,
        "location_id": d.location_id,
        "server_id": status.server_id,
        "epoch": status.epoch,
        "txn_id": status.txn_id,
        "firmware": d.firmware,
        "last_seen": format_time(d.last_seen),
        "screen": heartbeat.get("screen"),
        "free_heap": heartbeat.get("free_heap"),
        "rssi": heartbeat.get("rssi"),
        "uptime_s": heartbeat.get("uptime_s"),
        "reset_cause": d.reset_cause,
        "via": d.via,  # "bridge@<host>": a unit on a USB cable; None: on Wi-Fi
        "shown": _shown_to(viewer, status),
        "panel": d.panel,
        "update": _update_json(d.update),
    }
    if session:
        doc["connected_since"] = format_time(session.connected_at)
    return doc


def _update_json(update):
    """Where a unit's update stands: the version it goes to (or came back from), its state,
    why, and the rollout it belongs to."""
    if update is None:
        return None
    return {**update, "at": format_time(update.get("at"))}


def _sentence(text):
    """A refusal's words as the API's sentences go: a capital first, a full stop last."""
    return text[:1].upper() + text[1:].rstrip(".") + "."


def release_json(release):
    return {
        "version": release.version,
        "size": release.size,
        "sha256": release.sha256,
        "published_at": format_time(release.published_at),
    }


def rollout_json(rollout, statuses, units=True):
    """A rollout as the API shows it, with how each wave is doing (`statuses`: device id ->
    DeviceStatus of its units); with `units`, each unit's state, reason and firmware."""
    assessment = assess(rollout, {d: s.device for d, s in statuses.items()})
    waves = []
    for n, (ids, counts) in enumerate(zip(rollout.waves, assessment.waves, strict=True)):
        wave = {"wave": n + 1, "size": len(ids), "states": dict(counts)}
        if units:
            wave["units"] = [_rollout_unit(rollout, statuses[d], assessment) for d in ids]
        waves.append(wave)
    return {
        "rollout_id": rollout.rollout_id,
        "version": rollout.version,
        "location_id": rollout.location_id,
        "steps": list(rollout.steps),
        "abort_after_failures": rollout.abort_after_failures,
        "state": rollout.state,
        "wave": rollout.wave + 1,  # counted from 1, as the waves are
        "reason": rollout.reason,
        "accepted_failures": list(rollout.accepted),
        "created_at": format_time(rollout.created_at),
        "updated_at": format_time(rollout.updated_at),
        "states": dict(sum(assessment.waves, Counter())),
        "waves": waves,
    }


def _rollout_unit(rollout, status, assessment):
    update = status.device.update or {}
    return {
        "device_id": status.device_id,
        "state": assessment.states[status.device_id],
        "reason": update.get("reason") if update.get("version") == rollout.version else None,
        "firmware": status.device.firmware,
        "status": status.status,
    }


def _shown_to(viewer, status):
    shown = status.device.shown
    if shown is None:
        return None
    if viewer is not None and viewer.kind == "agent" and viewer.id != status.agent_id:
        return {"screen": shown.get("screen"), "at": format_time(shown.get("at"))}
    return {**shown, "at": format_time(shown.get("at"))}


class Api:
    """Routes bound to one server: its registry, its device hub and its admin token."""

    def __init__(self, server):
        self.server = server
        self.registry = server.registry
        self.hub = server.hub
        self.router = Router()
        self.refusals = Counter()  # error code -> answers refused with it
        self.agent_guesses = GuessThrottle(GUESSES_PER_AGENT)
        self.unit_guesses = GuessThrottle(GUESSES_PER_UNIT)

        def add(method, pattern, handler, **options):
            self.router.add(method, pattern, self._refusals_as_answers(handler), **options)

        add("GET", "/api/health", self.health)
        add("POST", "/api/locations", self.create_location)
        add("GET", "/api/locations", self.list_locations)
        add("POST", "/api/agents", self.create_agent)
        add("GET", "/api/agents", self.list_agents)
        add("POST", "/api/devices", self.register_device)
        add("GET", "/api/devices", self.list_devices)
        add("GET", "/api/devices/{device_id}", self.get_device)
        add("GET", "/api/devices/{device_id}/doctor", self.doctor)
        add("POST", "/api/devices/{device_id}/transfer", self.transfer)
        add("POST", "/api/devices/{device_id}/pairing", self.pairing)
        add("POST", "/api/devices/{device_id}/reboot", self.reboot)
        add("POST", "/api/agents/{agent_id}/devices", self.link)
        add("DELETE", "/api/agents/{agent_id}/devices/{device_id}", self.unlink)
        add("POST", "/api/agents/{agent_id}/qr", server.metrics.timed_qr(self.show_qr))
        add("GET", "/api/txns/{txn_id}", self.get_txn)
        add("POST", "/api/txns/{txn_id}/complete", self.complete)
        add("POST", "/api/txns/{txn_id}/cancel", self.cancel)
        add("GET", "/api/audit", self.audit)
        add("GET", "/api/events", server.events.endpoint(self._caller))  # host/events.py
        add("GET", "/api/metrics", self.metrics)
        add("POST", "/api/releases", self.publish_release, max_body=MAX_RELEASE)
        add("GET", "/api/releases", self.list_releases)
        add("POST", "/api/rollouts", self.start_rollout)
        add("GET", "/api/rollouts", self.list_rollouts)
        add("GET", "/api/rollouts/{rollout_id}", self.get_rollout)
        for change in ("pause", "resume", "abort"):
            add("POST", f"/api/rollouts/{{rollout_id}}/{change}", self.change_rollout)
        add("GET", "/metrics", server.metrics.endpoint())  # Prometheus (host/metrics.py)

    def _refusals_as_answers(self, handler):
        """The one place a registry refusal, from the handler or anywhere below it (e.g. the
        store going away in the middle of a command), becomes an answer; every refusal is
        counted by its code (`metrics.code_label`: a code a unit made up as `unit_error`)."""

        async def guarded(req):
            try:
                return await handler(req)
            except RegistryError as e:
                self.refusals[code_label(e.code)] += 1
                raise ApiError(e.status, e.code, e.message, e.facts) from None
            except ApiError as e:
                self.refusals[code_label(e.code)] += 1
                raise

        return guarded

    # -- who is asking

    async def _caller(self, req):
        token = req.bearer()
        if not token:
            return self._logged_in(req)
        role = self.server.token_role(token)
        if role:
            return _ROLES[role]
        try:
            agent = await self.registry.authenticate_agent(token)
        except Unauthorized:  # the registry speaks of agent tokens; this may be a wrong admin one
            raise Unauthorized("That token is not valid.") from None
        return Actor.agent(agent.agent_id)

    def _logged_in(self, req):
        """The admin or operator of a dashboard login (host/login.py)."""
        cookie = req.cookie(login.COOKIE)
        if not cookie:
            raise Unauthorized("Send 'Authorization: Bearer <token>' with an admin or agent token.")
        role = login.role_of(cookie, self.server.role_tokens())
        if role is None:
            raise Unauthorized("The login expired or its token changed: log in again.")
        if req.method not in ("GET", "HEAD") and not login.same_origin(req):
            raise Forbidden("A change with a dashboard login must come from the dashboard.")
        return _ROLES[role]

    async def _admin(self, req):
        actor = await self._caller(req)
        if not actor.is_admin:
            if actor == OPERATOR:
                raise Forbidden("The operator token only looks; this needs the admin token.")
            raise Forbidden("Only the admin token may do this.")
        return actor

    async def _overseer(self, req):
        """The admin or the operator: who may see the whole fleet."""
        actor = await self._caller(req)
        if actor not in _ROLES.values():
            raise Forbidden("Only the admin or operator token may see this.")
        return actor

    async def _acting_for(self, req, agent_id):
        """The caller, if it may act for `agent_id` (that agent itself or the admin)."""
        actor = await self._caller(req)
        if not actor.is_admin and actor.id != agent_id:
            raise Forbidden(
                f"This token belongs to agent {actor.id}; it cannot act for {agent_id}."
            )
        return actor

    # -- endpoints

    async def health(self, req):
        return 200, {
            "ok": True,
            "server_id": self.server.server_id,
            "devices_connected": len(self.hub.sessions),
        }

    async def create_location(self, req):
        await self._admin(req)
        doc = req.json()
        loc = await self.registry.create_location(
            _text(doc, "location_id", 64),
            _text(doc, "name", 200),
            _text(doc, "policy", 16, required=False, default="hybrid"),
        )
        return 201, {"location_id": loc.location_id, "name": loc.name, "policy": loc.policy}

    async def list_locations(self, req):
        await self._caller(req)
        locs = await self.registry.list_locations()
        return 200, {
            "locations": [
                {"location_id": x.location_id, "name": x.name, "policy": x.policy} for x in locs
            ]
        }

    async def create_agent(self, req):
        await self._admin(req)
        doc = req.json()
        agent, token = await self.registry.create_agent(
            _text(doc, "agent_id", 64), _text(doc, "name", 200), _text(doc, "location_id", 64)
        )
        return 201, {"agent_id": agent.agent_id, "location_id": agent.location_id, "token": token}

    async def list_agents(self, req):
        await self._overseer(req)
        agents = await self.registry.list_agents()
        return 200, {
            "agents": [
                {"agent_id": a.agent_id, "name": a.name, "location_id": a.location_id}
                for a in agents
            ]
        }

    async def register_device(self, req):
        await self._admin(req)
        doc = req.json()
        device_id = _text(doc, "device_id", 64)
        await self.registry.register_device(
            device_id,
            _text(doc, "secret", 128, required=False),
            _text(doc, "name", 200, required=False),
            _text(doc, "location_id", 64, required=False),
        )
        status = await self.registry.get_device(device_id)
        return 201, device_json(status)

    async def list_devices(self, req):
        actor = await self._caller(req)
        location = None
        if actor.kind == "agent":
            location = (await self.registry.get_agent(actor.id)).location_id
        statuses = await self.registry.list_devices(location)
        return 200, {
            "devices": [device_json(s, self.hub.session(s.device_id), actor) for s in statuses]
        }

    async def get_device(self, req):
        actor = await self._caller(req)
        device_id = req.params["device_id"]
        status = await self.registry.get_device(device_id, actor)
        return 200, device_json(status, self.hub.session(device_id), actor)

    async def link(self, req):
        agent_id = req.params["agent_id"]
        actor = await self._acting_for(req, agent_id)
        doc = req.json()
        if "pairing" in doc:
            device_id, code = parse_pairing_uri(_text(doc, "pairing", 300))
        else:
            device_id = _text(doc, "device_id", 64)
            code = _text(doc, "code", 32, required=not actor.is_admin)
        if actor.is_admin:
            await self.registry.link(agent_id, device_id, code, actor)
        else:
            await self._link_with_code(agent_id, device_id, code, actor)
        await self.server.show_idle(device_id)
        status = await self.registry.get_device(device_id)
        return 201, device_json(status, self.hub.session(device_id))

    async def _link_with_code(self, agent_id, device_id, code, actor):
        """Link, counting wrong codes per agent and per unit: past a few, the guesser waits."""
        guessers = (
            (self.agent_guesses, agent_id, "from agent"),
            (self.unit_guesses, device_id, "for unit"),
        )
        for throttle, key, about in guessers:
            wait_s = throttle.wait_s(key)
            if wait_s:
                raise PairingThrottled(f"{about} {key}", wait_s)
        try:
            await self.registry.link(agent_id, device_id, code, actor)
        except PairingRejected:
            for throttle, key, about in guessers:
                if throttle.wrong(key):
                    self.server.log.warning(
                        "pairing_throttled",
                        guesses=f"{about} {key}",
                        agent_id=agent_id,
                        device_id=device_id,
                        wait_s=throttle.block_s,
                    )
            raise

    async def unlink(self, req):
        agent_id, device_id = req.params["agent_id"], req.params["device_id"]
        actor = await self._acting_for(req, agent_id)
        await self.registry.unlink(agent_id, device_id, actor)
        pairing, shown = await self.server.show_pairing(device_id)
        return 200, {"device_id": device_id, "agent_id": None, "pairing": pairing, "shown": shown}

    async def pairing(self, req):
        """Show a fresh pairing QR on an unlinked unit (e.g. after its code expired)."""
        await self._admin(req)
        device_id = req.params["device_id"]
        pairing, shown = await self.server.show_pairing(device_id)
        return 200, {"device_id": device_id, "pairing": pairing, "shown": shown}

    async def reboot(self, req):
        """Restart a unit (e.g. one whose screen froze): 202 once it took the command; it comes
        back by itself, with a new session and its reset cause."""
        await self._admin(req)
        device_id = req.params["device_id"]
        await self.registry.get_device(device_id)  # an unknown unit is a 404, not "offline"
        try:
            await self.server.command(device_id, "reboot")
        except CommandFailed as e:
            raise ApiError(_COMMAND_STATUS.get(e.code, 502), e.code, e.message) from None
        return 202, {"device_id": device_id, "rebooting": True}

    async def transfer(self, req):
        actor = await self._admin(req)
        device_id = req.params["device_id"]
        agent_id = _text(req.json(), "agent_id", 64)
        await self.registry.transfer(device_id, agent_id, actor)
        status = await self.registry.get_device(device_id)
        return 200, device_json(status, self.hub.session(device_id))

    async def show_qr(self, req):
        agent_id = req.params["agent_id"]
        actor = await self._acting_for(req, agent_id)
        doc = req.json()
        payload = _text(doc, "payload", messages.MAX_QR_PAYLOAD)
        caption = _text(doc, "caption", messages.MAX_CAPTION, required=False) or ""
        ecc = _field(
            doc, "ecc", str, False, "M", lambda v: v in messages.ECC_LEVELS, "one of L, M, Q, H"
        )
        wait_s = _seconds(doc, "wait_s", 0, MAX_WAIT_S)
        ttl_s = _seconds(doc, "ttl_s", 120, MAX_TTL_S) or 120
        fields = {"payload": payload, "caption": caption, "ecc": ecc}
        symbols = self.server.symbols
        # Refused before anything is held: a message over the unit's limit (1009 and a
        # reconnect), a payload no QR symbol holds.
        try:
            command_text("show_qr", **fields)
            await symbols.fits(agent_id, payload, ecc)
        except CommandFailed as e:
            raise ApiError(422, e.code, e.message) from None
        except qr.QRError as e:
            raise ApiError(422, messages.PAYLOAD_TOO_LARGE, str(e)) from None
        except EncoderBusy as e:
            raise ApiError(503, "encoder_busy", str(e)) from None
        started = time.monotonic()
        request = self._idempotent(req, actor, doc, uuid.uuid4().hex)
        supersede = _field(doc, "supersede", bool, False, True, what="true or false")
        result = await self.registry.reserve_for_agent(
            agent_id, request.txn_id, ttl_s, wait_s, request if request.key else None, supersede
        )
        if isinstance(result, IdempotentRequest):  # answered before: the same answer again
            return result.status, result.response
        reservation = result
        txn_id = reservation.txn_id  # a retry carries on the transaction it started
        # The whole encode only now that a unit is held for it.
        try:
            expected = await symbols.symbol(agent_id, payload, ecc)
            async with self.server.screen(reservation.device_id):
                ack = await self.server.command(
                    reservation.device_id, "show_qr", txn_id=txn_id, **fields
                )
        except EncoderBusy as e:
            await self.registry.cancel(txn_id, actor)
            raise ApiError(503, "encoder_busy", str(e)) from None
        except CommandFailed as e:
            await self.registry.cancel(txn_id, actor)
            raise ApiError(_COMMAND_STATUS.get(e.code, 502), e.code, e.message) from None
        if not expected.drawn_in(ack):
            await self.registry.cancel(txn_id, actor)
            raise ApiError(
                502,
                "render_mismatch",
                f"Unit {reservation.device_id} drew a different symbol than the "
                "payload encodes; the transaction was cancelled.",
            )
        answer = {
            "txn_id": txn_id,
            "device_id": reservation.device_id,
            "version": expected.version,
            "verified": True,
            "latency_ms": round((time.monotonic() - started) * 1000, 1),
            "expires_at": format_time(reservation.expires_at),
        }
        if request.key:
            await self.registry.answer_request(request, 201, answer)
        return 201, answer

    def _idempotent(self, req, actor, doc, txn_id):
        """The request as its `Idempotency-Key` names it (`key` "" without one): who sent it,
        and a digest of what it asked, so that a retry is known and a reused key is caught."""
        key = req.headers.get("idempotency-key", "")
        if key and not (len(key) <= MAX_IDEMPOTENCY_KEY and key.isascii() and key.isprintable()):
            raise InvalidInput(
                f"The Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} printable "
                "ASCII characters, e.g. a UUID."
            )
        asked = json.dumps([req.method, req.path, doc], sort_keys=True, separators=(",", ":"))
        fingerprint = hashlib.sha256(asked.encode()).hexdigest()
        return IdempotentRequest(str(actor), key, fingerprint, txn_id)

    async def get_txn(self, req):
        actor = await self._caller(req)
        r = await self.registry.get_reservation(req.params["txn_id"], actor)
        return 200, {
            "txn_id": r.txn_id,
            "device_id": r.device_id,
            "agent_id": r.agent_id,
            "expires_at": format_time(r.expires_at),
        }

    async def _finish(self, req, outcome, result):
        """End the transaction in the registry, then show how it ended: of a complete and a
        cancel racing, only the one that committed reaches the screen; the other is refused.
        With an `Idempotency-Key`, the answer is remembered with the change: a retry gets it
        again (with `shown` null: only the first attempt showed the result)."""
        actor = await self._caller(req)
        txn_id = req.params["txn_id"]
        request = self._idempotent(req, actor, req.json(), txn_id)
        if request.key:
            answered = await self.registry.idempotent_answer(request)
            if answered is not None:
                return answered.status, answered.response
        # The unit is known before the commit, to keep its screen for this result: once the
        # commit frees the unit, the next sale's QR must not overtake the result.
        try:
            device_id = (await self.registry.get_reservation(txn_id, actor)).device_id
        except NotFound:
            answered = request.key and await self.registry.idempotent_answer(request)
            if not answered:
                raise
            return answered.status, answered.response  # an attempt that just finished
        answer = {"txn_id": txn_id, "device_id": device_id, "result": result, "shown": None}
        async with self.server.screen(device_id):
            done = await outcome(txn_id, actor, request if request.key else None, answer)
            if isinstance(done, IdempotentRequest):  # a retry that overtook this attempt
                return done.status, done.response
            shown = await self.server.show_result(device_id, result)
        self.server.home_after(device_id)
        return 200, {**answer, "shown": shown}

    async def complete(self, req):
        return await self._finish(req, self.registry.complete, "paid")

    async def cancel(self, req):
        return await self._finish(req, self.registry.cancel, "cancelled")

    async def audit(self, req):
        await self._overseer(req)
        limit = req.query.get("limit", "100")
        if not limit.isdigit() or not 0 < int(limit) <= MAX_AUDIT_ENTRIES:
            raise InvalidInput(f"limit must be a whole number from 1 to {MAX_AUDIT_ENTRIES}.")
        entries = await self.registry.audit(
            req.query.get("device_id"), req.query.get("agent_id"), int(limit)
        )
        return 200, {
            "audit": [
                {
                    "seq": e.seq,
                    "at": format_time(e.at),
                    "actor": e.actor,
                    "action": e.action,
                    "device_id": e.device_id,
                    "agent_id": e.agent_id,
                    "txn_id": e.txn_id,
                    "detail": e.detail,
                }
                for e in entries
            ]
        }

    async def metrics(self, req):
        await self._overseer(req)
        doc = {
            "server_id": self.server.server_id,
            "sessions": len(self.hub.sessions),
            "connections": self.server.http.connections,
            **self.hub.metrics,
            **self.server.http.metrics,
            "refusals": dict(self.refusals),
            "store_retries": dict(self.registry.store.retries),
        }
        if self.server.cluster:
            doc.update(
                routed_out=self.server.cluster.routed_out,
                routed_in=self.server.cluster.routed_in,
                instances=await self.server.cluster.instances(),
            )
        return 200, doc

    async def doctor(self, req):
        await self._overseer(req)
        return 200, await self.server.doctor(req.params["device_id"])

    # -- updates (docs/updates.md)

    async def publish_release(self, req):
        """The body is a release bundle (.qfw); it is kept only if one of the server's release
        keys signed it and its files match its manifest."""
        actor = await self._admin(req)
        keys = self.server.release_keys
        if not keys:
            raise ApiError(
                409,
                "no_release_keys",
                "This server has no release key, so it trusts no release: start it with "
                "--release-key FILE.pub, the public key the releases are signed with.",
            )
        try:
            release = read_bundle(req.body, keys)
        except ReleaseError as e:
            raise ApiError(400, "bad_release", _sentence(str(e))) from None
        published = await self.registry.publish_release(release.version, release.bundle, actor)
        return 201, {
            **release_json(published),
            "boards": release.manifest["boards"],
            "micropython": release.manifest["micropython"],
            "files": len(release.files),
        }

    async def list_releases(self, req):
        await self._overseer(req)
        return 200, {"releases": [release_json(r) for r in await self.registry.releases()]}

    async def _statuses(self):
        return {s.device_id: s for s in await self.registry.list_devices()}

    async def start_rollout(self, req):
        actor = await self._admin(req)
        doc = req.json()
        rollout = await self.registry.start_rollout(
            _text(doc, "version", 32),
            _text(doc, "location_id", 64, required=False),
            _field(doc, "steps", list, False, [100], what="a list of growing percentages"),
            _field(doc, "abort_after_failures", int, False, 1, what="a whole number of units"),
            actor,
        )
        return 201, rollout_json(rollout, await self._statuses())

    async def list_rollouts(self, req):
        await self._overseer(req)
        statuses = await self._statuses()
        rollouts = await self.registry.rollouts()
        return 200, {"rollouts": [rollout_json(r, statuses, units=False) for r in rollouts]}

    async def get_rollout(self, req):
        await self._overseer(req)
        rollout = await self.registry.rollout(req.params["rollout_id"])
        return 200, rollout_json(rollout, await self._statuses())

    async def change_rollout(self, req):
        """POST .../pause, .../resume or .../abort, with an optional {"reason"}."""
        actor = await self._admin(req)
        rollout_id, change = req.params["rollout_id"], req.path.rsplit("/", 1)[1]
        if change == "resume":
            rollout = await self.registry.resume_rollout(rollout_id, actor)
        else:
            reason = _text(req.json(), "reason", 200, required=False)
            stop = {"pause": self.registry.pause_rollout, "abort": self.registry.abort_rollout}
            rollout = await stop[change](rollout_id, actor, reason)
        return 200, rollout_json(rollout, await self._statuses())
