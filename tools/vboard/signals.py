"""Levels the board's silicon holds, driven by the supervisor and read by the port whenever its
code asks (tools/vboard/port/link.py): one ASCII digit per signal in a small file, rewritten in
place so that the port, which keeps the file open, sees each change at once.

    offset 0  GPIO0: 1 high, 0 low (the BOOT button held, or DTR through the auto-reset circuit)
    offset 1  the access point: 1 in range, 0 out of range (the harness took Wi-Fi down)
"""

import os

GPIO0 = 0
ACCESS_POINT = 1


class Signals:
    def __init__(self, path):
        self.path = str(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.pwrite(self._fd, b"11", 0)

    def set(self, signal, level):
        os.pwrite(self._fd, b"1" if level else b"0", signal)

    def close(self):
        os.close(self._fd)
