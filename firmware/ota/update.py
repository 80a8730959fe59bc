"""The unit's side of an update, in update mode (firmware/ota/mode.py): a signed release
arrives over the session, is checked, staged next to the running version and switched to on
trial (loader.py keeps the pointer and the trial).

The server drives it with commands (docs/updates.md); the unit answers each with where the
download stands, a position (file, offset): file 0 is the manifest, checked once it is whole
(its signature by one of the release keys in the unit's config, the board, the MicroPython
version, the free space) and removed with its directory when refused; files 1..n are the
manifest's files, each appended to the staging directory as it arrives and its SHA-256 checked
when it is whole. Nothing holds a whole file in RAM, not even the manifest.
After a dropped session or a power cut the server offers the release again and the position is
found from what is on flash, so the download resumes where it stopped.

    ota/<version>.part/   the download: manifest.json, manifest.sig (written once the manifest
                          passed its checks), then the firmware package's files
    ota/<version>/        the same directory renamed when complete: the switch's first step

Errors are CommandError: update_refused (the release is not for this unit; nothing is left),
update_failed (a file arrived corrupted, or the order of commands is wrong).
"""

import gc
import hashlib
import json
import os
import sys
from array import array
from binascii import a2b_base64, unhexlify

import loader
from firmware.ota import target
from firmware.ota.mode import free_bytes, refusal, remove, request, tidy
from firmware.proto.messages import UPDATE_FAILED, UPDATE_REFUSED, CommandError

_STAGING = ".part"
_MANIFEST = "manifest.json"
_SIG = "manifest.sig"
_REFUSED = "refused.json"
_MAX_HEAD = 2048  # a manifest's fields besides its files' entries, at the most


