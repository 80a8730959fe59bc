"""A MicroPython .bin as micropython.org publishes it, flashed with `qrfleet flash` onto units
of each flash size and build variant, then provisioned: every unit comes online and mounts a
filesystem that covers the whole partition MicroPython registers for it at boot."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from qrfleet import cli
from tools import partitions as P
from tools import provision
from tools.serverproc import running_server
from tools.vboard.process import running_boards

from .units import stand_in_firmware

TOKEN = "admin-secret"
MPREMOTE = Path(sys.executable).parent / "mpremote"


@pytest.fixture
def server(tmp_path):
    with running_server(tmp_path, TOKEN) as server:
        yield server


def board_of(directory, flash_size, variant="generic"):
    return running_boards(
        directory, 1, extra_args=["--flash-size", flash_size, "--variant", variant]
    )


def statvfs(url):
    done = subprocess.run(
        [str(MPREMOTE), "connect", url, "exec", "import os; print(os.statvfs('/'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("flash_size", "variant", "table"),
    [
        ("4MB", "generic", P.GENERIC),
        ("8MB", "generic", P.GENERIC),
        ("16MB", "generic", P.GENERIC),
        ("4MB", "ota", P.GENERIC_OTA),
        ("4MB", "generic", P.LEGACY_GENERIC),  # before 1.26: `vfs` in the table
        ("16MB", "generic", P.LEGACY_GENERIC),  # ... which wins over the rest of the flash
    ],
)
def test_flashed_and_provisioned_unit_mounts_its_whole_runtime_vfs(
    tmp_path, server, flash_size, variant, table
):
    firmware = tmp_path / "micropython.bin"
    firmware.write_bytes(stand_in_firmware(table))
    vfs = P.vfs_partition(list(table), P.FLASH_SIZES[flash_size])

    with board_of(tmp_path / "boards", flash_size, variant) as (board,):
        url = board.serial_url
        flashed = ["flash", "--port", url, "--firmware", str(firmware), "--target", "virtual"]
        assert cli.main(flashed) == 0
        provisioned = ["provision", "--port", url, "--server", server.url]
        assert cli.main([*provisioned, "--admin-token", TOKEN, "--target", "virtual"]) == 0

        assert server.admin().get(f"/api/devices/{board.device_id}")["status"] == "online"
        block_size, _fragment, blocks, *_ = statvfs(url)
        assert (block_size, block_size * blocks) == (P.SECTOR, vfs.size)


def test_a_16_mib_unit_costs_the_serial_link_about_what_a_4_mib_unit_does(tmp_path, server):
    order = provision.Order([server.url], TOKEN, target="virtual")
    sent = {}
    for flash_size in ("4MB", "16MB"):
        with board_of(tmp_path / flash_size, flash_size) as (board,):
            sent[flash_size] = provision.provision_unit(board.serial_url, order).bytes_sent
    assert sent["16MB"] <= 1.2 * sent["4MB"], sent
