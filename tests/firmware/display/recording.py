"""A recording bus: fake I2C/SPI/pins that keep what a display controller would receive.

A mock stands in here because there is no panel on the test machine. It records at the
wire level, the way the controller tells commands from data (the D/C pin on SPI, the
control byte on I2C), so the drivers' byte streams can be checked against the datasheets.
Runs on CPython and on the MicroPython Unix port.
"""

import hashlib


class Pin:
    def __init__(self, level=0):
        self.level = level

    def __call__(self, level):
        self.level = level


class Wire:
    """What reached the controller, merged into runs of commands ("C") and data ("D").

    Data is kept as its length and SHA-256 (a 320x240 frame is 150 KB, more than the
    Unix port's test heap); short runs such as window parameters are also kept in full.
    """

    def __init__(self):
        self.runs = []

    def receive(self, kind, data):
        if not self.runs or self.runs[-1][0] != kind:
            self.runs.append((kind, bytearray(), hashlib.sha256(), [0]))
        run = self.runs[-1]
        if kind == "C" or len(run[1]) < 16:
            run[1].extend(data if kind == "C" else data[: 16 - len(run[1])])
        run[2].update(data)
        run[3][0] += len(data)

    def clear(self):
        self.runs = []

    def dump(self):
        """One line per run: what tests compare, and what the Unix port prints."""
        return "\n".join(
            describe(kind, head, digest.digest(), size[0]) for kind, head, digest, size in self.runs
        )


def describe(kind, head, digest, size):
    """`C 21007f` for commands and short data, `D 1024 <sha256>` for longer data."""
    if kind == "C" or size <= 16:
        return kind + " " + bytes(head).hex()
    return f"{kind} {size} {digest.hex()}"


def expected(*runs):
    """The dump of a stream given as ("C" | "D", bytes) runs, to compare with Wire.dump()."""
    return "\n".join(
        describe(kind, data, hashlib.sha256(data).digest(), len(data)) for kind, data in runs
    )


class SPI:
    """4-wire SPI: a byte is a command while D/C is low; nothing is received while CS is high."""

    def __init__(self, wire, dc, cs=None):
        self.wire = wire
        self.dc = dc
        self.cs = cs

    def write(self, buf):
        if self.cs is not None and self.cs.level != 0:
            raise AssertionError("SPI write with CS high: the controller would not listen")
        self.wire.receive("D" if self.dc.level else "C", buf)


class I2C:
    """SSD1306 I2C: the first byte of a transfer is the control byte (0x00 command, 0x40 data)."""

    def __init__(self, wire, addr=0x3C):
        self.wire = wire
        self.addr = addr

    def writeto(self, addr, buf):
        self.writevto(addr, [buf])

    def writevto(self, addr, bufs):
        if addr != self.addr:
            raise AssertionError(f"I2C write to 0x{addr:02x}, the panel is at 0x{self.addr:02x}")
        data = bytearray()
        for buf in bufs:
            data.extend(buf)
        control = data[0]
        if control not in (0x00, 0x40):
            raise AssertionError(f"control byte 0x{control:02x} is neither command nor data")
        self.wire.receive("D" if control == 0x40 else "C", data[1:])
