"""Run `qrfleet vboard` as a separate process and learn its boards from what it prints.

Tests and the demo use this so that boards run exactly as a technician starts them.
"""

import os
import selectors
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tools import micropython


@dataclass(frozen=True)
class BoardInfo:
    device_id: str
    serial_url: str
    dir: Path

    @property
    def serial_log(self):
        return self.dir / "serial.log"

    @property
    def screen(self):
        return self.dir / "display.pbm"

    def log_text(self):
        return self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""

    def wait_for_log(self, text, timeout=20, start=0):
        """Wait until the serial log holds `text` after offset `start`; returns the log."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()
            if text in log[start:]:
                return log
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.device_id} did not print {text!r}; log ends:\n{log[-2000:]}"
                )
            time.sleep(0.05)


@contextmanager
def running_boards(directory, count, heap=micropython.DEFAULT_HEAP, timeout=60, extra_args=()):
    """Start `qrfleet vboard` for `count` boards, yield their BoardInfo, power them off after."""
    argv = [
        sys.executable,
        "-m",
        "qrfleet",
        "vboard",
        "--count",
        str(count),
        "--dir",
        str(directory),
        "--heap",
        heap,
        *extra_args,
    ]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=micropython.REPO_ROOT,
        env=dict(os.environ),
    )
    try:
        yield _read_boards(proc, count, timeout)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()


def _read_boards(proc, count, timeout):
    boards, buffer = [], b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while len(boards) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                raise TimeoutError(f"only {len(boards)} of {count} virtual boards booted")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"qrfleet vboard exited with {proc.wait()}")
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                device_id, url, path = line.decode().split(" ", 2)
                boards.append(BoardInfo(device_id, url, Path(path)))
    return boards
