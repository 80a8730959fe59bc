"""Rollouts: the decision from a rollout and its units, then whole rollouts through the API to
simulated units (tools/simdevice.py), which take updates as units do on the wire."""

import functools
import io
import time
from contextlib import redirect_stdout

import pytest

from host.client import ApiClientError
from host.registry import Device, Rollout
from host.registry.rules import plan_waves
from host.rollouts import ADVANCE, COMPLETE, PAUSE, assess
from qrfleet.cli import main
from tests.host.conftest import Shop
from tools import release
from tools.serverproc import running_server
from tools.simdevice import FIRMWARE, SimulatedUnit

# -- the decision, no I/O


def units(*specs):
    """Devices from (device_id, location_id, update state or None, firmware)."""
    return {
        d: Device(d, location_id=loc, firmware=fw, update=state and {**UPDATE, "state": state})
        for d, loc, state, fw in specs
    }


UPDATE = {"version": "0.2.0", "rollout_id": "r1", "reason": "ImportError"}


def rollout(devices, steps=(50, 100), wave=0, abort_after=1, **fields):
    waves = plan_waves(devices.values(), steps)
    return Rollout("r1", "0.2.0", None, steps, abort_after, waves, wave=wave, **fields)


def test_the_canary_wave_is_the_first_unit_of_each_location_then_the_steps_of_the_rest():
    devices = units(*((f"u{n}", "L1" if n < 6 else "L2", None, FIRMWARE) for n in range(1, 10)))

    assert plan_waves(devices.values(), (50, 100)) == (
        ("u1", "u6"),
        ("u2", "u3", "u4", "u5"),
        ("u7", "u8", "u9"),
    )
    assert plan_waves(devices.values(), (100,))[1:] == (("u2", "u3", "u4", "u5", "u7", "u8", "u9"),)


def test_a_wave_advances_once_every_unit_is_done_and_the_last_completes():
    devices = units(
        ("u1", "L1", "committed", "0.2.0"),
        ("u2", "L1", "trial", "0.2.0"),
        ("u3", "L1", None, FIRMWARE),
    )
    plan = rollout(devices, steps=(100,))

    assessment = assess(plan, devices)
    assert (assessment.step, assessment.to_push(plan)) == (ADVANCE, [])
    assert assessment.waves[1] == {"trial": 1, "pending": 1}

    nearly = assess(rollout(devices, steps=(100,), wave=1), devices)
    assert (nearly.step, nearly.to_push(rollout(devices, steps=(100,), wave=1))) == (None, ["u3"])

    devices = units(("u1", "L1", "committed", "0.2.0"), ("u2", "L1", None, "0.2.0"))
    assert assess(rollout(devices, steps=(100,), wave=1), devices).step == COMPLETE


def test_failures_reaching_the_threshold_pause_the_rollout_naming_the_units():
    devices = units(
        ("u1", "L1", "rolled_back", FIRMWARE),
        ("u2", "L2", "downloading", FIRMWARE),
        ("u3", "L1", None, FIRMWARE),
    )

    paused = assess(rollout(devices), devices)
    tolerated = assess(rollout(devices, abort_after=2), devices)
    resumed_past = assess(rollout(devices, accepted=("u1",)), devices)

    assert paused.step == PAUSE
    assert paused.reason == (
        "1 unit(s) of wave 1 did not take 0.2.0, the threshold is 1: u1 rolled back (ImportError)"
    )
    assert paused.to_push(rollout(devices)) == []
    assert (tolerated.step, tolerated.to_push(rollout(devices))) == (None, ["u2"])
    assert resumed_past.step is None


def test_a_rollout_that_is_not_running_decides_nothing_and_pushes_nothing():
    devices = units(("u1", "L1", "committed", "0.2.0"))
    for state in ("paused", "aborted", "completed"):
        plan = rollout(devices, state=state)
        assessment = assess(plan, devices)
        assert (assessment.step, assessment.to_push(plan)) == (None, [])


