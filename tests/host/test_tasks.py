"""The server's background tasks: kept until they end, failures logged, all ended on close."""

import asyncio
import io
import json

from host.log import Log
from host.tasks import Tasks


def test_a_failure_is_logged_and_close_cancels_and_awaits_the_rest():
    stream = io.StringIO()
    stopped = []

    async def sweep():
        raise RuntimeError("store gone")

    async def watchdog():
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.append("watchdog")

    async def scenario():
        tasks = Tasks(Log(stream=stream))
        tasks.spawn(sweep())
        tasks.spawn(watchdog())
        await asyncio.sleep(0.01)
        await tasks.close()
        assert stopped == ["watchdog"]
        assert tasks.spawn(watchdog()) is None  # closed: nothing new starts

    asyncio.run(scenario())
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["event"] == "background_task_failed"
    assert line["task"].endswith("sweep") and "store gone" in line["reason"]
    assert "RuntimeError" in line["traceback"]
