"""pytest plugin `qrfleet`: the same scenarios on virtual boards or on real units.

Options (command line, environment, or per test with `parametrize(..., indirect=True)`): see
tools/harness/options.py. `pytest tests/hil` runs on 4 virtual boards; `--board virtual:8` on 8;
`--board /dev/ttyUSB0 --board /dev/ttyUSB1 --flash --firmware micropython.bin` on real units.

Fixtures:
    server    the running server (started for the session unless --server is given),
              with `.admin()` and `.client(token)` API clients
    boards    the units, online, unlinked, registered at this test's location; each with
              `.id`, `.serial.write/expect`, `.reset()`, `.screen()`, `.power_cut()`
    location  this test's location id (parametrize it indirectly with a policy name)
    agents    agents(n) -> n agents at the location, each with `.id` and `.api`
    cluster   Valkey + three instances with virtual boards of their own (tools/harness/cluster.py)
    record    record(name, value): a figure for the run report
"""

import re
import time
from dataclasses import dataclass

import pytest

from host.client import ApiClient, ApiClientError
from tools.background import BackgroundLoop, wait_for
from tools.harness import options
from tools.harness.report import Report
from tools.harness.units import Unit, VirtualUnit
from tools.serverproc import Server, running_server
from tools.vboard import fleet

_ONLINE_TIMEOUT_S = 60


def pytest_addoption(parser):
    options.add_options(parser)


