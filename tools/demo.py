"""`make demo`: the product on virtual boards, end to end, with pictures of every screen."""

import shutil
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tools.vboard.process import running_boards
from tools.vboard.screen import save_png


def main(out, boards=3):
    console = Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qrfleet-demo-") as tmp:
        console.print(f"Booting {boards} virtual boards (MicroPython Unix port, 160K heap)...")
        with running_boards(Path(tmp) / "boards", boards) as units:
            table = Table(title="qrfleet demo: virtual boards")
            for column in ("device", "serial port", "firmware says", "screen"):
                table.add_column(column)
            for unit in units:
                log = unit.wait_for_log("qrfleet ", timeout=60)
                said = next(line for line in log.splitlines() if line.startswith("qrfleet "))
                png = out / f"{unit.device_id}.png"
                screen = save_png(unit.screen, png) if unit.screen.exists() else None
                table.add_row(unit.device_id, unit.serial_url, said, str(screen or "-"))
                shutil.copy(unit.serial_log, out / f"{unit.device_id}.serial.log")
            console.print(table)
    console.print(f"Serial logs and screens are in {out}/")
    return 0