# -- whole rollouts, through the API


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A release key, another key, and bundles of the firmware signed with each."""
    root = tmp_path_factory.mktemp("release-keys")
    for name in ("release", "other"):
        release.keygen(root / name)
    return {
        "pub": root / "release.pub",
        "public": bytes.fromhex((root / "release.pub").read_text()),
        "0.2.0": release.build("0.2.0", root / "release"),
        "other": release.build("0.2.0", root / "other"),
    }


@pytest.fixture
def server(tmp_path, keys):
    with running_server(tmp_path, heartbeat_s=1, extra=["--release-key", str(keys["pub"])]) as srv:
        yield srv


@pytest.fixture
def fleet(server, background, keys):
    """A shop whose units trust the release key; `fleet.units(n, fail=...)` starts them."""
    shop = Shop(server, background)

    def start(count, fail=()):
        return [
            shop.unit(
                n,
                kind=functools.partial(
                    SimulatedUnit,
                    release_keys=[keys["public"]],
                    fail_at_import=["0.2.0"] if n in fail else [],
                ),
            )
            for n in range(1, count + 1)
        ]

    shop.start_units = start
    yield shop
    for unit in shop.units:
        if getattr(unit, "task", None) and not unit.task.done():
            shop.stop(unit)


def rollout_of(admin, rollout_id, state, timeout=30):
    """The rollout once it is in `state`."""
    deadline = time.monotonic() + timeout
    while (doc := admin.get(f"/api/rollouts/{rollout_id}"))["state"] != state:
        assert time.monotonic() < deadline, f"rollout not {state} in {timeout} s: {doc}"
        time.sleep(0.1)
    return doc


def test_a_rollout_takes_every_unit_to_the_new_version_wave_by_wave(fleet, keys):
    admin = fleet.admin
    sims = fleet.start_units(6)

    published = admin.request("POST", "/api/releases", keys["0.2.0"])
    started = admin.post("/api/rollouts", {"version": "0.2.0", "steps": [50, 100]})
    done = rollout_of(admin, started["rollout_id"], "completed")

    assert (published["version"], published["boards"]) == ("0.2.0", ["virtual"])
    assert [[u["device_id"] for u in w["units"]] for w in started["waves"]] == [
        [sims[0].device_id],
        [s.device_id for s in sims[1:4]],
        [s.device_id for s in sims[4:]],
    ]
    assert done["states"] == {"committed": 6}
    assert {s.firmware for s in sims} == {"0.2.0"}
    listed = admin.get("/api/devices")["devices"]
    assert {(d["firmware"], d["update"]["state"], d["update"]["version"]) for d in listed} == {
        ("0.2.0", "committed", "0.2.0")
    }
    kinds = [e["action"] for e in admin.get("/api/audit?limit=1000")["audit"]]
    assert kinds.count("advance_rollout") == 2 and kinds.count("complete_rollout") == 1
    out = io.StringIO()
    with redirect_stdout(out):
        assert (
            main(
                [
                    "rollout",
                    "status",
                    "--server",
                    fleet.server.url,
                    "--admin-token",
                    fleet.server.admin_token,
                ]
            )
            == 0
        )
    assert "completed" in out.getvalue() and sims[5].device_id in out.getvalue()


def test_a_release_that_fails_on_the_canary_pauses_the_rollout_before_the_others(fleet, keys):
    admin = fleet.admin
    sims = fleet.start_units(4, fail={1})
    admin.request("POST", "/api/releases", keys["0.2.0"])

    started = admin.post("/api/rollouts", {"version": "0.2.0"})
    paused = rollout_of(admin, started["rollout_id"], "paused")

    canary = paused["waves"][0]["units"][0]
    assert (canary["device_id"], canary["state"], canary["firmware"]) == (
        sims[0].device_id,
        "rolled_back",
        FIRMWARE,
    )
    assert paused["wave"] == 1 and sims[0].device_id in paused["reason"]
    assert "failed to import" in paused["reason"]
    assert [(s.firmware, s.session.update) for s in sims[1:]] == [(FIRMWARE, None)] * 3
    aborted = admin.post(f"/api/rollouts/{started['rollout_id']}/abort", {"reason": "bad"})
    assert (aborted["state"], aborted["reason"]) == ("aborted", "bad")


def test_only_a_bundle_signed_with_a_release_key_is_published(fleet, keys, tmp_path):
    admin = fleet.admin

    with pytest.raises(ApiClientError) as other_key:
        admin.request("POST", "/api/releases", keys["other"])
    with pytest.raises(ApiClientError) as not_json:
        admin.request("POST", "/api/releases", b"\x00 not a bundle")
    with pytest.raises(ApiClientError) as unknown:
        admin.post("/api/rollouts", {"version": "0.2.0"})

    assert (other_key.value.status, other_key.value.code) == (400, "bad_release")
    assert "not signed by any of the release keys" in other_key.value.message
    assert (not_json.value.status, not_json.value.code) == (400, "bad_release")
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    assert admin.get("/api/releases") == {"releases": []}
    (tmp_path / "keyless").mkdir()
    with running_server(tmp_path / "keyless", heartbeat_s=1) as keyless:
        with pytest.raises(ApiClientError) as no_keys:
            keyless.admin().request("POST", "/api/releases", keys["0.2.0"])
    assert (no_keys.value.status, no_keys.value.code) == (409, "no_release_keys")


def test_the_admin_pauses_resumes_and_aborts_a_rollout(fleet, keys):
    admin = fleet.admin
    fleet.unit(1, online=False)  # never connects: the rollout waits on it
    admin.request("POST", "/api/releases", keys["0.2.0"])
    again = admin.request("POST", "/api/releases", keys["0.2.0"])  # the same bytes: fine
    rollout_id = admin.post("/api/rollouts", {"version": "0.2.0"})["rollout_id"]

    paused = admin.post(f"/api/rollouts/{rollout_id}/pause", {"reason": "lunch rush"})
    with pytest.raises(ApiClientError) as second:
        admin.post("/api/rollouts", {"version": "0.2.0"})
    resumed = admin.post(f"/api/rollouts/{rollout_id}/resume")
    aborted = admin.post(f"/api/rollouts/{rollout_id}/abort")
    with pytest.raises(ApiClientError) as resumed_again:
        admin.post(f"/api/rollouts/{rollout_id}/resume")
    with pytest.raises(ApiClientError) as by_an_agent:
        fleet.agent("till-1").post(f"/api/rollouts/{rollout_id}/pause")

    assert again["version"] == "0.2.0"
    assert [(d["state"], d["reason"]) for d in (paused, resumed, aborted)] == [
        ("paused", "lunch rush"),
        ("running", None),
        ("aborted", None),
    ]
    assert (second.value.status, second.value.code) == (409, "rollout_active")
    assert (resumed_again.value.status, resumed_again.value.code) == (409, "conflict")
    assert by_an_agent.value.status == 403
    assert [r["state"] for r in admin.get("/api/rollouts")["rollouts"]] == ["aborted"]
