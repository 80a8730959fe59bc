"""`qrfleet serve`: one port for units (`/ws/device`) and for the HTTP API (`/api/...`)."""

import asyncio
import hmac
import os
import socket
import weakref

from host.api import COMMAND_TIMEOUT_S, Api
from host.cluster import HolderChanged
from host.dashboard import Dashboard
from host.devices import ACCEPT_PER_S, CommandFailed, DeviceHub
from host.events import EventFeed
from host.http import MAX_CONNECTIONS_PER_PEER, HttpServer
from host.log import Log
from host.metrics import Metrics
from host.registry import InvalidInput, NotFound, RegistryError, open_registry
from host.registry.errors import format_time
from host.rollouts import RolloutDriver
from host.symbols import EncoderBusy, Symbols
from host.tasks import Tasks
from host.updates import UpdateFailed, check_payload, prove_trial

DEFAULT_HEARTBEAT_S = 5
RESULT_SHOWN_S = 4.0  # how long "PAID" / "CANCELLED" stays before the home screen
_ROUTE_ATTEMPTS = 6
_FOLLOW_S = 0.25
_SWEEP_EVERY_S = 10
# An instance's presence (host.registry, Registry.join): what it holds ends this long after it
# stops renewing, which it does three times as often.
PRESENCE_TTL_S = 3


