# The virtual board's port layer, run by the MicroPython Unix port.
#
# It does what ports/esp32/main.c and its frozen _boot.py do on a real board: mount the flash's
# vfs partition (LittleFS2) as the root filesystem, formatting it only when it is blank and
# printing the "corrupted" text in a loop when it cannot be mounted (see mount_vfs), run
# boot.py then main.py from it, then serve the REPL on the serial port (stdin/stdout),
# including the raw REPL and raw-paste mode that mpremote uses. The host's filesystem is
# unmounted first, so the board sees only its flash: modules the port layer provides must be
# imported before that.
# The supervisor (tools/vboard/board.py) owns the process. The ESP32 port's own modules
# (machine, network, esp32) come from tools/vboard/port/, whose link.py carries the requests
# that are the chip's on a unit (a hard reset, the watchdog) to the supervisor. Soft resets end
# the process with a status that tells the supervisor how to start the next one:
#
#   4  soft reset, raw REPL stays (main.py skipped)
#   5  soft reset from the friendly REPL            other  crash: the supervisor reboots the board
#
# usage: micropython upy_port.py BOOT_MODE BANNER (the flash image: QRFLEET_FLASH_IMAGE, read
# by the board's esp32 module, through which the filesystem is mounted, as flashbdev.py does)
#   BOOT_MODE: "normal" (boot.py + main.py) or "raw" (boot.py, then the raw REPL)
#   BANNER: MicroPython's first banner line, for the image and board the supervisor booted

import sys

import vfs

_EXIT_SOFT_RAW, _EXIT_SOFT = 4, 5
# Built into the ESP32 port, provided here by tools/vboard/port/ (vscreen: the virtual board's
# screen, which a unit does not have; time and ssl: the ESP32 port's clock, see time.py).
_PORT_MODULES = ("machine", "network", "esp32", "socket", "time", "ssl", "vscreen")
_HELP = b'Type "help()" for more information.\r\n'
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
_PASTE_WINDOW = 256
_BANNER = sys.argv[2].encode() + b"\r\n"

# ports/esp32/modules/inisetup.py, word for word.
_CORRUPTED = """\
The filesystem appears to be corrupted. If you had important data there, you
may want to make a flash snapshot to try to recover it. Otherwise, perform
factory reprogramming of MicroPython firmware (completely erase flash, followed
by firmware programming).
"""
_DEFAULT_BOOT_PY = """\
# This file is executed on every boot (including wake-boot from deepsleep)
#import esp
#esp.osdebug(None)
#import webrepl
#webrepl.start()
"""

_out = sys.stdout.buffer
_in = sys.stdin.buffer


def write(data):
    _out.write(data)


def print_exception(e):
    """The traceback as a board prints it: without the frames of this port layer, which is C
    code on a real board."""
    import io

    buf = io.StringIO()
    sys.print_exception(e, buf)
    for line in buf.getvalue().split("\n"):
        if line and "upy_port.py" not in line:
            _out.write(line.encode() + b"\n")


def read_char():
    """One byte from the serial port; Ctrl-C arrives as SIGINT (KeyboardInterrupt) and maps back."""
    try:
        c = _in.read(1)
    except KeyboardInterrupt:
        return 3
    if not c:
        sys.exit(0)  # the supervisor closed the port: power off
    return c[0]


def flash_bdev():
    """flashbdev.py: the data partition labelled `vfs` (registered by main.c after the table's
    partitions when the table has none) or TinyUF2's `ffat`, or None."""
    from esp32 import Partition

    bdev = Partition.find(Partition.TYPE_DATA, label="vfs")
    if not bdev:
        bdev = Partition.find(Partition.TYPE_DATA, label="ffat", block_size=512)
    return bdev[0] if bdev else None


def mount_vfs(bdev):
    """_boot.py: mount the vfs partition (vfs.mount detects LittleFS or FAT, as on a board); if
    that fails, inisetup.setup(): a blank partition (block 0 all 0xFF) is formatted and given
    the default boot.py, anything else is reported as corrupted, every 3 s, until Ctrl-C."""
    try:
        if bdev:
            vfs.mount(bdev, "/")
        return
    except OSError:
        pass
    block = bytearray(bdev.ioctl(5, 0))
    bdev.readblocks(0, block)
    if block != b"\xff" * len(block):
        import time

        while True:
            print(_CORRUPTED)
            time.sleep(3)
    print("Performing initial setup")
    if bdev.info()[4] == "vfs":
        vfs.VfsLfs2.mkfs(bdev)
        fs = vfs.VfsLfs2(bdev)
    else:
        vfs.VfsFat.mkfs(bdev)
        fs = vfs.VfsFat(bdev)
    vfs.mount(fs, "/")
    with open("boot.py", "w") as f:
        f.write(_DEFAULT_BOOT_PY)


