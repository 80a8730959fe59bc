"""The board's filesystem image: boot.py, main.py, the firmware package and the unit's config,
and the LittleFS2 image that carries them into a unit's `vfs` partition.

Firmware modules are compiled with mpy-cross (no compiler run on the board, less RAM at import,
native/viper code for the target's architecture); boot.py and main.py stay source, as MicroPython
runs them from source.
"""

import os
import subprocess
import tempfile
from pathlib import Path

from littlefs import LittleFS, UserContext

from firmware import config as unit_config
from tools import partitions
from tools.firmware_check import compile_to, firmware_sources
from tools.micropython import REPO_ROOT

# mpy-cross -march per target: the virtual board runs the x86-64 Unix port.
ARCH = {"virtual": "x64", "esp32": "xtensawin"}
_LFS_IO_SIZE = 32


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


def littlefs_image(files, size):
    """A LittleFS2 filesystem of `size` bytes (4096-byte blocks) holding {path: bytes}."""
    # Read and program sizes as MicroPython formats a unit's filesystem (extmod/vfs_lfs.c).
    fs = LittleFS(
        block_size=partitions.SECTOR,
        block_count=size // partitions.SECTOR,
        read_size=_LFS_IO_SIZE,
        prog_size=_LFS_IO_SIZE,
        name_max=255,
    )
    for path, data in sorted(files.items()):
        parent = os.path.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(data)
    return bytes(fs.context.buffer)


def read_littlefs(image_bytes):
    """Mount a LittleFS image (bytes) read-only-in-spirit; returns a LittleFS object."""
    context = UserContext(buffer=bytearray(image_bytes))
    return LittleFS(
        context=context,
        block_size=partitions.SECTOR,
        block_count=len(image_bytes) // partitions.SECTOR,
    )
