"""The server's background tasks, owned in one place.

asyncio keeps only a weak reference to a task, so a task nobody holds can vanish mid-run, and
its exception is lost. `Tasks` holds every background task of one server until it ends, logs
how it failed, and on `close()` cancels and awaits them all: nothing outlives the server.
"""

import asyncio
import traceback


class Tasks:
    def __init__(self, log):
        self.log = log
        self._running = set()
        self._closed = False

    def spawn(self, coro):
        """Run `coro` in the background -> its task; once closed, nothing new starts (None)."""
        if self._closed:
            coro.close()
            return None
        task = asyncio.create_task(coro)
        self._running.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task):
        self._running.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        e = task.exception()
        self.log.error(
            "background_task_failed",
            task=task.get_coro().__qualname__,
            reason=repr(e),
            traceback="".join(traceback.format_exception(e)),
        )

    async def close(self):
        self._closed = True
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
