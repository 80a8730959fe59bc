"""A unit takes a release only from its own keys, resumes a cut download where it stopped, and a
version on trial goes back by itself; on the MicroPython Unix port, heap capped, the way a unit
writes its filesystem."""

import hashlib
import json
import os

import pytest
from nacl.signing import SigningKey

import loader
from firmware.ota import manifest

# The server's side of the exchange, run on the unit's interpreter: `deliver` sends the release
# as host/updates.push does (offer, then what the unit asks for), or stops after `budget`
# chunks, as a power cut would. `boot` is a unit's start in update mode (firmware/app.py): a new
# updater, which checks a manifest that arrived whole first.
_DRIVER = """
import json, os, sys
from binascii import b2a_base64
os.chdir(%(dir)r)
import loader
from firmware.ota.mode import commit
from firmware.ota.update import Updater
from firmware.proto.messages import CommandError
release = json.loads(sys.stdin.read())
blobs = [release["manifest"].encode()] + [bytes.fromhex(h) for h in release["files"]]
KEYS = release["keys"]
CHUNK = 300
unit = None

def boot(keys=KEYS):
    global unit
    unit = Updater(keys, "0.1.0")
    marker = loader.read(loader.UPDATING)
    if marker:
        os.remove(loader.UPDATING)
        if marker["sig"]:
            unit.check_staged(marker["version"], marker["sig"])

def offer():
    return unit.offer(release["version"], len(blobs[0]), release["sig"], release["min_free"])

def deliver(budget=10000, corrupt=None):
    try:
        ack = offer()
        while ack["state"] != "ready" and budget:
            budget -= 1
            if ack["state"] == "checking":
                boot(unit.keys)
                ack = offer()
                continue
            f, o = ack["file"], ack["offset"]
            data = blobs[f][o:o + CHUNK]
            if (f, o) == corrupt:
                data = bytes([data[0] ^ 1]) + data[1:]
            ack = unit.chunk(f, o, b2a_base64(data).decode().strip())
        return ack
    except CommandError as e:
        return {"error": e.code, "message": e.message}

def listing(path="ota"):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []

def show(name, value):
    print(name + "=" + json.dumps(value))
"""


