"""Update mode, and what a unit keeps of updates on its filesystem (docs/updates.md).

A unit serving QRs has too little heap left, and in too small pieces, for a download's code
and messages. So the first offer of a release only leaves a marker (`request`), and the unit
restarts into update mode: the same firmware without the QR encoder, whose heap is the
download's (firmware/app.py, firmware/ota/update.py).
"""

import os

import loader
from firmware.compat import ticks_ms
from firmware.proto.messages import UPDATE_FAILED, UPDATE_REFUSED, CommandError

_DIR = 0x4000  # os.ilistdir's type of a directory


def handle(unit, kind, msg, running, restart):
    """An update command for `unit` (firmware/app.py's Unit) -> the ack's fields, or
    CommandError. In update mode its Updater serves them; in the usual mode the first offer
    restarts the unit into update mode. `restart()` resets the unit once the answer is out."""
    if kind == "update_commit":
        commit()
        return {"state": "committed"}
    updater = unit.updater
    if updater is None:
        if kind != "update_offer":
            raise CommandError(UPDATE_FAILED, "no update was offered")
        why = refusal(unit.cfg["release_keys"], running, msg["version"], msg["min_free"])
        if why:
            raise CommandError(UPDATE_REFUSED, why)
        request(msg["version"])
        restart()
        return {"state": "restarting"}
    unit.update_heard = ticks_ms()
    try:
        if kind == "update_offer":
            return updater.offer(msg["version"], msg["size"], msg["sig"], msg["min_free"])
        if kind == "update_chunk":
            fields = updater.chunk(msg["file"], msg["offset"], msg["data"])
            if fields["state"] == "checking":  # in the next boot, before the network
                restart()
            return fields
        fields = updater.switch()
    except CommandError as e:
        if e.code == UPDATE_REFUSED:  # nothing to wait for: back to serving QRs
            restart()
        raise
    restart()
    return fields


def refusal(keys, running, version, min_free):
    """Why this unit cannot take release `version` (whose manifest says it needs `min_free`
    bytes free), as far as it can tell before the manifest arrives; None when it may."""
    if not keys:
        return "this unit trusts no release key (provision it with --release-key)"
    if version == running:
        return "this unit already runs %s" % version
    if loader.on_trial():
        return "%s is still on trial here" % running
    free = free_bytes() + size(loader.version_dir(version) + ".part")  # what it has of it
    if free < min_free:
        return "release %s needs %d bytes free and this unit has %d" % (version, min_free, free)
    return None


def request(version, sig=None):
    """The next boot is in update mode for `version`; with `sig`, the signature of the manifest
    staged for it, which that boot checks first (the caller resets the board)."""
    try:
        os.mkdir(loader.OTA_DIR)
    except OSError:
        pass  # there already
    loader.write(loader.UPDATING, {"version": version, "sig": sig})


def free_bytes():
    try:
        st = os.statvfs(loader.OTA_DIR)
    except OSError:
        st = os.statvfs(".")
    # A full LittleFS counts the blocks of writes in flight as used too, and the port reports
    # the blocks left as an unsigned number: past zero it wraps to billions.
    return 0 if st[4] > st[2] else st[0] * st[4]


def commit():
    """The version on trial stays (its server verified it), and the one before it goes."""
    loader.commit()
    tidy(keep=())


def size(path):
    """Bytes of a file, or of all a directory holds; 0 when it is not there."""
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        try:
            return os.stat(path)[6]
        except OSError:
            return 0
    return sum(size(path + "/" + entry[0]) for entry in entries)


def remove(path):
    """A file, or a directory and all it holds; nothing when it is not there."""
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        entries = None
    if entries is None:
        try:
            os.remove(path)
        except OSError:
            pass
        return
    for entry in entries:
        remove(path + "/" + entry[0])
    os.rmdir(path)


def tidy(keep):
    """Everything in ota/ but the pointers, the running version and `keep` goes: the filesystem
    never fills up with old versions and abandoned downloads."""
    running = loader.running()
    if running:
        keep += (loader.version_dir(running),)
    try:
        entries = list(os.ilistdir(loader.OTA_DIR))
    except OSError:
        return
    for entry in entries:
        path = loader.OTA_DIR + "/" + entry[0]
        if entry[1] == _DIR and path not in keep:
            remove(path)
