"""Benchmark of `qrfleet provision` on virtual boards, against a real `qrfleet serve`.

    .venv/bin/python -m tools.bench.provision_bench [--boards 8]

Reports, in one run:
- per unit, the two ways of putting the files on it: the filesystem image written by esptool
  (compressed, in download mode) and file-by-file copy over mpremote (raw REPL on a running
  unit): bytes sent on the serial link for the files, and the time from "go" to "online";
- the filesystem image on a 4 MiB and a 16 MiB unit (a runtime vfs of 2 and 14 MiB): bytes
  sent (the partition erased, then only its sectors that hold data), beside what the whole
  partition compressed would cost, as `esptool write-flash` sends an image (target: 16 MiB
  within 1.2x of 4 MiB);
- gang mode: wall time for 1, 4 and 8 new units provisioned in parallel (filesystem image, with
  the already-provisioned check), and its ratio to one unit (target: 8 units <= 1.5x one).
Units run the firmware on the MicroPython Unix port, one process each, on this machine's cores
alongside the server, the boards' supervisor and this tool (whose RFC 2217 client and esptool
parse every byte in Python): the gang figures include that contention, which a real gang,
one USB link and one chip per unit, does not have.
A report, not a test: nothing is asserted.
"""

import argparse
import os
import tempfile
import time
import zlib
from pathlib import Path

from rich.console import Console

from firmware import config
from tools import gang, image, partitions, provision
from tools.image import littlefs_image
from tools.serverproc import running_server
from tools.vboard.process import running_boards

TOKEN = "bench-admin"


def provision_one(port, order):
    started = time.monotonic()
    unit = provision.provision_unit(port, order)
    return unit.bytes_sent, time.monotonic() - started


def by_flash_size(directory, server_url, flash_size):
    """Bytes sent and seconds for one new unit with `flash_size` of flash."""
    with running_boards(directory, 1, extra_args=["--flash-size", flash_size]) as boards:
        boards[0].wait_for_log("qrfleet ")
        order = provision.Order([server_url], TOKEN, target="virtual")
        return provision_one(boards[0].serial_url, order)


def whole_partition_bytes(server_url, flash_size):
    """What writing the unit's whole vfs partition compressed would send (zlib level 9, as
    esptool compresses): the same files and a config of the same shape."""
    unit_config = provision.unit_config(
        provision.new_secret(), [server_url], "x", provision.DEFAULT_DISPLAY["virtual"]
    )
    files = {
        **image.board_files(target="virtual"),
        config.CONFIG_PATH: config.dumps(unit_config).encode(),
    }
    vfs = partitions.vfs_partition(partitions.GENERIC, partitions.FLASH_SIZES[flash_size])
    return len(zlib.compress(littlefs_image(files, vfs.size), 9))


def gang_seconds(directory, server_url, count, quiet):
    """Wall time for `count` new boards provisioned at once (boot time not counted)."""
    with running_boards(directory, count) as boards:
        for board in boards:
            board.wait_for_log("qrfleet ")
        order = provision.Order([server_url], TOKEN, target="virtual")
        started = time.monotonic()
        outcomes = gang.run(
            [b.serial_url for b in boards],
            lambda port, report: provision.provision_unit(port, order, report),
            quiet,
        )
        seconds = time.monotonic() - started
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} units failed: {failed[0].error}")
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, default=8, help="largest gang (default 8)")
    args = parser.parse_args(argv)
    sizes = sorted({1, min(4, args.boards), args.boards})
    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run

    with tempfile.TemporaryDirectory() as tmp, running_server(tmp, TOKEN) as server:
        with running_boards(Path(tmp) / "single", 1) as boards:
            boards[0].wait_for_log("qrfleet ")
            port = boards[0].serial_url
            image = provision.Order([server.url], TOKEN, target="virtual", force=True)
            files = provision.Order(
                [server.url], TOKEN, target="virtual", force=True, files_only=True
            )
            provision_one(port, image)  # compiles the firmware once, as any run does first
            per_unit = {
                "filesystem image (esptool)": provision_one(port, image),
                "file by file (mpremote)": provision_one(port, files),
            }
        flash_sizes = {
            size: (
                by_flash_size(Path(tmp) / f"flash-{size}", server.url, size),
                whole_partition_bytes(server.url, size),
            )
            for size in ("4MB", "16MB")
        }
        ganged = {n: gang_seconds(Path(tmp) / f"gang-{n}", server.url, n, quiet) for n in sizes}

    print("per unit, files on the serial link and time until online:")
    for way, (sent, seconds) in per_unit.items():
        print(f"  {way:<28} {sent:>9,} bytes  {seconds:6.2f} s")
    print("filesystem image by flash size, bytes on the serial link and time until online:")
    print(f"  {'unit':<6} {'sent':>9}  {'time':>8}   {'whole partition compressed':>26}")
    for size, ((sent, seconds), whole) in flash_sizes.items():
        print(f"  {size:<6} {sent:>9,}  {seconds:6.2f} s   {whole:>26,}")
    (sent_4, _), whole_4 = flash_sizes["4MB"]
    (sent_16, _), whole_16 = flash_sizes["16MB"]
    print(f"  16 MiB / 4 MiB: {sent_16 / sent_4:.2f}x sent, {whole_16 / whole_4:.2f}x whole")
    print("gang mode, filesystem image, wall time until all online:")
    for n, seconds in ganged.items():
        print(
            f"  {n} unit{'s' if n > 1 else ' '}  {seconds:6.2f} s  {seconds / ganged[1]:4.2f}x one"
        )


if __name__ == "__main__":
    main()
