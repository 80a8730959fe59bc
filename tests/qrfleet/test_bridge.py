"""`qrfleet bridge` as a service runs it: one line per event, stopped cleanly by SIGTERM, and
settings it cannot work with refused before it starts."""

import signal
import subprocess
import sys

from tests.conftest import wait_for
from tests.host.test_bridge import free_port
from tools.micropython import REPO_ROOT


def bridge(*args, stdout=subprocess.PIPE):
    return subprocess.Popen(
        [sys.executable, "-m", "qrfleet", "bridge", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )


def test_it_says_what_it_does_and_stops_on_sigterm(tmp_path):
    port = f"socket://127.0.0.1:{free_port()}"  # nobody there: the unit's cable is out
    log = tmp_path / "bridge.log"
    with open(log, "w") as out:
        process = bridge(
            "--port", port, "--server", "https://qr.example.com", "--name", "till-3", stdout=out
        )
    try:
        wait_for(lambda: "cannot open" in log.read_text(), what="the port's failure in the log")
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    lines = log.read_text().splitlines()
    assert lines[0].endswith(f"bridge@till-3 relays {port} to https://qr.example.com")
    assert f"cannot open {port}:" in lines[1] and "(trying again every second)" in lines[1]
    assert lines[-1].endswith("bridge stopped")


def test_a_bad_server_url_is_refused_before_anything_starts():
    process = bridge("--port", "auto", "--server", "qr.example.com:8443")

    out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert out == ""
    assert err.strip() == (
        "qrfleet: server URL 'qr.example.com:8443' must look like https://HOST[:PORT] or "
        "wss://HOST[:PORT] (http:// or ws:// for a server without TLS)"
    )
