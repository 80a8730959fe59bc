"""The virtual board's display: a framebuffer whose frames go to a publish function.

MONO_HLSB with INK = 1 is exactly PBM's P4 raster (rows padded to whole bytes, 1 =
black), so a frame is published as it is: `publish(width, height, rows)`. On the virtual
board that is `hal.show_frame`, which hands the frame to the board's supervisor; `PBMFile`
keeps it as a file instead (the tests, and tools that render on the host).
"""

import os

import framebuf


class VirtualDisplay(framebuf.FrameBuffer):
    def __init__(self, width, height, publish):
        self.width = width
        self.height = height
        self.publish = publish
        self.buffer = bytearray((width + 7) // 8 * height)
        super().__init__(self.buffer, width, height, framebuf.MONO_HLSB)

    def show(self):
        self.publish(self.width, self.height, self.buffer)


class PBMFile:
    """Publishes each frame as the binary PBM `path`, replaced atomically: written to
    `path + ".tmp"`, then renamed over `path`, so a reader never sees half a frame."""

    def __init__(self, path):
        self.path = path
        self._tmp_path = path + ".tmp"

    def __call__(self, width, height, rows):
        with open(self._tmp_path, "wb") as f:
            f.write(b"P4\n%d %d\n" % (width, height))
            f.write(rows)
        os.rename(self._tmp_path, self.path)
