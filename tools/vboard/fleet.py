"""Several virtual boards in one process: `qrfleet vboard --count N --dir DIR`."""

import asyncio
import dataclasses
import functools
import signal
from dataclasses import dataclass
from pathlib import Path

from tools import image, micropython, partitions, provision
from tools.vboard import panels
from tools.vboard.board import VirtualBoard


@dataclass
class Provisioning:
    """How new boards are provisioned: for these servers, registered at this location, reaching
    them over `link` (see provision.unit_config)."""

    servers: list
    admin_token: str
    location_id: str = None
    display: str = "virtual-128x64"
    server_ca: str = None  # the certificate file https:// servers are checked against
    release_keys: tuple = ()  # the .pub files of the keys new boards take updates signed by
    link: str = "wifi"

    @functools.cached_property
    def server_ca_der(self):
        return provision.read_server_ca(self.server_ca) if self.server_ca else None

    @functools.cached_property
    def release_keys_hex(self):
        return provision.read_release_keys(self.release_keys)

    def check(self):
        """ProvisionError before any board boots (see provision.Order.check)."""
        provision.check_link(self.link, self.servers, self.server_ca_der)
        self.release_keys_hex  # noqa: B018 - read now, so a bad key file stops the run here

    def prepare(self, board):
        """Give a board without flash a config, and register it, as a technician would."""
        if (board.dir / "flash.bin").exists():
            return
        board.prepare_identity()
        secret = provision.new_secret()
        name = board.dir.name
        config = provision.unit_config(
            secret,
            self.servers,
            name,
            self.display,
            server_ca=self.server_ca_der,
            release_keys=self.release_keys_hex,
            link=self.link,
        )
        provision.register(
            self.servers[0],
            self.admin_token,
            board.device_id,
            secret,
            name,
            self.location_id,
            self.server_ca_der,
        )
        board.files = image.board_files(config)


def board_dirs(directory, count):
    return [Path(directory) / f"board-{i:02d}" for i in range(1, count + 1)]


async def start_boards(
    directory,
    count,
    heap=micropython.DEFAULT_HEAP,
    provisioning=None,
    on_boot=None,
    flash_size="4MB",
    variant="generic",
    display=None,
    link=None,
):
    """Boot `count` boards under `directory` (reusing existing ones) and return them.

    New boards get `flash_size` of flash (a key of partitions.FLASH_SIZES) holding the
    partition table of the MicroPython build `variant` (a key of partitions.VARIANTS), and
    are provisioned first when `provisioning` is given. on_boot(board) is called as each
    board's serial port opens and its power comes on.

    The boards are the hardware of the display profile `display` (default: the one
    `provisioning` gives them): for a board profile with a panel (panels.BOARDS), that panel
    is wired to each board; the virtual-* profiles have none and draw on the vscreen. A
    `display` given here is also the profile new boards are provisioned with.

    Likewise `link` (default: the one `provisioning` gives them, else "wifi"): boards on "usb"
    have no access point in range, ever, and reach their server only through a bridge on their
    serial port; a `link` given here is also the one new boards are provisioned for.
    """
    if flash_size not in partitions.FLASH_SIZES or variant not in partitions.VARIANTS:
        raise ValueError(
            f"no virtual board with {flash_size} of flash and the {variant!r} table: flash "
            f"sizes are {', '.join(partitions.FLASH_SIZES)}, variants "
            f"{', '.join(partitions.VARIANTS)}"
        )
    if provisioning:
        provisioning = dataclasses.replace(
            provisioning, display=display or provisioning.display, link=link or provisioning.link
        )
    display = display or (provisioning.display if provisioning else None)
    link = link or (provisioning.link if provisioning else "wifi")
    panel = display if display in panels.BOARDS else None

    async def start(path):
        board = VirtualBoard(
            path,
            heap=heap,
            flash_size=partitions.FLASH_SIZES[flash_size],
            table=partitions.VARIANTS[variant],
            panel=panel,
            access_point=link == "wifi",
        )
        if provisioning:
            await asyncio.to_thread(provisioning.prepare, board)
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
