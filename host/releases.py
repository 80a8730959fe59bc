"""Release bundles (`qrfleet-0.2.0.qfw`): read one, and trust it only if a release key signed it.

A bundle is one UTF-8 JSON object:

    {"format": "qrfleet-release",
     "manifest": "<manifest JSON text: the bytes the signature covers>",
     "signature": "<128 hex: Ed25519 signature of the manifest's UTF-8 bytes>",
     "files": {"firmware/app.mpy": "<base64>", ...}}

The manifest (firmware/ota/manifest.py, the checks the units run too) lists each file's path,
size and SHA-256, so the signature over the manifest covers the files. Release keys are
Ed25519 public keys, kept in `.pub` files as 64 hex digits.
"""

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from firmware.ota import manifest as manifest_format

BUNDLE_FORMAT = "qrfleet-release"
KEY_BYTES = 32
SIGNATURE_BYTES = 64


class ReleaseError(Exception):
    """A bundle or a release key is unusable or untrusted; the message says why."""


@dataclass(frozen=True)
class Release:
    version: str
    manifest: dict
    manifest_text: str
    signature: str  # hex
    files: list  # (path, bytes) in manifest order
    bundle: bytes  # the bundle file as read


def read_bundle(data, keys):
    """The Release in bundle bytes `data`, signed by one of `keys` (32-byte public keys) and
    whole (every file of the manifest, with its size and hash); raises ReleaseError."""
    if not keys:
        raise ReleaseError("no release keys are configured, so no bundle can be trusted")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeError):
        raise ReleaseError(
            "the bundle is not JSON: give a .qfw file from qrfleet release build"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise ReleaseError(
            f'the bundle is not a qrfleet release (its "format" is not {BUNDLE_FORMAT!r})'
        )
    text, signature, files = doc.get("manifest"), doc.get("signature"), doc.get("files")
    if not isinstance(text, str) or not isinstance(files, dict):
        raise ReleaseError('the bundle needs a "manifest" text and a "files" object')
    _check_signature(text, signature, keys)
    try:
        manifest = manifest_format.parse(text)
    except manifest_format.ManifestError as e:
        raise ReleaseError(f"the bundle's manifest is unusable: {e}") from None
    return Release(
        manifest["version"], manifest, text, signature, _files(manifest, files), bytes(data)
    )


def _check_signature(text, signature, keys):
    if (
        not isinstance(signature, str)
        or len(signature) != 2 * SIGNATURE_BYTES
        or signature.strip("0123456789abcdef")
    ):
        raise ReleaseError('the bundle\'s "signature" must be 128 lowercase hex digits')
    message, raw = text.encode(), bytes.fromhex(signature)
    for key in keys:
        try:
            VerifyKey(key).verify(message, raw)
            return
        except BadSignatureError:
            continue
    raise ReleaseError(
        "the bundle is not signed by any of the release keys: sign it with one of them, or "
        "add its public key (.pub)"
    )


def _files(manifest, files):
    """[(path, bytes)] in manifest order, each checked against its size and SHA-256."""
    listed = [entry["path"] for entry in manifest["files"]]
    extra = sorted(set(files) - set(listed))
    if extra:
        raise ReleaseError(f"the bundle carries {extra[0]}, which its manifest does not list")
    out = []
    for entry in manifest["files"]:
        path = entry["path"]
        if path not in files:
            raise ReleaseError(f"the bundle lacks {path}, which its manifest lists")
        try:
            content = base64.b64decode(files[path], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ReleaseError(f"the bundle's {path} is not base64") from None
        if len(content) != entry["size"]:
            raise ReleaseError(
                f"the bundle's {path} has {len(content)} bytes, its manifest says {entry['size']}"
            )
        if hashlib.sha256(content).hexdigest() != entry["sha256"]:
            raise ReleaseError(f"the bundle's {path} does not match its SHA-256 in the manifest")
        out.append((path, content))
    return out


def public_key(text):
    """The 32-byte Ed25519 public key in a .pub file's text (64 hex digits)."""
    hex_key = text.strip()
    if len(hex_key) != 2 * KEY_BYTES or hex_key.lower().strip("0123456789abcdef"):
        raise ReleaseError(
            "a release key (.pub) must hold 64 hex digits, the Ed25519 public key that "
            "qrfleet release keygen wrote"
        )
    return bytes.fromhex(hex_key)


def load_public_keys(paths):
    """The public keys in the .pub files `paths`; ReleaseError names a file that is unusable."""
    keys = []
    for path in paths:
        try:
            with open(path) as f:
                keys.append(public_key(f.read()))
        except OSError as e:
            raise ReleaseError(f"cannot read the release key {path}: {e.strerror}") from None
        except (ReleaseError, UnicodeError) as e:
            raise ReleaseError(f"{path}: {e}") from None
    return keys
