"""Tables for a person: rich where the field extra brought it, plain columns on a bare server."""

try:
    from rich.console import Console
    from rich.table import Table
except ImportError:
    Console = None


def print_table(rows, columns=None, title=None, verdict=None, ok=True):
    """Print `rows` (lists of strings) under `columns` (None: a two-column key/value table),
    then `verdict` in green or red."""
    if Console is not None:
        table = Table(title=title, show_header=columns is not None)
        for column in columns or ("", ""):
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        console = Console()
        console.print(table)
        if verdict:
            console.print(verdict, style="bold green" if ok else "bold red")
        return
    lines = ([list(columns)] if columns else []) + [list(r) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))] if lines else []
    if title:
        print(title)
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    if verdict:
        print(verdict)
