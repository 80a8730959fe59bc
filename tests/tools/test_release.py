"""Releases: a key pair, a signed bundle of the firmware package, and a reader that trusts only
a whole bundle signed by a known key."""

import base64
import json
import os
import re
import stat

import pytest

from host.releases import ReleaseError, load_public_keys, public_key, read_bundle
from tools import micropython, release
from tools.firmware_check import firmware_sources
from tools.harness.releases import broken_tree
from tools.micropython import REPO_ROOT


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """(secret key path, [its public key], [another public key])."""
    folder = tmp_path_factory.mktemp("keys")
    release.keygen(folder / "release")
    release.keygen(folder / "other")
    return (
        folder / "release",
        load_public_keys([folder / "release.pub"]),
        load_public_keys([folder / "other.pub"]),
    )


@pytest.fixture(scope="module")
def bundle(keys):
    return release.build("0.2.0", keys[0])


def test_keygen_writes_a_private_seed_and_its_public_key(tmp_path):
    release.keygen(tmp_path / "k")
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    secret, public = (tmp_path / "k").read_text(), (tmp_path / "k.pub").read_text()
    assert re.fullmatch("[0-9a-f]{64}\n", secret) and re.fullmatch("[0-9a-f]{64}\n", public)
    assert public_key(public) == bytes(release.signing_key(tmp_path / "k").verify_key)


@pytest.mark.parametrize("existing", ["k", "k.pub"])
def test_keygen_never_replaces_a_key(tmp_path, existing):
    (tmp_path / existing).write_text("kept\n")
    with pytest.raises(ReleaseError, match=f"{existing} exists already"):
        release.keygen(tmp_path / "k")
    assert (tmp_path / existing).read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_a_built_bundle_reads_back_with_its_key(keys, bundle):
    got = read_bundle(bundle, keys[1])
    sources = [s.relative_to(REPO_ROOT).as_posix() for s in firmware_sources(REPO_ROOT)]
    firmware = sorted(s[:-3] + ".mpy" for s in sources if s.startswith("firmware/"))
    assert got.version == "0.2.0" and got.bundle == bundle
    assert [path for path, _ in got.files] == firmware  # not boot.py, main.py or the loader
    assert (got.manifest["boards"], got.manifest["micropython"]) == (["virtual"], ["1.29"])
    assert (
        got.manifest["min_free"] == (sum(-(-len(d) // 4096) + 1 for _, d in got.files) + 8) * 4096
    )
    assert json.loads(bundle)["manifest"] == got.manifest_text
    assert got.manifest_text == json.dumps(got.manifest, sort_keys=True, separators=(",", ":"))


def test_a_bundle_signed_by_another_key_is_refused(keys, bundle):
    with pytest.raises(ReleaseError, match="not signed by any of the release keys"):
        read_bundle(bundle, keys[2])
    with pytest.raises(ReleaseError, match="no release keys are configured"):
        read_bundle(bundle, [])
    assert read_bundle(bundle, keys[2] + keys[1]).version == "0.2.0"


def tampered(bundle, change):
    doc = json.loads(bundle)
    change(doc)
    return json.dumps(doc).encode()


def replace_file(doc, data):
    doc["files"]["firmware/app.mpy"] = base64.b64encode(data).decode()


def app(doc):
    return base64.b64decode(doc["files"]["firmware/app.mpy"])


def edit_manifest(doc, edit):
    manifest = json.loads(doc["manifest"])
    edit(manifest)
    doc["manifest"] = json.dumps(manifest, sort_keys=True, separators=(",", ":"))


def app_entry(manifest):
    return next(f for f in manifest["files"] if f["path"] == "firmware/app.mpy")


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda d: replace_file(d, bytes(len(app(d)))), "firmware/app.mpy does not match its"),
        (lambda d: replace_file(d, app(d)[:-1]), r"app.mpy has \d+ bytes, its manifest says"),
        (lambda d: d["files"].pop("firmware/app.mpy"), "lacks firmware/app.mpy"),
        (lambda d: d["files"].update({"firmware/x.mpy": ""}), "carries firmware/x.mpy, which"),
        (lambda d: d["files"].update({"firmware/app.mpy": "%%"}), "app.mpy is not base64"),
        (lambda d: edit_manifest(d, lambda m: m.update(version="0.2.1")), "not signed by any"),
        (
            lambda d: edit_manifest(d, lambda m: app_entry(m).update(sha256="0" * 64)),
            "not signed by any",
        ),
        (lambda d: edit_manifest(d, lambda m: app_entry(m).update(size=1)), "not signed by any"),
        (lambda d: d.update(signature="00" * 64), "not signed by any"),
        (lambda d: d.update(signature="zz"), "128 lowercase hex digits"),
        (lambda d: d.update(format="zip"), "is not a qrfleet release"),
        (lambda d: d.pop("files"), 'needs a "manifest" text and a "files" object'),
    ],
)
def test_a_tampered_bundle_is_refused(keys, bundle, change, reason):
    with pytest.raises(ReleaseError, match=reason):
        read_bundle(tampered(bundle, change), keys[1])


def test_a_signed_but_unusable_manifest_is_refused(keys):
    signer = release.signing_key(keys[0])
    text = '{"format":1}'
    doc = {
        "format": "qrfleet-release",
        "manifest": text,
        "signature": signer.sign(text.encode()).signature.hex(),
        "files": {},
    }
    with pytest.raises(ReleaseError, match="manifest is unusable: the manifest has no 'version'"):
        read_bundle(json.dumps(doc).encode(), keys[1])


def test_not_a_bundle_is_refused(keys):
    with pytest.raises(ReleaseError, match="not JSON"):
        read_bundle(b"\x89PNG", keys[1])


def test_build_refuses_a_bad_version_and_a_bad_key(keys, tmp_path):
    with pytest.raises(ReleaseError, match="\"version\" '0.2 beta' must be"):
        release.build("0.2 beta", keys[0])
    (tmp_path / "k").write_text("ab\n")
    with pytest.raises(ReleaseError, match="is not a release key"):
        release.build("0.2.0", tmp_path / "k")


@pytest.mark.parametrize(
    "text, reason", [("", "64 hex digits"), ("ab" * 31, "64 hex digits"), ("xy" * 32, "64 hex")]
)
def test_an_unusable_public_key_says_why(text, reason):
    with pytest.raises(ReleaseError, match=reason):
        public_key(text)


def test_an_unreadable_public_key_file_is_named(tmp_path):
    with pytest.raises(ReleaseError, match=f"cannot read the release key {tmp_path}/absent.pub"):
        load_public_keys([tmp_path / "absent.pub"])


def test_a_release_is_built_from_another_source_tree(keys, bundle, tmp_path):
    """A test can build a broken release: here firmware/app.py raises at import."""
    root = broken_tree(tmp_path / "src")

    got = read_bundle(release.build("0.3.0-broken", keys[0], root=root), keys[1])
    ours = read_bundle(bundle, keys[1])

    changed = [p for (p, d), (_, o) in zip(got.files, ours.files, strict=True) if d != o]
    assert changed == ["firmware/app.mpy", "firmware/version.mpy"]  # and it says its version
    for path, data in got.files:
        (tmp_path / "unit" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "unit" / path).write_bytes(data)
    done = micropython.run("import firmware.app\n", path=(tmp_path / "unit",))
    assert b"RuntimeError: broken release" in done.stdout
