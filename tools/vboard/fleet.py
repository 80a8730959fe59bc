"""Several virtual boards in one process: `qrfleet vboard --count N --dir DIR`."""

import asyncio
import signal
from pathlib import Path

from tools import micropython
from tools.vboard.board import VirtualBoard


def board_dirs(directory, count):
    return [Path(directory) / f"board-{i:02d}" for i in range(1, count + 1)]


async def start_boards(directory, count, heap=micropython.DEFAULT_HEAP, on_boot=None):
    """Boot `count` boards under `directory` (reusing existing ones) and return them.

    on_boot(board) is called as each board's serial port opens and its power comes on.
    """

    async def start(path):
        board = VirtualBoard(path, heap=heap)
        await board.start()
        if on_boot:
            on_boot(board)
        return board

    return list(await asyncio.gather(*(start(p) for p in board_dirs(directory, count))))


async def run_until_stopped(boards):
    """Keep the boards running until SIGINT or SIGTERM, then power them off."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await asyncio.gather(*(b.stop() for b in boards))


def describe(board):
    """The line `qrfleet vboard` prints per board: id, serial URL, directory."""
    return f"{board.device_id} {board.serial_url} {board.dir}"
