"""Run one snippet on CPython and on the MicroPython Unix port and return both outputs."""

import contextlib
import io


def run_both(unix_port, code):
    """(cpython_stdout, micropython_stdout) of `code`, which should only print."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<snippet>", "exec"), {"__name__": "snippet"})
    return out.getvalue(), unix_port(code)