class Updater:
    def __init__(self, keys, running_version):
        self.keys = keys  # hex Ed25519 public keys from the config
        self.running = running_version
        self._block = bytearray(512)  # reads flash back, for hashes and the manifest
        self._forget()

    def _forget(self):
        self.version = None
        self._sig = None
        self._dir = None
        self._manifest_size = 0
        self._checking = False  # the manifest is whole: the unit restarts to check it
        self._manifest = None  # a Manifest once it passed its checks
        self._entry = None  # the file downloading now: (path, size, sha256 digest)
        self._file = 0
        self._offset = 0
        self._hash = None

    # -- commands

    def offer(self, version, size, sig, min_free):
        """`min_free` is the server's word for what the manifest says: a unit without that
        much free space refuses before writing anything (the signed figure is checked too)."""
        why = refusal(self.keys, self.running, version, min_free)
        if why:
            raise CommandError(UPDATE_REFUSED, why)
        self._forget()
        self.version = version
        self._sig = sig
        staging = loader.version_dir(version) + _STAGING
        tidy(keep=(staging, loader.version_dir(version)))
        for where in (loader.version_dir(version), staging):
            if _read_text(where + "/" + _SIG) == sig and self._resume(where):
                return self._position()
        refused = loader.read(staging + "/" + _REFUSED)
        remove(staging)
        if refused and refused["sig"] == sig:
            self._forget()
            raise CommandError(UPDATE_REFUSED, refused["reason"])
        _makedirs(staging)
        self._dir = staging
        self._manifest_size = size
        return self._position()

    def chunk(self, file, offset, data):
        if self.version is None or self._checking:
            raise CommandError(UPDATE_FAILED, "no update was offered in this session")
        if (file, offset) != (self._file, self._offset):
            return self._position()  # a retransmission, or a server behind: say where we are
        data = a2b_base64(data)
        if file == 0:
            self._manifest_chunk(offset, data)
        elif self._entry is not None:
            self._file_chunk(offset, data)
        return self._position()

    def switch(self):
        if not self._ready():
            raise CommandError(UPDATE_FAILED, "the update is not fully downloaded yet")
        for n in range(1, self._manifest.count + 1):
            path, _, digest = self._manifest.entry(n)
            if self._digest(self._dir + "/" + path) != digest:
                remove(self._dir + "/" + path)
                self._seek()
                raise CommandError(UPDATE_FAILED, "%s changed on flash; it is sent again" % path)
        final = loader.version_dir(self.version)
        if self._dir != final:
            os.rename(self._dir, final)
            self._dir = final
        loader.write(
            loader.CURRENT,
            {"version": self.version, "previous": loader.running(), "trial": True, "starts": 0},
        )
        return {"state": "installing"}  # the caller restarts the unit into it

    # -- the download

    def _resume(self, where):
        """Carry on with a download this unit checked before (its manifest is on flash)."""
        try:
            self._manifest = Manifest(where + "/" + _MANIFEST, self._block)
        except (OSError, ValueError, KeyError, TypeError):
            remove(where)
            return False
        self._dir = where
        self._seek()
        return True

    def check_staged(self, version, sig):
        """At the start of the boot after a manifest arrived whole, before the network takes
        its share of the heap (Ed25519 in Python needs room): check it. Passed, its download
        goes on when the server offers the release again; refused, that offer is refused with
        the reason."""
        where = loader.version_dir(version) + _STAGING
        try:
            _check(self.keys, version, sig, where + "/" + _MANIFEST, self._block)
        except CommandError as e:
            loader.write(where + "/" + _REFUSED, {"sig": sig, "reason": e.message})
            print("qrfleet: update %s refused: %s" % (version, e.message))
            return
        _write(where + "/" + _SIG, sig.encode())
        print("qrfleet: update %s checked" % version)

    def _ready(self):
        return self._manifest is not None and self._file > self._manifest.count

    def _position(self):
        state = "ready" if self._ready() else "downloading"
        return {
            "state": "checking" if self._checking else state,
            "file": self._file,
            "offset": self._offset,
        }

    def _manifest_chunk(self, offset, data):
        if offset + len(data) > self._manifest_size:
            raise CommandError(UPDATE_FAILED, "the manifest is longer than offered")
        path = self._dir + "/" + _MANIFEST
        with open(path, "ab" if offset else "wb") as f:
            f.write(data)
        self._offset += len(data)
        if self._offset == self._manifest_size:
            request(self.version, self._sig)  # checked at the start of the next boot
            self._checking = True

    def _file_chunk(self, offset, data):
        name, size, digest = self._entry
        path = self._dir + "/" + name
        if offset + len(data) > size:
            raise CommandError(UPDATE_FAILED, "%s is longer than its manifest says" % name)
        if offset == 0:
            _makedirs(path[: path.rfind("/")])
        with open(path, "ab" if offset else "wb") as f:
            f.write(data)
        self._hash.update(data)
        self._offset += len(data)
        if self._offset == size:
            if self._hash.digest() != digest:
                remove(path)
                self._seek(self._file)
                raise CommandError(
                    UPDATE_FAILED, "%s arrived corrupted (SHA-256 differs); sent again" % name
                )
            self._seek(self._file + 1)

    def _seek(self, first=1):
        """The position from what is on flash: the first file from `first` on that is not
        whole (its hash so far rebuilt from the bytes there), or past the last when all are.
        After a file, the search starts at the next: each entry is read from flash."""
        for n in range(first, self._manifest.count + 1):
            name, size, digest = self._manifest.entry(n)
            path = self._dir + "/" + name
            have = _size(path)
            if have == size:
                continue
            if have > size:
                remove(path)
                have = -1
            if size == 0:
                _makedirs(path[: path.rfind("/")])
                _write(path, b"")
                continue
            self._file = n
            self._offset = max(have, 0)
            self._entry = (name, size, digest)
            self._hash = hashlib.sha256()
            if have > 0:
                for block in _blocks(path, self._block):
                    self._hash.update(block)
            return
        self._file = self._manifest.count + 1
        self._offset = 0
        self._entry = None
        self._hash = None

    def _digest(self, path):
        digest = hashlib.sha256()
        for block in _blocks(path, self._block):
            digest.update(block)
        return digest.digest()


