"""A release's manifest: what it holds, which units it is for, and the checks a unit and the
server both run before trusting one (docs: the bundle and manifest formats of `qrfleet release`).

    {"format": 1, "version": "0.2.0", "boards": ["esp32"], "micropython": ["1.29"],
     "min_free": 123456,
     "files": [{"path": "firmware/app.mpy", "size": 1234, "sha256": "<64 hex>"}, ...]}

The manifest text is what the release key signs; `parse` checks a text whose signature was
already verified, so a field it does not know is refused rather than ignored (the signer
meant something this firmware would not do). Errors are ManifestError (a ValueError) with a
sentence saying what is wrong and how to fix it.

The bundle carries the `firmware` package only: boot.py, main.py and loader.py choose the
version to run and guard its trial, so an update never rewrites them.
"""

import json

from firmware.compat import const
from firmware.ota.target import BOARDS

FORMAT = const(1)
MAX_FILES = const(96)
_MAX_VERSION_CHARS = const(32)
_BLOCK = const(4096)  # a unit's LittleFS block
_SPARE_BLOCKS = const(8)  # room for littlefs metadata and the unit's own writes meanwhile
_SHA256_HEX = const(64)
_FIELDS = ("format", "version", "boards", "micropython", "min_free", "files")
_FILE_FIELDS = ("path", "sha256", "size")
_VERSION_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-"
_PATH_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_HEX = "0123456789abcdef"


class ManifestError(ValueError):
    """The manifest is unusable, or not for this unit; the message says why."""


def parse(text):
    """The manifest dict from its JSON text, every field checked; raises ManifestError."""
    try:
        manifest = json.loads(text)
    except (ValueError, UnicodeError):
        raise ManifestError(
            "the manifest is not valid JSON: build the release again with qrfleet release build"
        ) from None
    if not isinstance(manifest, dict):
        raise ManifestError("the manifest must be a JSON object: build the release again")
    for key in manifest:
        if key not in _FIELDS:
            raise ManifestError(
                "the manifest has a field %r this firmware does not know: build the release "
                "with the manifest format %d fields only" % (key, FORMAT)
            )
    for key in _FIELDS:
        if key not in manifest:
            raise ManifestError("the manifest has no %r: build the release again" % key)
    if manifest["format"] != FORMAT or not _is_int(manifest["format"]):
        raise ManifestError(
            "manifest format %r is not %d: build the release with a qrfleet that makes "
            "format %d" % (manifest["format"], FORMAT, FORMAT)
        )
    _check_version(manifest["version"])
    _check_boards(manifest["boards"])
    _check_micropython(manifest["micropython"])
    if not _is_int(manifest["min_free"]) or manifest["min_free"] < 0:
        raise ManifestError(
            'manifest "min_free" must be a number of bytes (an integer >= 0), not %r'
            % (manifest["min_free"],)
        )
    _check_files(manifest["files"])
    return manifest


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _only(text, chars):
    for c in text:
        if c not in chars:
            return False
    return True


def _check_version(version):
    if (
        not isinstance(version, str)
        or not 1 <= len(version) <= _MAX_VERSION_CHARS
        or not _only(version, _VERSION_CHARS)
    ):
        raise ManifestError(
            'manifest "version" %r must be 1 to %d characters of A-Z a-z 0-9 . _ + -: '
            "name the release like 0.2.0" % (version, _MAX_VERSION_CHARS)
        )


def _check_boards(boards):
    known = sorted(BOARDS.values())
    if not isinstance(boards, list) or not boards:
        raise ManifestError(
            'manifest "boards" must be a non-empty list of board names (%s)' % ", ".join(known)
        )
    for name in boards:
        if name not in known:
            raise ManifestError(
                'manifest "boards" names %r, which is no board: use %s' % (name, ", ".join(known))
            )


def _check_micropython(versions):
    if not isinstance(versions, list) or not versions:
        raise ManifestError(
            'manifest "micropython" must be a non-empty list of MicroPython versions like "1.29"'
        )
    for version in versions:
        if not isinstance(version, str) or _major_minor(version) is None:
            raise ManifestError(
                'manifest "micropython" names %r: a MicroPython version is "major.minor", '
                'like "1.29"' % (version,)
            )


def _major_minor(text):
    """(major, minor) of "major.minor", or None."""
    parts = text.split(".")
    if len(parts) != 2:
        return None
    for part in parts:
        if not part or not _only(part, "0123456789"):
            return None
    return int(parts[0]), int(parts[1])


def _check_files(files):
    if not isinstance(files, list) or not files:
        raise ManifestError('manifest "files" must be a non-empty list of {path, size, sha256}')
    if len(files) > MAX_FILES:
        raise ManifestError(
            "the manifest lists %d files, more than the %d a unit takes: ship fewer modules"
            % (len(files), MAX_FILES)
        )
    previous = ""
    for n, entry in enumerate(files):
        if not isinstance(entry, dict) or sorted(entry) != list(_FILE_FIELDS):
            raise ManifestError(
                'manifest "files" item %d must be {"path", "size", "sha256"} and nothing else' % n
            )
        path = entry["path"]
        _check_path(path)
        if path == previous:
            raise ManifestError('manifest "files" lists %s twice: list each file once' % path)
        if path < previous:
            raise ManifestError(
                'manifest "files" must be sorted by path: %s comes after %s' % (path, previous)
            )
        previous = path
        if not _is_int(entry["size"]) or entry["size"] < 0:
            raise ManifestError(
                "%s: size must be a number of bytes (an integer >= 0), not %r"
                % (path, entry["size"])
            )
        digest = entry["sha256"]
        if not isinstance(digest, str) or len(digest) != _SHA256_HEX or not _only(digest, _HEX):
            raise ManifestError(
                "%s: sha256 must be 64 lowercase hex digits, not %r" % (path, digest)
            )


def _check_path(path):
    """Relative, under firmware/, segments of [A-Za-z0-9_.-] other than . and .., ends .mpy."""
    ok = isinstance(path, str) and path.startswith("firmware/") and path.endswith(".mpy")
    if ok:
        for segment in path.split("/"):
            if segment in ("", ".", "..") or not _only(segment, _PATH_CHARS):
                ok = False
    if not ok:
        raise ManifestError(
            "manifest file path %r must be a relative path under firmware/ ending in .mpy, "
            "its parts of A-Z a-z 0-9 _ . - (no . or ..)" % (path,)
        )


def min_free(sizes):
    """Bytes a unit's filesystem must have free to take files of `sizes`: each file in whole
    blocks plus one for its metadata, and spare blocks for the rest."""
    blocks = _SPARE_BLOCKS
    for size in sizes:
        blocks += (size + _BLOCK - 1) // _BLOCK + 1
    return blocks * _BLOCK