def _release(signer, version="0.2.0", min_free=None, files=None):
    files = files or {
        "firmware/app.mpy": os.urandom(700),
        "firmware/qr/encoder.mpy": os.urandom(1500),
        "firmware/version.mpy": b"",
    }
    doc = {
        "format": 1,
        "version": version,
        "boards": ["virtual"],
        "micropython": ["1.29"],
        "min_free": manifest.min_free(len(d) for d in files.values())
        if min_free is None
        else min_free,
        "files": [
            {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for p, d in sorted(files.items())
        ],
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return {
        "version": version,
        "min_free": doc["min_free"],
        "manifest": text,
        "sig": signer.sign(text.encode()).signature.hex(),
        "files": [files[p].hex() for p in sorted(files)],
        "keys": [signer.verify_key.encode().hex()],
    }


def _run(unix_port, tmp_path, release, code):
    out = unix_port(_DRIVER % {"dir": str(tmp_path)} + code, stdin=json.dumps(release).encode())
    return {
        k: json.loads(v)
        for k, v in (line.split("=", 1) for line in out.splitlines() if "=" in line)
    }


@pytest.fixture
def signer():
    return SigningKey.generate()


def test_a_release_signed_with_another_key_is_refused_and_nothing_stays(
    unix_port, tmp_path, signer
):
    release = _release(SigningKey.generate())
    got = _run(
        unix_port,
        tmp_path,
        release,
        f"boot([{signer.verify_key.encode().hex()!r}])\n"
        "show('other', deliver())\n"
        "boot([])\n"
        "show('none', deliver())\n"
        "show('left', listing())\n",
    )
    assert got["other"]["error"] == "update_refused"
    assert "not signed by a key this unit trusts" in got["other"]["message"]
    assert got["none"]["error"] == "update_refused"
    assert "--release-key" in got["none"]["message"]
    assert got["left"] == []


def test_a_unit_with_too_little_free_space_refuses_before_writing(unix_port, tmp_path, signer):
    release = _release(signer, min_free=1 << 50)
    got = _run(
        unix_port,
        tmp_path,
        release,
        "boot()\nshow('ack', deliver())\nshow('left', listing())\n",
    )
    assert got["ack"]["error"] == "update_refused"
    assert f"needs {1 << 50} bytes free" in got["ack"]["message"]
    assert got["left"] == []


def test_a_cut_download_resumes_where_it_stopped_then_switches_on_trial(
    unix_port, tmp_path, signer
):
    release = _release(signer)
    got = _run(
        unix_port,
        tmp_path,
        release,
        # 2 manifest chunks, the boot that checks it, the first file's 3 chunks and 2 of the
        # second: then the power goes.
        "boot()\n"
        "show('cut', deliver(budget=8))\n"
        "boot()\n"
        "show('resumed_at', offer())\n"
        "show('done', deliver())\n"
        "show('switch', unit.switch())\n"
        "show('pointer', loader.read(loader.CURRENT))\n"
        "show('status', loader.status())\n"
        "show('left', listing())\n",
    )
    assert got["cut"] == {"state": "downloading", "file": 2, "offset": 600}
    assert got["resumed_at"] == got["cut"]  # not from the start
    assert got["done"]["state"] == "ready"
    assert got["switch"] == {"state": "installing"}
    assert got["pointer"] == {"version": "0.2.0", "previous": None, "trial": True, "starts": 0}
    assert got["status"] == {"version": "0.2.0", "state": "trial", "reason": None}
    assert got["left"] == ["0.2.0", "current.json"]


def test_a_corrupted_chunk_fails_its_file_which_is_sent_again(unix_port, tmp_path, signer):
    release = _release(signer)
    got = _run(
        unix_port,
        tmp_path,
        release,
        "boot()\nshow('corrupt', deliver(corrupt=(1, 300)))\nshow('again', deliver())\n",
    )
    assert got["corrupt"]["error"] == "update_failed"
    assert "firmware/app.mpy arrived corrupted" in got["corrupt"]["message"]
    assert got["again"]["state"] == "ready"


def test_a_version_on_trial_goes_back_after_its_starts_and_a_proven_one_stays(
    unix_port, tmp_path, signer
):
    release = _release(signer)
    got = _run(
        unix_port,
        tmp_path,
        release,
        "boot()\n"
        "deliver()\n"
        "unit.switch()\n"
        "show('runs', [loader.choose() for _ in range(loader.TRIAL_STARTS + 1)])\n"
        "show('rolled_back', loader.status())\n"
        "boot()\n"
        "show('offer_again', deliver())\n"
        "unit.switch()\n"
        "show('runs_now', loader.choose())\n"
        "show('committed', commit())\n"
        "show('status', loader.status())\n"
        "show('after_commit', loader.choose())\n"
        "show('left', listing())\n",
    )
    assert got["runs"] == ["0.2.0"] * loader.TRIAL_STARTS + [None]
    assert got["rolled_back"]["state"] == "rolled_back"
    assert "did not prove itself in 3 starts" in got["rolled_back"]["reason"]
    assert got["offer_again"]["state"] == "ready"  # its files were still there
    assert got["runs_now"] == "0.2.0"
    assert got["status"] == {"version": "0.2.0", "state": "committed", "reason": None}
    assert got["after_commit"] == "0.2.0"
    assert got["left"] == ["0.2.0", "current.json", "result.json"]


def test_a_power_cut_inside_the_switch_leaves_the_old_version_and_the_next_offer_switches(
    unix_port, tmp_path, signer
):
    release = _release(signer)
    got = _run(
        unix_port,
        tmp_path,
        release,
        "boot()\n"
        "deliver()\n"
        # The switch's first step, the rename, and then the power goes: no new pointer yet.
        "os.rename('ota/0.2.0.part', 'ota/0.2.0')\n"
        "show('runs', loader.choose())\n"
        "boot()\n"
        "show('offer_again', offer())\n"
        "show('switch', unit.switch())\n"
        "show('runs_now', loader.choose())\n",
    )
    assert got["runs"] is None  # the flashed version, whole
    assert got["offer_again"] == {"state": "ready", "file": 4, "offset": 0}
    assert got["switch"] == {"state": "installing"}
    assert got["runs_now"] == "0.2.0"
