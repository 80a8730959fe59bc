"""pytest plugin `qrfleet`: the same scenarios on virtual boards or on real units.

Options (command line, environment, or per test with `parametrize(..., indirect=True)`): see
tools/harness/options.py. `pytest tests/hil` runs on 4 virtual boards; `--board virtual:8` on 8;
`--board /dev/ttyUSB0 --board /dev/ttyUSB1 --flash --firmware micropython.bin` on real units.

Fixtures:
    server    the running server (started for the session unless --server is given; https://
              with --tls or a test's qrfleet_tls), with `.admin()` and `.client(token)`
    boards    the units, online, unlinked, registered at this test's location; each with
              `.id`, `.serial.write/expect`, `.reset()`, `.screen()`, `.power_cut()`
    location  this test's location id (parametrize it indirectly with a policy name)
    agents    agents(n) -> n agents at the location, each with `.id` and `.api`
    cluster   Valkey + three instances with virtual boards of their own (tools/harness/cluster.py)
    releases  build, publish and roll out signed releases to this test's units
              (tools/harness/releases.py)
    record    record(name, value): a figure for the run report
    picture   picture(name, png_bytes): a picture for the run report, under this scenario
"""

import re
import time
from dataclasses import dataclass

import pytest

from host.client import ApiClient, ApiClientError
from tools.harness import options
from tools.harness.benches import Benches
from tools.harness.report import Report


def pytest_addoption(parser):
    options.add_options(parser)


def pytest_configure(config):
    config.addinivalue_line("markers", "hil: a scenario run on units (virtual or real)")
    config._qrfleet_report = Report(options.resolve(config, "report"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not {"boards", "cluster", "picture", "tethered"} & set(item.fixturenames):
        return
    if rep.when == "call" or (rep.when == "setup" and rep.outcome != "passed"):
        item.config._qrfleet_report.add(item, rep)


def pytest_sessionfinish(session):
    report = session.config._qrfleet_report
    if report.entries:
        report.write()


@pytest.fixture(scope="session")
def _benches(request, tmp_path_factory):
    benches = Benches(request.config, tmp_path_factory)
    yield benches
    benches.close()


@pytest.fixture
def server(_benches, qrfleet_tls):
    """The server of this test's TLS setting (the session's, unless the test asks)."""
    return _benches.server(qrfleet_tls)


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
def boards(_benches, server, location, tmp_path, qrfleet_board, qrfleet_tls):
    """The units, unlinked, idle, registered at this test's location; as many as this test's
    --board value asks for (a test may ask for fewer than the session has)."""
    virtual, ports = options.parse_boards(qrfleet_board)
    wanted = virtual + len(ports)
    units = _benches.units(qrfleet_tls, virtual)
    if wanted > len(units):
        pytest.skip(f"this test wants {wanted} units; the session has {len(units)}")
    admin = server.admin()
    for unit in units:
        _release(admin, unit)
        admin.post("/api/devices", {"device_id": unit.id, "location_id": location})
        admin.post(f"/api/devices/{unit.id}/pairing")  # every test starts on the home screen
        unit.begin_test(tmp_path)
    yield units[:wanted]
    for unit in units:
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
def releases(_benches, server, location, boards):
    """Releases for this test's units, signed with the session's release key; the rollouts it
    started are aborted after it."""
    from tools.harness.releases import Releases
    from tools.harness.units import VirtualUnit

    if options.resolve(_benches.config, "server"):
        pytest.skip("update scenarios sign releases with the keys of a server they started")
    target = "virtual" if all(isinstance(u, VirtualUnit) for u in boards) else "esp32"
    made = Releases(server, location, target, _benches.release_key, _benches.server_only_key)
    yield made
    made.close()


@pytest.fixture
def tethered(_benches, server, location, tmp_path, qrfleet_tls):
    """Units tethered by USB and the bridges on their PCs (tools/harness/tether.py): units(n),
    bridge(units, name), ready(units), route; bridges stopped and cables back in after."""
    from tools.harness.tether import Tethered

    scenario = Tethered(_benches, _benches.tethered(qrfleet_tls), location, tmp_path, _release)
    yield scenario
    scenario.close()


@pytest.fixture
def record(request):
    """record(name, value): a figure of this scenario for the run report."""

    def record(name, value):
        request.node.user_properties.append((name, value))

    return record


@pytest.fixture
def picture(request):
    """picture(name, png_bytes): a PNG of this scenario (a screenshot, a unit's screen) for the
    run report: saved in its pictures/ folder and shown in report.md under the scenario."""

    def picture(name, png):
        return request.config._qrfleet_report.picture(request.node.nodeid, name, png)

    return picture


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
