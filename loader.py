"""The unit's loader: which firmware version runs, and the trial of a new one.

The firmware a technician flashed lives at the filesystem's root (firmware/). An update stages
its version in ota/<version>/ and switches to it by rewriting ota/current.json, one small file
written atomically (a temporary file, then a rename: the config writer's technique), so a power
cut leaves the old pointer or the new one. A new version starts on trial: it has TRIAL_STARTS
starts to prove itself (its server verified a screen it drew, then told it to commit). A crash
loop, a watchdog reset, an import error or no server within the trial time sends the unit back
to the version before it, by itself.

boot.py, main.py and this file are never rewritten by an update: a broken loader could not roll
itself back. Nothing here imports the firmware package before the version is chosen, since an
imported package stays in sys.modules. Once the firmware is imported, this module lets go of
itself (its heap is the QR encoder's); the update code imports it again when it needs it.

    ota/current.json  {"version": "0.2.0", "previous": "0.1.0" or null, "trial": true, "starts": 1}
                      (no file: the flashed firmware runs; previous null: it is the flashed one)
    ota/result.json   {"version", "state": "committed" | "rolled_back", "reason"}: the last
                      update's outcome, told to servers in the unit's hello
    ota/updating.json the next boot is in update mode (firmware/ota/mode.py)
"""

import json
import os
import sys

OTA_DIR = "ota"
CURRENT = OTA_DIR + "/current.json"
RESULT = OTA_DIR + "/result.json"
UPDATING = OTA_DIR + "/updating.json"  # {"version", "sig"}: the next boot is in update mode
TRIAL_STARTS = 3


def version_dir(version):
    return OTA_DIR + "/" + version


def read(path):
    """A pointer file's object, or None when there is none (or it is unreadable: a pointer is
    only ever replaced whole, so that means it was never written)."""
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def write(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(doc))
    os.rename(tmp, path)


def status():
    """The update status a unit tells its server: the version on trial, else the last outcome."""
    current = read(CURRENT)
    if current and current.get("trial"):
        return {"version": current["version"], "state": "trial", "reason": None}
    return read(RESULT)


def running():
    """The version in ota/ the unit runs (the pointer changes only at a switch, and the unit
    restarts then), or None: the flashed firmware."""
    current = read(CURRENT)
    return current["version"] if current else None


def on_trial():
    current = read(CURRENT)
    return bool(current and current.get("trial"))


def roll_back(reason):
    """Back to the version before the one on trial; the outcome says why."""
    current = read(CURRENT)
    if not current or not current.get("trial"):
        return
    write(RESULT, {"version": current["version"], "state": "rolled_back", "reason": reason[:200]})
    if current.get("previous"):
        write(CURRENT, {"version": current["previous"], "previous": None, "trial": False})
    else:
        os.remove(CURRENT)
    print("qrfleet: update %s rolled back: %s" % (current["version"], reason))


def commit():
    current = read(CURRENT)
    if current and current.get("trial"):
        # The outcome first: cut between the two, the unit is still on trial and says so.
        write(RESULT, {"version": current["version"], "state": "committed", "reason": None})
        write(CURRENT, {"version": current["version"], "previous": None, "trial": False})


def choose():
    """Count this start against a trial (rolling back past TRIAL_STARTS) and put the chosen
    version first on sys.path; returns it (None: the flashed firmware)."""
    current = read(CURRENT)
    if current and current.get("trial"):
        starts = current.get("starts", 0) + 1
        if starts > TRIAL_STARTS:
            roll_back("it did not prove itself in %d starts (a crash loop)" % TRIAL_STARTS)
            current = read(CURRENT)
        else:
            current["starts"] = starts
            write(CURRENT, current)
    version = current["version"] if current else None
    if version:
        sys.path.insert(0, version_dir(version))
    return version


def start():
    """main.py's one call: choose the version and import it -> its firmware.app, whose main()
    the caller runs. A version on trial that cannot even be imported goes back at once; the
    board then restarts into the old one."""
    choose()
    try:
        import firmware.app
    except Exception as e:  # noqa: BLE001 - whatever a release breaks, the unit must come back
        sys.print_exception(e)
        if not on_trial():
            raise
        roll_back("it failed at import: %s: %s" % (type(e).__name__, e))
        import machine

        machine.reset()
    sys.modules.pop("loader", None)
    return firmware.app
