"""`qrfleet release keygen|build|publish`: what a release manager types, and what it prints."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from host.releases import load_public_keys, read_bundle
from tools.micropython import REPO_ROOT


def qrfleet(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "qrfleet", "release", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        timeout=60,
    )


def test_keygen_then_build_writes_a_bundle_its_key_verifies(tmp_path):
    done = qrfleet("keygen", "--out", "release-key", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "release-key.pub" in done.stdout

    again = qrfleet("keygen", "--out", "release-key", cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip().startswith("qrfleet: release-key exists already")

    done = qrfleet("build", "--version", "0.2.0", "--key", "release-key", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    bundle = (tmp_path / "qrfleet-0.2.0.qfw").read_bytes()
    release = read_bundle(bundle, load_public_keys([tmp_path / "release-key.pub"]))
    assert done.stdout.strip() == (
        f"qrfleet-0.2.0.qfw: release 0.2.0 for virtual, {len(release.files)} files, "
        f"{len(bundle)} bytes, min_free {release.manifest['min_free']} bytes"
    )


def test_build_with_a_bad_version_says_why(tmp_path):
    qrfleet("keygen", "--out", "k", cwd=tmp_path)
    done = qrfleet("build", "--version", "0.2 beta", "--key", "k", "--out", "x.qfw", cwd=tmp_path)
    assert done.returncode == 1 and "name the release like 0.2.0" in done.stderr
    assert not (tmp_path / "x.qfw").exists()


class Releases(BaseHTTPRequestHandler):
    """Stands in for a server's POST /api/releases, recording the request and answering
    `answer`: publish's part is what it sends and how it prints the reply (the server's own
    checks are the server's tests)."""

    received = []
    answer = (201, {"version": "0.2.0"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Releases.received.append((self.path, dict(self.headers), body))
        status, doc = Releases.answer
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def releases_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Releases)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Releases.received = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_publish_posts_the_bundle_as_is_and_prints_the_answer(tmp_path, releases_server):
    (tmp_path / "r.qfw").write_bytes(b'{"format": "qrfleet-release"}')
    Releases.answer = (201, {"version": "0.2.0"})
    env = {"QRFLEET_ADMIN_TOKEN": "admin-secret"}
    done = qrfleet("publish", "r.qfw", "--server", releases_server, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"version": "0.2.0"}
    ((path, headers, body),) = Releases.received
    assert (path, body) == ("/api/releases", b'{"format": "qrfleet-release"}')
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer admin-secret"

    Releases.answer = (400, {"error": "bad_release", "message": "Not signed by a release key."})
    done = qrfleet(
        "publish", "r.qfw", "--server", releases_server, "--admin-token", "t", cwd=tmp_path
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "qrfleet: Not signed by a release key. (400 bad_release)"
