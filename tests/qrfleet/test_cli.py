"""The `qrfleet` client commands are thin wrappers a person can read and a script can parse."""

import json
import os
import re
import subprocess
import sys

from tests.conftest import wait_for
from tools.micropython import REPO_ROOT


def qrfleet(*args, token):
    env = dict(os.environ, QRFLEET_TOKEN=token)
    return subprocess.run(
        [sys.executable, "-m", "qrfleet", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
    )


def test_devices_link_show_and_doctor(shop):
    server = shop.server
    till = shop.agent("till-1")
    unit = shop.unit(1)
    wait_for(lambda: unit.shown)
    admin_token = server.admin_token

    done = qrfleet("doctor", unit.device_id, "--url", server.url, token=admin_token)
    assert done.returncode == 0, done.stderr
    assert "online but not linked" in done.stdout

    done = qrfleet("link", "till-1", unit.shown[-1][1], "--url", server.url, token=till.token)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["agent_id"] == "till-1"

    done = qrfleet(
        "show",
        "till-1",
        "upi://pay?pa=a@b&am=1",
        "--caption",
        "1.00",
        "--url",
        server.url,
        token=till.token,
    )
    shown = json.loads(done.stdout)
    assert shown["verified"] is True and shown["device_id"] == unit.device_id

    done = qrfleet("devices", "--json", "--url", server.url, token=admin_token)
    (device,) = json.loads(done.stdout)
    assert (device["agent_id"], device["txn_id"]) == ("till-1", shown["txn_id"])

    done = qrfleet("doctor", unit.device_id, "--url", server.url, token=admin_token)
    assert done.returncode == 1 and "busy with transaction" in done.stdout

    done = qrfleet("doctor", "qrf-unknown", "--url", server.url, token=admin_token)
    assert done.returncode == 1 and "not registered" in done.stdout


def test_doctor_walks_the_path_of_a_unit_on_usb_when_it_goes_offline(shop):
    server = shop.server
    unit = shop.unit(1, via="bridge@till-3")

    done = qrfleet("doctor", unit.device_id, "--url", server.url, token=server.admin_token)
    assert done.returncode == 0, done.stderr
    assert "unit -> bridge@till-3 -> server" in done.stdout
    assert "Is the bridge running" not in done.stdout  # online: nothing to check

    shop.stop(unit)
    wait_for(
        lambda: shop.admin.get(f"/api/devices/{unit.device_id}")["status"] == "offline",
        what=f"{unit.device_id} to be offline",
    )
    done = qrfleet("doctor", unit.device_id, "--url", server.url, token=server.admin_token)
    assert done.returncode == 1
    assert "unit -> bridge@till-3 -> server" in done.stdout
    assert "reaches the server through the PC till-3" in " ".join(done.stdout.split())
    steps = [line.strip() for line in done.stdout.splitlines() if re.match(r" +\d\. ", line)]
    assert [step[:3] for step in steps] == ["1. ", "2. ", "3. ", "4. "]
    assert "bridge running on till-3" in steps[0] and "systemctl --user status" in steps[0]
    assert "USB cable" in steps[1] and f"lost unit {unit.device_id} on PORT" in steps[1]
    assert "Can till-3 reach the server" in steps[2] and "unreachable" in steps[2]
    assert "REPL" in steps[3] and "reset it" in steps[3]


def test_a_refusal_is_one_readable_line_and_a_failing_exit_code(server):
    done = qrfleet("devices", "--url", server.url, token="wrong")
    assert done.returncode == 1
    assert done.stderr.strip() == "qrfleet: That token is not valid. (401 unauthorized)"
