"""Structured logs: one JSON object per line on stderr, so operators can grep and ship them."""

import json
import sys
import time
import traceback

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Log:
    def __init__(self, level="info", stream=None, **context):
        self.threshold = LEVELS[level]
        self.stream = stream or sys.stderr
        self.context = context

    def bind(self, **context):
        """A logger that adds `context` to every line (e.g. server_id, device_id)."""
        child = Log(stream=self.stream, **{**self.context, **context})
        child.threshold = self.threshold
        return child

    def _write(self, level, event, fields):
        if LEVELS[level] < self.threshold:
            return
        line = {
            "ts": round(time.time(), 3),
            "level": level,
            "event": event,
            **self.context,
            **fields,
        }
        self.stream.write(json.dumps(line, default=str) + "\n")
        self.stream.flush()

    def debug(self, event, **fields):
        self._write("debug", event, fields)

    def info(self, event, **fields):
        self._write("info", event, fields)

    def warning(self, event, **fields):
        self._write("warning", event, fields)

    def error(self, event, **fields):
        self._write("error", event, fields)

    def exception(self, event, **fields):
        self._write("error", event, {**fields, "traceback": traceback.format_exc()})


class Tally:
    """Counts an event and logs it at most once every `every_s`, with how many happened since the
    line before: a flood of one failure (refused connections, accept errors) is one line per
    interval, not one per occurrence."""

    def __init__(self, log, event, every_s=10, level="warning"):
        self.log = log
        self.event = event
        self.every_s = every_s
        self.level = level
        self.count = 0
        self._logged = None

    def note(self, **fields):
        self.count += 1
        now = time.monotonic()
        if self._logged is None or now - self._logged >= self.every_s:
            self.log._write(self.level, self.event, {**fields, "count": self.count})
            self.count = 0
            self._logged = now
