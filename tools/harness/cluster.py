"""A cluster for scenarios: a real Valkey, three `qrfleet serve` instances on it, and virtual
boards provisioned with the list of all three (so they spread over them), each linked to a
cashier of its own at one location."""

import random
from contextlib import ExitStack

from host.client import ApiClient
from tools.background import BackgroundLoop, wait_for
from tools.serverproc import running_server
from tools.valkey import ValkeyServer
from tools.vboard import fleet

TOKEN = "cluster-admin"
UNITS = 6


class Cluster:
    def __init__(self, tmp_path, units=UNITS, heartbeat_s=1):
        self.heartbeat_s = heartbeat_s
        self.stack = ExitStack()
        self.valkey = ValkeyServer(directory=tmp_path / "valkey")
        self.valkey.start()
        self.stack.callback(self.valkey.stop)
        self.servers = {}
        for n in (1, 2, 3):
            directory = tmp_path / f"s{n}"
            directory.mkdir()
            proc = self.stack.enter_context(
                running_server(
                    directory,
                    TOKEN,
                    store=self.valkey.url(),
                    server_id=f"s{n}",
                    heartbeat_s=heartbeat_s,
                )
            )
            self.servers[f"s{n}"] = proc
        self.admin = self.any_admin()
        self.admin.post(
            "/api/locations", {"location_id": "shop", "name": "Shop", "policy": "strict"}
        )
        self.loop = BackgroundLoop()
        self.stack.callback(self.loop.close)
        provisioning = fleet.Provisioning([p.url for p in self.servers.values()], TOKEN, "shop")
        self.boards = self.loop.run(
            fleet.start_boards(tmp_path / "boards", units, provisioning=provisioning), 120
        )
        self.stack.callback(lambda: self.loop.run(_stop(self.boards), 60))
        self.agents = {}
        self.wait_all_online()
        for n, board in enumerate(self.boards):
            agent_id = f"till-{n}"
            doc = self.admin.post(
                "/api/agents", {"agent_id": agent_id, "name": agent_id, "location_id": "shop"}
            )
            self.admin.post(f"/api/agents/{agent_id}/devices", {"device_id": board.device_id})
            self.agents[agent_id] = (board, doc["token"])

    def any_admin(self, alive=None):
        proc = random.choice([p for s, p in self.servers.items() if alive is None or s in alive])
        return ApiClient(proc.url, TOKEN, timeout=15)

    def urls(self):
        return [p.url for p in self.servers.values()]

    def busiest(self):
        """The instance holding the most units."""
        held = {}
        for d in self.devices().values():
            held.setdefault(d["server_id"], []).append(d["device_id"])
        return max(held, key=lambda s: len(held[s]))

    def devices(self):
        return {d["device_id"]: d for d in self.admin.get("/api/devices")["devices"]}

    def wait_all_online(self, avoid=None, timeout=30):
        def ok():
            devices = self.devices()
            return all(
                devices[b.device_id]["status"] == "online"
                and devices[b.device_id]["server_id"] != avoid
                for b in self.boards
            )

        wait_for(ok, timeout, "every unit online" + (f" off {avoid}" if avoid else ""))

    def show(self, agent_id, payload, via, ttl_s=120):
        board, token = self.agents[agent_id]
        shown = ApiClient(self.servers[via].url, token, timeout=15).post(
            f"/api/agents/{agent_id}/qr", {"payload": payload, "ttl_s": ttl_s}
        )
        ApiClient(self.servers[via].url, token).post(f"/api/txns/{shown['txn_id']}/complete")
        return shown

    def metrics(self, server_id):
        return ApiClient(self.servers[server_id].url, TOKEN).get("/api/metrics")

    def close(self):
        self.stack.close()


async def _stop(boards):
    for b in boards:
        if b.mode != "off":
            await b.stop()
