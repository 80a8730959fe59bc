# The virtual board's port layer, run by the MicroPython Unix port.
#
# It does what ports/esp32/main.c does on a real board: mount the flash's `vfs` partition
# (LittleFS2) as the root filesystem, run boot.py then main.py from it, then serve the REPL on
# the serial port (stdin/stdout), including the raw REPL and raw-paste mode that mpremote uses.
# The supervisor (tools/vboard/board.py) owns the process; resets end the process with a
# status that tells the supervisor how to start the next one:
#
#   3  hard reset (machine.reset())        4  soft reset, raw REPL stays (main.py skipped)
#   5  soft reset from the friendly REPL   other  crash: the supervisor reboots the board
#
# usage: micropython upy_port.py IMAGE VFS_OFFSET VFS_SIZE BOOT_MODE
#   BOOT_MODE: "normal" (boot.py + main.py) or "raw" (boot.py, then the raw REPL)

import sys

import vfs

_BLOCK = 4096
_EXIT_HARD, _EXIT_SOFT_RAW, _EXIT_SOFT = 3, 4, 5
_BANNER = b"MicroPython v1.29.0 on 2026-07-05; qrfleet virtual board with ESP32\r\n"
_HELP = b'Type "help()" for more information.\r\n'
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
_PASTE_WINDOW = 256

_out = sys.stdout.buffer
_in = sys.stdin.buffer


class Partition:
    """Block device over one partition of the flash image file (LittleFS extended interface)."""

    def __init__(self, path, offset, size):
        self.file = open(path, "r+b")
        self.offset = offset
        self.blocks = size // _BLOCK
        self.erased = b"\xff" * _BLOCK

    def readblocks(self, block, buf, off=0):
        self.file.seek(self.offset + block * _BLOCK + off)
        self.file.readinto(buf)

    def writeblocks(self, block, buf, off=0):
        self.file.seek(self.offset + block * _BLOCK + off)
        self.file.write(buf)
        self.file.flush()

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return _BLOCK
        if op == 6:  # erase a block
            self.writeblocks(arg, self.erased)
            return 0
        return 0


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


class Board:
    def __init__(self, image, vfs_offset, vfs_size):
        self.globals = {"__name__": "__main__"}
        bdev = Partition(image, vfs_offset, vfs_size)
        try:
            vfs.mount(vfs.VfsLfs2(bdev), "/")
        except OSError as e:
            # As the ESP32 port does: a blank or corrupt vfs partition is formatted.
            write(b"qrfleet: vfs partition not mountable (%s), formatting\r\n" % str(e).encode())
            vfs.VfsLfs2.mkfs(bdev)
            vfs.mount(vfs.VfsLfs2(bdev), "/")
        import os

        os.chdir("/")
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
        except SystemExit as e:
            self.reset_from_exit(e, _EXIT_SOFT)
        except BaseException as e:  # noqa: BLE001 - a board prints every crash and goes on
            print_exception(e)
            return False
        return True

    def reset_from_exit(self, exc, soft_status):
        code = exc.args[0] if exc.args else 0
        if code == _EXIT_HARD:
            sys.exit(_EXIT_HARD)
        write(b"MPY: soft reboot\r\n")
        sys.exit(soft_status)

    def execute(self, source):
        try:
            exec(compile(source, "<stdin>", "exec"), self.globals)
        except SystemExit as e:
            self.reset_from_exit(e, _EXIT_SOFT_RAW)
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
        except SystemExit as e:
            self.reset_from_exit(e, _EXIT_SOFT)
        except BaseException as e:  # noqa: BLE001
            print_exception(e)


def main():
    image, vfs_offset, vfs_size, boot_mode = sys.argv[1:5]
    sys.stderr.write("qrfleet-port: ready\n")  # from here on, SIGINT is a KeyboardInterrupt
    board = Board(image, int(vfs_offset), int(vfs_size))
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