def pytest_configure(config):
    config.addinivalue_line("markers", "hil: a scenario run on units (virtual or real)")
    config._qrfleet_report = Report(options.resolve(config, "report"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not {"boards", "cluster"} & set(item.fixturenames):
        return
    if rep.when == "call" or (rep.when == "setup" and rep.outcome != "passed"):
        item.config._qrfleet_report.add(item, rep)


def pytest_sessionfinish(session):
    report = session.config._qrfleet_report
    if report.entries:
        report.write()


@pytest.fixture(scope="session")
def _hil_server(request, tmp_path_factory):
    config = request.config
    token = options.resolve(config, "admin_token")
    external = options.resolve(config, "server")
    if external:
        yield Server(external.rstrip("/"), token)
        return
    store = options.resolve(config, "store")
    directory = tmp_path_factory.mktemp("server")
    store_url = None
    valkey = None
    if store == "redis":
        from tools.valkey import ValkeyServer

        valkey = ValkeyServer()
        valkey.start()
        store_url = valkey.url()
    elif store != "sqlite":
        raise pytest.UsageError(f"--store {store}: use sqlite or redis")
    try:
        with running_server(directory, token, store=store_url, heartbeat_s=2) as proc:
            yield proc
    finally:
        if valkey:
            valkey.stop()


@pytest.fixture
def server(_hil_server):
    return _hil_server


@pytest.fixture(scope="session")
def _bench(request, _hil_server, tmp_path_factory):
    """Every unit of the session, provisioned for the session's server and online."""
    config = request.config
    virtual, ports = options.parse_boards(options.resolve(config, "board"))
    logs = tmp_path_factory.mktemp("logs")
    units = [
        Unit(device_id, port, logs) for device_id, port in _real_units(config, _hil_server, ports)
    ]
    loop = BackgroundLoop()
    boards = []
    try:
        if virtual:
            provisioning = fleet.Provisioning([_hil_server.url], _hil_server.admin_token)
            boards = loop.run(
                fleet.start_boards(
                    tmp_path_factory.mktemp("boards"),
                    virtual,
                    heap=options.resolve(config, "heap"),
                    provisioning=provisioning,
                    flash_size=options.resolve(config, "flash_size"),
                    variant=options.resolve(config, "variant"),
                ),
                timeout=300,
            )
            units += [VirtualUnit(b, loop, logs) for b in boards]
        wait_online(_hil_server.admin(), units)
        yield units
    finally:
        loop.run(_stop_all(boards), timeout=120)
        loop.close()


def _real_units(config, server, ports):
    """(device id, serial URL) of each real unit; with --flash, flashed and provisioned for
    this session's server first (tools/flash.py, tools/provision.py)."""
    from firmware.config import device_id
    from tools import flash, image, provision

    found = []
    firmware = options.resolve(config, "firmware")
    wifi = None
    if options.resolve(config, "wifi_ssid"):
        wifi = {
            "ssid": options.resolve(config, "wifi_ssid"),
            "password": options.resolve(config, "wifi_password") or "",
        }
    for spec in ports:
        port = options.resolve_port(spec)
        if options.resolve(config, "flash"):
            if firmware:
                with open(firmware, "rb") as f:
                    flash.flash_firmware(port, f.read(), image.board_files(target="esp32"))
            order = provision.Order([server.url], server.admin_token, wifi=wifi, force=True)
            found.append((provision.provision_unit(port, order).device_id, port))
        else:
            with flash.open_unit(port) as unit:
                found.append((device_id(unit.mac), port))
                unit.hard_reset()
    return found


async def _stop_all(boards):
    for board in boards:
        if board.mode != "off":
            await board.stop()


def wait_online(admin, units, timeout=_ONLINE_TIMEOUT_S):
    ids = {u.id for u in units}
    wait_for(
        lambda: (
            ids
            <= {
                d["device_id"]
                for d in admin.get("/api/devices")["devices"]
                if d["status"] == "online"
            }
        ),
        timeout,
        "units online",
    )


def _test_id(request):
    return re.sub(r"[^A-Za-z0-9-]+", "-", request.node.name)[:48].strip("-").lower()


@pytest.fixture
def location(request, server):
    """A fresh location for this test; its policy is the indirect parameter (default hybrid)."""
    policy = getattr(request, "param", "hybrid")
    location_id = f"loc-{_test_id(request)}-{int(time.monotonic() * 1000) % 100000}"
    server.admin().post(
        "/api/locations", {"location_id": location_id, "name": location_id, "policy": policy}
    )
    return location_id


def _option_fixture(name):
    @pytest.fixture(name=f"qrfleet_{name}")
    def option(request):
        return options.resolve(request.config, name, request)

    return option


# One fixture per option (qrfleet_board, qrfleet_heap, ...), so a test can override an option
# with parametrize("qrfleet_board", ["virtual:2"], indirect=True).
for _option in options.OPTIONS:
    globals()[f"_qrfleet_{_option.name}"] = _option_fixture(_option.name)


@pytest.fixture
def boards(_bench, server, location, tmp_path, qrfleet_board):
    """The units, unlinked, idle, registered at this test's location; as many as this test's
    --board value asks for (a test may ask for fewer than the session has)."""
    virtual, ports = options.parse_boards(qrfleet_board)
    wanted = virtual + len(ports)
    if wanted > len(_bench):
        pytest.skip(f"this test wants {wanted} units; the session has {len(_bench)}")
    admin = server.admin()
    wait_online(admin, _bench)
    for unit in _bench:
        _release(admin, unit)
        admin.post("/api/devices", {"device_id": unit.id, "location_id": location})
        admin.post(f"/api/devices/{unit.id}/pairing")  # every test starts on the home screen
        unit.begin_test(tmp_path)
    yield _bench[:wanted]
    for unit in _bench:
        unit.end_test()
        _release(admin, unit)


def _release(admin, unit):
    """Whatever a test left on the unit: its reservation cancelled, its owner unlinked."""
    doc = admin.get(f"/api/devices/{unit.id}")
    if doc["txn_id"]:
        try:
            admin.post(f"/api/txns/{doc['txn_id']}/cancel")
        except ApiClientError:
            pass  # expired meanwhile
    if doc["agent_id"]:
        admin.delete(f"/api/agents/{doc['agent_id']}/devices/{unit.id}")


@dataclass
class Agent:
    id: str
    api: ApiClient

    def show(self, payload, **fields):
        return self.api.post(f"/api/agents/{self.id}/qr", {"payload": payload, **fields})

    def link(self, pairing):
        return self.api.post(f"/api/agents/{self.id}/devices", {"pairing": pairing})


@pytest.fixture
def agents(server, location):
    made = []

    def make(count):
        admin = server.admin()
        for _ in range(count):
            agent_id = f"{location}-a{len(made) + 1}"
            doc = admin.post(
                "/api/agents", {"agent_id": agent_id, "name": agent_id, "location_id": location}
            )
            made.append(Agent(agent_id, server.client(doc["token"])))
        return made[-count:]

    return make


@pytest.fixture
def record(request):
    """record(name, value): a figure of this scenario for the run report."""

    def record(name, value):
        request.node.user_properties.append((name, value))

    return record


@pytest.fixture
def cluster(request, tmp_path):
    """Valkey and three instances with virtual boards of their own spread over them."""
    virtual, ports = options.parse_boards(options.resolve(request.config, "board"))
    if ports:
        pytest.skip("cluster scenarios provision units for their own servers: virtual only")
    from tools.harness.cluster import Cluster

    c = Cluster(tmp_path, units=min(virtual, 6))
    yield c
    c.close()
