"""`make demo`: the product's main job, end to end, on the embedded default.

A server on SQLite; three virtual boards running the real firmware, provisioned and registered
as a technician would; two cashiers ("agents") who link a unit each by scanning the pairing QR
off its screen; concurrent payment QRs, each verified by the server and read back off the
right unit's screen; one unit losing power mid-shift, its cashier served by the location's pool
unit until it is back; then a signed release rolled out to the units, a canary first, and a
sale on the new version. PNGs of the screens along the way go to the output directory.
"""

import itertools
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from firmware.version import VERSION
from tools import release
from tools.background import BackgroundLoop, wait_for
from tools.serverproc import running_server
from tools.vboard import fleet
from tools.vboard.screen import save_png, wait_for_qr

LOCATION = "demo-shop"
SALES_PER_AGENT = 4


class Demo:
    def __init__(self, out, workdir, console):
        self.out = out
        self.workdir = workdir
        self.console = console
        self.pictures = []
        self._numbers = itertools.count(1)
        self.rows = []

    def say(self, text):
        self.console.print(f"[bold cyan]>[/] {text}")

    def picture(self, board, name):
        path = self.out / f"{next(self._numbers):02d}-{name}.png"  # both tills take pictures
        save_png(board.dir / "display.pbm", path)
        self.pictures.append(path)

    def wait_online(self, admin, boards, online=True, timeout=30):
        ids = {b.device_id for b in boards}
        wanted = "online" if online else "offline"
        wait_for(
            lambda: all(
                d["status"] == wanted
                for d in admin.get("/api/devices")["devices"]
                if d["device_id"] in ids
            ),
            timeout,
            f"units {wanted}",
        )

    def sale(self, agent, agent_id, boards_by_id, n):
        payload = (
            f"upi://pay?pa=demo-shop@bank&pn=Demo%20Shop&am={n + 1}.50&cu=INR"
            f"&tn={agent_id}-sale-{n}"
        )
        shown = agent.post(
            f"/api/agents/{agent_id}/qr", {"payload": payload, "caption": f"{n + 1}.50 INR"}
        )
        board = boards_by_id[shown["device_id"]]
        on_screen = wait_for_qr(board.dir / "display.pbm", payload)
        if n in (0, 100, 300):  # the first sale, during the outage, after the update
            self.picture(board, f"payment-{agent_id}-on-{board.device_id}")
        agent.post(f"/api/txns/{shown['txn_id']}/complete")
        return agent_id, shown["device_id"], shown["latency_ms"], on_screen == payload

    def run(self):
        key = self.workdir / "release-key"
        release.keygen(key)
        extra = ["--release-key", f"{key}.pub"]
        with running_server(self.workdir, heartbeat_s=2, extra=extra) as server:
            self.say(f"Server on SQLite at {server.url}")
            admin = server.admin()
            admin.post(
                "/api/locations", {"location_id": LOCATION, "name": "Demo shop", "policy": "hybrid"}
            )
            agents = {}
            for agent_id in ("till-1", "till-2"):
                doc = admin.post(
                    "/api/agents", {"agent_id": agent_id, "name": agent_id, "location_id": LOCATION}
                )
                agents[agent_id] = server.client(doc["token"])
            self.say("Agents till-1 and till-2 created at location demo-shop (policy hybrid)")

            loop = BackgroundLoop()
            provisioning = fleet.Provisioning(
                [server.url], server.admin_token, LOCATION, release_keys=(f"{key}.pub",)
            )
            boards = loop.run(
                fleet.start_boards(self.workdir / "boards", 3, provisioning=provisioning),
                timeout=120,
            )
            by_id = {b.device_id: b for b in boards}
            try:
                self.wait_online(admin, boards)
                self.say("3 virtual boards provisioned, registered and online: " + ", ".join(by_id))
                for board in boards:
                    wait_for_qr(board.dir / "display.pbm", "qrfleet://pair")
                    self.picture(board, f"pairing-{board.device_id}")

                for agent_id, board in zip(agents, boards, strict=False):
                    pairing = wait_for_qr(board.dir / "display.pbm", "qrfleet://pair")
                    agents[agent_id].post(f"/api/agents/{agent_id}/devices", {"pairing": pairing})
                    self.say(f"{agent_id} scanned {board.device_id}'s pairing QR and linked it")
                self.say(f"{boards[2].device_id} stays unlinked: the shop's pool unit")

                self.say(f"Both tills sell at once, {SALES_PER_AGENT} sales each...")
                results = self._sales(agents, by_id, range(SALES_PER_AGENT))
                self.picture(boards[0], "paid")

                self.say(f"{boards[0].device_id} (till-1's unit) loses power")
                loop.run(boards[0].power_off())
                self.wait_online(admin, boards[:1], online=False, timeout=20)
                fallback = self._sales({"till-1": agents["till-1"]}, by_id, range(100, 102))
                self.say("till-1's sales went to the pool unit " + boards[2].device_id)

                loop.call(boards[0].power_on)
                self.wait_online(admin, boards[:1], timeout=30)
                back = self._sales({"till-1": agents["till-1"]}, by_id, range(200, 201))
                self.say("Power is back: till-1 is served by its own unit again")
                self._summary(results + fallback + back, by_id)
                self._steal(agents, boards)
                self._update(admin, agents, by_id, key)
            finally:
                loop.run(self._stop_all(boards), timeout=60)
                loop.close()

    def _sales(self, agents, by_id, numbers):
        """Each cashier rings up its sales one after another; the cashiers at the same time."""

        def till(agent_id):
            return [self.sale(agents[agent_id], agent_id, by_id, n) for n in numbers]

        with ThreadPoolExecutor(len(agents)) as pool:
            return [row for rows in pool.map(till, agents) for row in rows]

    def _update(self, admin, agents, by_id, key):
        version = f"{VERSION}+demo"
        admin.request("POST", "/api/releases", release.build(version, key))
        rollout = admin.post(
            "/api/rollouts", {"version": version, "location_id": LOCATION, "steps": [100]}
        )
        canary = by_id[rollout["waves"][0]["units"][0]["device_id"]]
        self.say(f"Release {version} signed, published and rolled out: {canary.device_id} first")
        log = canary.dir / "serial.log"
        wait_for(lambda: f"update mode, for {version}" in log.read_text(errors="replace"), 30)
        self.picture(canary, f"updating-{canary.device_id}")
        path = f"/api/rollouts/{rollout['rollout_id']}"
        wait_for(lambda: admin.get(path)["state"] != "running", 120, "the rollout to end")
        doc = admin.get(path)
        versions = {d["device_id"]: d["firmware"] for d in admin.get("/api/devices")["devices"]}
        self.say(
            f"Rollout {doc['state']}: "
            + ", ".join(f"{d} runs {versions[d]}" for d in sorted(by_id))
        )
        self.sale(agents["till-1"], "till-1", by_id, 300)
        self.say("till-1 sells on the new version")

    async def _stop_all(self, boards):
        for board in boards:
            if board.mode != "off":
                await board.stop()

    def _steal(self, agents, boards):
        from host.client import ApiClientError

        try:
            agents["till-2"].post(
                "/api/agents/till-2/devices", {"device_id": boards[0].device_id, "code": "ANYCODE1"}
            )
            self.say("[red]till-2 took till-1's unit: this must never happen[/]")
        except ApiClientError as e:
            self.say(f"till-2 tried to take till-1's unit: refused ({e.status} {e.code})")

    def _summary(self, results, by_id):
        table = Table(title="qrfleet demo: payment QRs")
        for column in (
            "agent",
            "unit",
            "QRs",
            "verified + read off the screen",
            "p50 ms",
            "max ms",
        ):
            table.add_column(column)
        groups = {}
        for agent_id, device_id, latency, seen in results:
            groups.setdefault((agent_id, device_id), []).append((latency, seen))
        for (agent_id, device_id), rows in sorted(groups.items()):
            latencies = [r[0] for r in rows]
            table.add_row(
                agent_id,
                device_id,
                str(len(rows)),
                f"{sum(r[1] for r in rows)}/{len(rows)}",
                f"{statistics.median(latencies):.1f}",
                f"{max(latencies):.1f}",
            )
        self.console.print(table)


def main(out):
    console = Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qrfleet-demo-") as tmp:
        demo = Demo(out, Path(tmp), console)
        demo.run()
    console.print(
        f"{len(demo.pictures)} screens saved in {out}/ ({time.monotonic() - started:.0f} s)"
    )
    return 0