def _check(keys, version, sig, path, block):
    """The Manifest at `path`, once it is signed by one of `keys` and its release is `version`,
    for this board and MicroPython, with room for it; else CommandError(update_refused)."""
    chunks = lambda: _blocks(path, block)  # noqa: E731 - read afresh for each key
    if not _signed(keys, chunks, unhexlify(sig)):
        raise CommandError(
            UPDATE_REFUSED, "release %s is not signed by a key this unit trusts" % version
        )
    try:
        found = Manifest(path, block)
        for n in range(1, found.count + 1):
            found.entry(n)
    except (ValueError, KeyError, TypeError):
        raise CommandError(UPDATE_REFUSED, "its manifest is not one this unit reads") from None
    head = found.head
    if head["version"] != version:
        raise CommandError(
            UPDATE_REFUSED, "the manifest is for %s, not %s" % (head["version"], version)
        )
    why = target.mismatch(head, target.board(), sys.implementation.version)
    if why:
        raise CommandError(UPDATE_REFUSED, why)
    free = free_bytes() + _size(path)  # the manifest is part of what it asks
    if free < head["min_free"]:
        raise CommandError(
            UPDATE_REFUSED,
            "release %s needs %d bytes free and this unit has %d"
            % (version, head["min_free"], free),
        )
    return found


class Manifest:
    """A manifest on flash, read in place. json.loads of the whole text (~6 KB for the firmware's
    50 files) takes ~15 KB of heap in one piece, and a unit serving QRs has ~25 KB spare, in
    pieces. So one pass over the file in small blocks decodes the fields besides "files" and
    notes where each file's entry is; `entry(n)` reads and decodes just that one."""

    def __init__(self, path, block):
        self.path = path
        self._at = array("I")  # where each file's entry starts in the text
        self._length = array("H")
        head = bytearray()  # the text with each file's entry replaced by 0
        depth = 0
        start = -1
        at = 0
        for chunk in _blocks(path, block):
            for i in range(len(chunk)):
                c = chunk[i]
                if start >= 0:
                    if c == 0x7D:  # the entry's "}": entries hold no braces or brackets
                        self._at.append(start)
                        self._length.append(at + i + 1 - start)
                        start = -1
                        head.append(0x30)
                elif c == 0x7B and depth == 2:  # a "{" inside an array: a file's entry
                    start = at + i
                else:
                    head.append(c)
                    if len(head) > _MAX_HEAD:
                        raise ValueError("manifest fields too long")
                    if c == 0x5B or c == 0x7B:
                        depth += 1
                    elif c == 0x5D or c == 0x7D:
                        depth -= 1
            at += len(chunk)
        self.head = json.loads(bytes(head))
        self.count = len(self._at)
        if self.head["files"] != [0] * self.count:
            raise ValueError("manifest files are not a list of entries")

    def entry(self, n):
        """(path, size, SHA-256 digest) of file n (from 1)."""
        with open(self.path, "rb") as f:
            f.seek(self._at[n - 1])
            doc = json.loads(f.read(self._length[n - 1]))
        path = doc["path"]
        if not path.startswith("firmware/") or ".." in path:
            raise ValueError(path)  # the firmware package is all an update may write
        return path, doc["size"], unhexlify(doc["sha256"])


def _blocks(path, block):
    """The file's bytes, one `block` (a reused buffer) at a time."""
    view = memoryview(block)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(block)
            if not n:
                return
            yield view[:n]


def _signed(keys, message, signature):
    """Whether one of `keys` (hex) signed the text `message()` returns (its chunks, afresh for
    each key). The verifier's ~9 KB of code are needed once per update, at the start of a boot:
    imported here and let go after, their heap the session's."""
    from firmware.ota import ed25519

    try:
        for key in keys:
            if ed25519.verify(unhexlify(key), message(), signature):
                return True
        return False
    finally:
        package = sys.modules["firmware.ota"].__dict__
        for name in ("ed25519", "sha512"):
            sys.modules.pop("firmware.ota." + name, None)
            if name in package:
                del package[name]
        gc.collect()


# -- the filesystem


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _makedirs(path):
    at = 0
    while at >= 0:
        at = path.find("/", at + 1)
        part = path if at < 0 else path[:at]
        if _size(part) < 0:
            os.mkdir(part)