class QrfleetServer:
    def __init__(
        self,
        store_url,
        admin_token,
        server_id=None,
        heartbeat_s=DEFAULT_HEARTBEAT_S,
        log=None,
        tls=None,
        max_connections=None,
        max_connections_per_peer=MAX_CONNECTIONS_PER_PEER,
        new_sessions_per_s=ACCEPT_PER_S,
        metrics_token=None,
        metrics_listen=None,
        operator_token=None,
        release_keys=(),
    ):
        """`tls`: an ssl.SSLContext (host.http.tls_context) to serve https:// and wss://;
        the connection caps are host.http's (None: what the open-file limit allows).
        `GET /metrics` takes `metrics_token` or the admin token; with `metrics_listen`
        ((host, port)) it is also served there, needing a token only if `metrics_token` is
        set. `operator_token` sees what the admin sees (dashboard, API reads, events) and
        changes nothing. `release_keys`: the Ed25519 public keys (32 bytes each) a release
        must be signed by to be published (host/releases.py); none: nothing is published."""
        if not admin_token:
            raise ValueError("an admin token is required: --admin-token or QRFLEET_ADMIN_TOKEN")
        self.store_url = store_url
        self.admin_token = admin_token
        if operator_token == admin_token:
            raise ValueError("the operator token must differ from the admin token")
        self.operator_token = operator_token
        self.server_id = server_id or f"{socket.gethostname()}-{os.getpid()}"
        self.heartbeat_s = heartbeat_s
        self.tls = tls
        self.connection_caps = {
            "max_connections": max_connections,
            "max_connections_per_peer": max_connections_per_peer,
        }
        self.new_sessions_per_s = new_sessions_per_s
        self.log = (log or Log()).bind(server_id=self.server_id)
        self.registry = None
        self.symbols = None  # what units must draw, encoded off the event loop
        self.hub = None
        self.http = None
        self.tasks = Tasks(self.log)
        self._screens = weakref.WeakValueDictionary()  # device_id -> its screen() lock
        self._home_timers = {}  # device_id -> the task that brings its home screen back
        self.cluster = None  # several instances on one Valkey/Redis (host/cluster.py)
        self.metrics = Metrics(self, metrics_token)
        self.metrics_listen = metrics_listen
        self.metrics_http = None
        self.metrics_port = None
        self.api = None
        self.events = None  # GET /api/events (host/events.py)
        self.release_keys = list(release_keys)
        self.rollouts = None  # drives the running rollout from here (host/rollouts.py)

    async def start(self, host="127.0.0.1", port=0):
        """Open the store and the port; returns the port (useful with port 0)."""
        self.registry = open_registry(self.store_url)
        self.registry.store.timed = self.metrics.store_timed
        epoch = await self.registry.join(self.server_id, PRESENCE_TTL_S)
        self.log.info("instance_joined", epoch=epoch)
        self.tasks.spawn(self._presence())
        self.symbols = Symbols()
        self.hub = DeviceHub(
            self.registry,
            self.server_id,
            self.heartbeat_s,
            self.log,
            self.tasks,
            on_online=self._greet,
            accept_per_s=self.new_sessions_per_s,
        )
        store = self.registry.store
        if store.shared:
            from host.cluster import Cluster

            self.cluster = Cluster(store.address, self.server_id, self.hub, self.log)
            await self.cluster.start()
        self.events = EventFeed(self.registry, self.tasks, self.log)
        self.api = Api(self)
        Dashboard(self).mount(self.api.router)  # the pages at / (host/dashboard)
        self.http = HttpServer(
            self.api.router,
            upgrade=self.hub.accept,
            log=self.log,
            tls=self.tls,
            **self.connection_caps,
        )
        port = await self.http.start(host, port)
        if self.metrics_listen:
            self.metrics_http = HttpServer(self.metrics.router(), log=self.log)
            self.metrics_port = await self.metrics_http.start(*self.metrics_listen)
        self.tasks.spawn(self._sweep())
        self.rollouts = RolloutDriver(self)
        self.rollouts.start()
        self.log.info(
            "server_started", host=host, port=port, store=loggable_store_url(self.store_url)
        )
        return port

    async def close(self):
        if self.metrics_http:  # first: it took over the loop's exception handler last
            await self.metrics_http.close()
        if self.http:
            await self.http.close()
        if self.events:
            await self.events.close()
        if self.hub:
            await self.hub.close()
        if self.symbols:
            await self.symbols.close()
        await self.tasks.close()
        if self.cluster:
            await self.cluster.close()
        if self.registry:
            if self.registry.instance:
                try:
                    await self.registry.leave()
                except RegistryError as e:  # its presence lapses by itself
                    self.log.warning("leave_failed", reason=str(e))
            await self.registry.close()

    def role_tokens(self):
        return {"admin": self.admin_token, "operator": self.operator_token}

    def token_role(self, token):
        """The role whose token `token` is ("admin" or "operator"), else None."""
        for role, known in self.role_tokens().items():
            if known and hmac.compare_digest(token.encode(), known.encode()):
                return role
        return None

    async def _presence(self):
        """Renew this instance's presence; once it lapsed (the process was paused, the store
        was away), what it held is gone for good, and it joins again as a new start."""
        while True:
            await asyncio.sleep(PRESENCE_TTL_S / 3)
            try:
                if not await self.registry.renew(PRESENCE_TTL_S, len(self.hub.sessions)):
                    epoch = await self.registry.join(self.server_id, PRESENCE_TTL_S)
                    self.log.warning("instance_lapsed", epoch=epoch)
            except RegistryError as e:
                self.log.warning("presence_renew_failed", reason=str(e))

    async def _sweep(self):
        while True:
            await asyncio.sleep(_SWEEP_EVERY_S)
            try:
                await self.registry.sweep()
            except RegistryError as e:
                self.log.warning("sweep_failed", reason=str(e))

    # -- commands to units

    async def command(self, device_id, kind, timeout_s=COMMAND_TIMEOUT_S, txn_id=None, **fields):
        """Run a command on a unit, here or, through the cluster, on the instance holding it;
        with `txn_id`, only while that transaction holds the unit."""
        for attempt in range(_ROUTE_ATTEMPTS):
            session = self.hub.session(device_id)
            if session is not None:
                return await session.command(kind, timeout_s, txn_id, **fields)
            if self.cluster:
                status = await self.registry.get_device(device_id)
                if status.status == "online" and status.server_id != self.server_id:
                    try:
                        return await self.cluster.command(
                            status.server_id,
                            device_id,
                            status.epoch,
                            kind,
                            timeout_s,
                            txn_id,
                            **fields,
                        )
                    except HolderChanged:
                        # The unit is moving to a live instance: follow it.
                        await asyncio.sleep(_FOLLOW_S * (attempt + 1))
                        continue
            break
        raise CommandFailed("device_offline", await self._offline_reason(device_id))

    async def _offline_reason(self, device_id):
        try:
            status = await self.registry.get_device(device_id)
        except NotFound:
            return f"Unit {device_id} is not registered."
        seen = format_time(status.device.last_seen)
        if status.status == "online" and not self.cluster:
            return f"Unit {device_id} is held by server {status.server_id}, not this one."
        return f"Unit {device_id} is offline" + (f" since {seen}." if seen else " (never seen).")

    async def _best_effort(self, device_id, kind, **fields):
        try:
            await self.command(device_id, kind, **fields)
            return True
        except CommandFailed as e:
            self.log.info("command_not_shown", device_id=device_id, kind=kind, reason=e.message)
            return False

    def screen(self, device_id):
        """Held from deciding a change of the unit's screen until it is sent, so changes reach
        the unit in the order they were decided: a finished sale's result before the QR of the
        next sale, which may take the unit the moment the first one's end commits."""
        lock = self._screens.get(device_id)
        if lock is None:
            lock = self._screens[device_id] = asyncio.Lock()
        return lock

    async def show_idle(self, device_id):
        return await self._best_effort(device_id, "clear")

    async def show_result(self, device_id, result):
        return await self._best_effort(device_id, "show_result", result=result)

    async def show_pairing(self, device_id):
        """A fresh pairing code on the unit's screen -> (pairing URI, whether it was shown)."""
        pairing = await self.registry.issue_pairing_code(device_id)
        return pairing.uri, await self._best_effort(device_id, "show_pairing", code=pairing.code)

    async def show_home(self, device_id):
        """The screen a unit rests on: its pairing QR while unlinked, else the idle screen.
        Left alone while a transaction holds the unit."""
        async with self.screen(device_id):
            status = await self.registry.get_device(device_id)
            session = self.hub.session(device_id)
            if session:  # for the units online per location (host.metrics)
                session.location_id = status.device.location_id
            if status.txn_id:
                return
            if status.agent_id:
                await self.show_idle(device_id)
            else:
                await self.show_pairing(device_id)

    def home_after(self, device_id, delay_s=RESULT_SHOWN_S):
        """After a result has been on screen for a while, back to the home screen. One timer a
        unit, the latest result's: a cashier selling fast would otherwise leave one per sale,
        all taking the unit's screen lock ahead of its next QR when they fire."""
        earlier = self._home_timers.pop(device_id, None)
        if earlier:
            earlier.cancel()
        timer = self.tasks.spawn(self._home_later(device_id, delay_s))
        if timer:
            self._home_timers[device_id] = timer
            timer.add_done_callback(lambda t: self._home_timer_ended(device_id, t))

    def _home_timer_ended(self, device_id, timer):
        if self._home_timers.get(device_id) is timer:
            del self._home_timers[device_id]

    async def _home_later(self, device_id, delay_s):
        await asyncio.sleep(delay_s)
        try:
            await self.show_home(device_id)
        except RegistryError as e:
            self.log.warning("home_failed", device_id=device_id, reason=str(e))

    async def _greet(self, session):
        """A unit just came online: its update outcome is recorded (a version on trial proves
        itself first), then it shows its home screen."""
        if self.cluster:
            await self.cluster.announce_takeover(session.device_id, session.epoch)
        try:
            if session.update:
                await self._update_reported(session)
            await self.show_home(session.device_id)
        except RegistryError as e:
            self.log.warning("greet_failed", device_id=session.device_id, reason=str(e))

    async def _update_reported(self, session):
        """What a unit says of its last switch is recorded, unless the server knows of a later
        update (one the unit refused says nothing in hello). A unit on trial draws a check QR;
        once the server verified it, the unit commits its version. One that cannot stays on
        trial and goes back by itself (firmware/app.py)."""
        update = dict(session.update)
        known = (await self.registry.get_device(session.device_id)).device.update
        if known and known["version"] != update.get("version"):
            return
        if update["state"] == "trial":
            payload = check_payload(session.device_id, update["version"])
            async with self.screen(session.device_id):
                try:
                    expected = await self.symbols.symbol(session.device_id, payload, "M")
                    await prove_trial(session, expected)
                    update["state"] = "committed"
                except (UpdateFailed, EncoderBusy) as e:
                    update["reason"] = str(e)
                    self.log.warning(
                        "update_trial_unproven", device_id=session.device_id, reason=str(e)
                    )
        try:
            await self.registry.record_update(session.device_id, update, session.epoch)
        except InvalidInput as e:  # the unit's hello said something that is no update status
            self.log.warning("update_status_refused", device_id=session.device_id, reason=str(e))

    # -- diagnosis

    async def doctor(self, device_id):
        """Why a unit can or cannot show a QR right now, as facts and a verdict."""
        try:
            status = await self.registry.get_device(device_id)
        except NotFound:
            return {
                "device_id": device_id,
                "registered": False,
                "ready": False,
                "verdict": f"Unit {device_id} is not registered: provision it first.",
            }
        session = self.hub.session(device_id)
        d = status.device
        facts = {
            "device_id": device_id,
            "registered": True,
            "name": d.name,
            "location_id": d.location_id,
            "status": status.status,
            "last_seen": format_time(d.last_seen),
            "held_by": status.server_id,
            "epoch": status.epoch,
            "connected_here_since": format_time(session.connected_at) if session else None,
            "agent_id": status.agent_id,
            "reserved_by_txn": status.txn_id,
            "firmware": d.firmware,
            "screen": (d.last_screen or {}).get("screen"),
            "last_heartbeat": session.last_heartbeat if session else None,
            "via": d.via,
        }
        if d.via:
            facts["path"] = f"unit -> {d.via} -> server"
        if status.status != "online":
            verdict = await self._offline_reason(device_id)
            if d.via:
                pc = d.via.removeprefix("bridge@")
                verdict += f" It reaches the server through the PC {pc}: check, in order:"
                facts["checks"] = tethered_checks(device_id, pc)
        elif status.txn_id:
            verdict = f"Unit is busy with transaction {status.txn_id} until it completes."
        elif not status.agent_id:
            verdict = "Unit is online but not linked: it can serve its location's pool only."
        else:
            verdict = f"Unit is ready to show QRs for agent {status.agent_id}."
        facts["ready"] = status.status == "online" and not status.txn_id
        facts["verdict"] = verdict
        return facts


def tethered_checks(device_id, pc):
    """What to check, in order, when unit `device_id`, plugged into the PC `pc` (its bridge's
    host name), is offline: each step only matters once the ones before it hold."""
    return [
        f"Is the bridge running on {pc}? Linux: systemctl --user status qrfleet-bridge; "
        'Windows: the "qrfleet bridge" task in Task Scheduler, or qrfleet-bridge.cmd in '
        "the Startup folder.",
        f"Is the unit's USB cable plugged in? The bridge logs 'lost unit {device_id} on PORT' "
        "when it is not.",
        f"Can {pc} reach the server? The bridge logs 'server URL unreachable' when it cannot.",
        "Is the unit at the REPL? A technician may have left it there: reset it.",
    ]


def loggable_store_url(store_url):
    """`store_url` as logged: no query, and no credentials (redis://user:password@host)."""
    url = store_url.split("?")[0]
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/")[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
