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
