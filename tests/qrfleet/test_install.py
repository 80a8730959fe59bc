"""A plain `pip install qrfleet` is the server: it serves without the field tools and says
which extra brings them."""

import shutil
import subprocess
import sys
import urllib.request

import pytest

from tools.micropython import REPO_ROOT
from tools.serverproc import running_server

PACKAGE_FILES = ("pyproject.toml", "README.md", "firmware", "host", "tools", "qrfleet")
FIELD_ONLY = ("esptool", "serial", "mpremote", "PIL", "zxingcpp", "littlefs", "rich", "websockets")


@pytest.fixture(scope="module")
def server_install(tmp_path_factory):
    """A fresh venv with `pip install .` and no extras."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    source.mkdir()
    for name in PACKAGE_FILES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [venv / "bin/python", "-m", "pip", "install", "--quiet", str(source)],
        check=True,
        timeout=600,
    )
    return venv / "bin"


@pytest.mark.slow
def test_a_plain_install_has_none_of_the_field_tools(server_install):
    found = subprocess.run(
        [
            server_install / "python",
            "-c",
            "import importlib.util, sys; "
            "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))",
            *FIELD_ONLY,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.split() == []


@pytest.mark.slow
def test_a_plain_install_serves_the_api(server_install, tmp_path):
    with running_server(tmp_path, command=[server_install / "qrfleet"]) as server:
        with urllib.request.urlopen(f"{server.url}/api/health", timeout=10) as answer:
            assert answer.status == 200
        server.admin().post("/api/locations", {"location_id": "shop", "name": "Shop"})
        server.admin().post(
            "/api/devices",
            {"device_id": "qrf-0000000000a1", "secret": "s" * 32, "location_id": "shop"},
        )
        listed = subprocess.run(
            [server_install / "qrfleet", "devices", "--url", server.url],
            capture_output=True,
            text=True,
            timeout=60,
            env={"QRFLEET_TOKEN": server.admin_token},
        )
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == [
        "device",
        "status",
        "agent",
        "location",
        "server",
        "last",
        "seen",
        "screen",
    ]
    assert row.split()[:4] == ["qrf-0000000000a1", "offline", "-", "shop"]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["flash", "provision", "vboard", "demo"])
def test_a_field_command_says_which_extra_to_install(server_install, tmp_path, command):
    argv = {
        "flash": ["flash", "--port", "/dev/null", "--firmware", str(tmp_path / "fw.bin")],
        "provision": ["provision", "--port", "/dev/null", "--server", "http://127.0.0.1:1"],
        "vboard": ["vboard", "--dir", str(tmp_path)],
        "demo": ["demo", "--out", str(tmp_path)],
    }[command]
    done = subprocess.run(
        [server_install / "qrfleet", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={"QRFLEET_ADMIN_TOKEN": "t", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert f"qrfleet: {command} needs the field tools" in done.stderr
    assert "pip install 'qrfleet[field]'" in done.stderr
    assert not list(tmp_path.iterdir())  # nothing was started or written