class Board:
    def __init__(self):
        self.globals = {"__name__": "__main__"}
        sys.path[:] = ["", ".frozen", "/lib"]

    def run_file(self, name):
        """Run a script as pyexec_file does; returns False when it ended with an exception."""
        try:
            with open(name) as f:
                source = f.read()
        except OSError:
            return True
        try:
            exec(compile(source, name, "exec"), self.globals)
        except SystemExit:
            self.soft_reset(_EXIT_SOFT)
        except BaseException as e:  # noqa: BLE001 - a board prints every crash and goes on
            print_exception(e)
            return False
        return True

    def soft_reset(self, soft_status):
        write(b"MPY: soft reboot\r\n")
        sys.exit(soft_status)

    def execute(self, source):
        try:
            exec(compile(source, "<stdin>", "exec"), self.globals)
        except SystemExit:
            self.soft_reset(_EXIT_SOFT_RAW)
        except BaseException as e:  # noqa: BLE001
            write(b"\x04")
            print_exception(e)
            write(b"\x04")
            return
        write(b"\x04\x04")

    # Raw REPL (pyexec_raw_repl): commands end with Ctrl-D; output framed by \x04 markers.
    def raw_repl(self):
        write(_RAW_BANNER)
        line = bytearray()
        while True:
            c = read_char()
            if c == 1:  # Ctrl-A: restart raw REPL, or the raw-paste request \x05 A \x01
                if line == b"\x05A":
                    line = bytearray()
                    self.raw_paste()
                    write(b">")
                    continue
                line = bytearray()
                write(_RAW_BANNER)
            elif c == 2:  # Ctrl-B: back to the friendly REPL
                write(b"\r\n")
                return
            elif c == 3:
                line = bytearray()
            elif c == 4:
                write(b"OK")
                if not line:
                    write(b"\r\nMPY: soft reboot\r\n")
                    sys.exit(_EXIT_SOFT_RAW)
                source, line = bytes(line), bytearray()
                self.execute(source)
                write(b">")
            else:
                line.append(c)

    def raw_paste(self):
        """Raw-paste mode: the host sends within a window we replenish with \x01, ends with \x04."""
        write(b"R\x01")
        write(bytes((_PASTE_WINDOW & 0xFF, _PASTE_WINDOW >> 8)))
        source = bytearray()
        remaining = _PASTE_WINDOW
        while True:
            c = read_char()
            if c == 4:
                write(b"\x04")
                break
            if c == 3:
                write(b"\x04")
                return
            source.append(c)
            remaining -= 1
            if remaining == 0:
                remaining = _PASTE_WINDOW
                write(b"\x01")
        self.execute(bytes(source))

    # Friendly REPL: line editing kept to what a technician types at a serial console.
    def friendly_repl(self):
        write(_BANNER + _HELP + b">>> ")
        line = bytearray()
        block = []
        while True:
            c = read_char()
            if c == 1:
                line = bytearray()
                block = []
                self.raw_repl()
                write(_BANNER + _HELP + b">>> ")
            elif c == 2:
                write(b"\r\n" + _BANNER + _HELP + b">>> ")
            elif c == 3:
                line = bytearray()
                block = []
                write(b"\r\nKeyboardInterrupt\r\n>>> ")
            elif c == 4 and not line and not block:
                write(b"\r\nMPY: soft reboot\r\n")
                sys.exit(_EXIT_SOFT)
            elif c in (8, 127):
                if line:
                    line = line[:-1]
                    write(b"\x08 \x08")
            elif c == 13:
                write(b"\r\n")
                text = line.decode()
                line = bytearray()
                if block or text.rstrip().endswith(":"):
                    block.append(text)
                    if text.strip():
                        write(b"... ")
                        continue
                    text = "\n".join(block)
                    block = []
                if text.strip():
                    self.interactive(text)
                write(b">>> ")
            elif c >= 32:
                line.append(c)
                _out.write(bytes((c,)))

    def interactive(self, text):
        try:
            mode = "exec" if "\n" in text else "single"
            exec(compile(text, "<stdin>", mode), self.globals)
        except SystemExit:
            self.soft_reset(_EXIT_SOFT)
        except BaseException as e:  # noqa: BLE001
            print_exception(e)


def import_port_modules():
    """Import the ESP32 port's modules while the host's filesystem is still there; afterwards
    only they stay importable, as built-in modules are on a unit (their helpers, link.py and
    tools/partitions.py, are not). They live in heap the supervisor added for them
    (QRFLEET_BUILTINS_HEAP); what they leave of it is returned, to be held for good."""
    import gc
    import os

    gc.collect()
    before = gc.mem_alloc()
    here = sys.path[0]  # tools/vboard, this script's directory
    sys.path[:0] = [here + "/port", here.rsplit("/", 1)[0]]
    for name in _PORT_MODULES:
        __import__(name)
    for name in list(sys.modules):
        if name not in _PORT_MODULES:
            del sys.modules[name]
    gc.collect()
    spare = int(os.getenv("QRFLEET_BUILTINS_HEAP")) - (gc.mem_alloc() - before)
    if spare < 0:
        raise MemoryError(f"the board's modules need {-spare} bytes more heap than it adds")
    return bytearray(spare)


def main():
    boot_mode = sys.argv[1]
    held_back = import_port_modules()  # noqa: F841 - kept for the life of the process
    bdev = flash_bdev()
    vfs.umount("/")  # the host's filesystem
    sys.stderr.write("qrfleet-port: ready\n")  # from here on, SIGINT is a KeyboardInterrupt
    try:
        mount_vfs(bdev)
    except KeyboardInterrupt as e:  # out of the corrupted loop: on, without a filesystem
        print_exception(e)
    import os

    os.chdir("/")
    board = Board()
    try:
        board.run_file("boot.py")
        if boot_mode == "raw":
            board.raw_repl()
        else:
            board.run_file("main.py")
    except KeyboardInterrupt as e:
        print_exception(e)
    while True:
        try:
            board.friendly_repl()
        except KeyboardInterrupt:
            write(b"\r\n")


main()
