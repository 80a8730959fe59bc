"""Gang mode: one job per serial port, all at once, with a progress bar per port and a final table.

A job is `job(port, report)`; it calls report(description, done, total) as it goes, may ask
report.confirm(question) -> bool (the bars pause while the technician answers), and returns
its result, shown in the table as str(result). One unit failing never stops the others: its error
goes in its row of the table. Threads, not processes: the work is serial I/O and esptool is
thread-safe per port.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from serial.tools import list_ports

# USB-serial bridges and native USB found on ESP32 boards: CP210x, CH340, FTDI, Espressif.
ESPRESSIF_USB_VIDS = (0x10C4, 0x1A86, 0x0403, 0x303A)


@dataclass
class Outcome:
    port: str
    ok: bool
    result: object
    error: str
    seconds: float


def detect_ports():
    """Every USB serial device that looks like an ESP32 board, sorted by name."""
    return sorted(p.device for p in list_ports.comports() if p.vid in ESPRESSIF_USB_VIDS)


def run(ports, job, console=None):
    """Run job(port, report) for every port in parallel; return their Outcomes in port order."""
    console = console or Console()
    progress = Progress(
        TextColumn("{task.fields[port]:<24}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
    )
    lock = threading.RLock()

    def confirm(question):
        with lock:
            progress.stop()
            try:
                return console.input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
            finally:
                progress.start()

    def one(port, task):
        def report(description, done=None, total=None):
            with lock:
                progress.update(task, description=description, completed=done, total=total)

        report.confirm = confirm
        started = time.monotonic()
        try:
            result = job(port, report)
        except Exception as e:  # noqa: BLE001 - any failure belongs to this unit only
            report("[red]failed[/red]")
            return Outcome(
                port, False, None, str(e) or type(e).__name__, time.monotonic() - started
            )
        report("[green]done[/green]")
        return Outcome(port, True, result, "", time.monotonic() - started)

    with progress:
        tasks = [progress.add_task("waiting", total=None, port=p) for p in ports]
        with ThreadPoolExecutor(max_workers=max(1, len(ports))) as pool:
            outcomes = list(pool.map(one, ports, tasks))
    console.print(summary(outcomes))
    return outcomes


def summary(outcomes):
    """The final table: per unit its port, result, time and any error."""
    ok = sum(o.ok for o in outcomes)
    table = Table(title=f"{ok} of {len(outcomes)} units done")
    for column in ("port", "result", "time", "error"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        result = Text(str(o.result or "ok"), style="green") if o.ok else Text("failed", style="red")
        table.add_row(Text(o.port), result, f"{o.seconds:.1f} s", Text(o.error, style="red"))
    return table
