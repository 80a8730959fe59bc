"""Deadlines for asyncio stream writers: a peer that stops reading holds nothing for long.

asyncio's `drain()` waits for as long as the peer leaves its window closed, and `close()` waits
until every buffered byte is sent; against a peer that reads nothing, both wait forever.
"""

import asyncio


async def drain(writer, timeout_s):
    """`writer.drain()`, at most `timeout_s`: asyncio.TimeoutError if the peer took too little."""
    if writer.transport.get_write_buffer_size() == 0:
        # All of it is with the kernel, so drain() cannot wait: spare the deadline's timer and
        # task, one per message at thousands of units.
        await writer.drain()
    else:
        await asyncio.wait_for(writer.drain(), timeout_s)


def close(writer):
    """Close now: gracefully if nothing is left unsent, else drop what is."""
    transport = writer.transport
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()
