"""The QR symbol a unit must draw for a payload, worked out off the event loop.

The server checks every QR a unit reports against its own encoding of the payload, with the
units' encoder (`firmware.qr`). That is pure Python: a version-40 ECC-H symbol takes ~110 ms,
which on the event loop stalls every other request, and in a thread still holds the GIL. So
encodes run in a few worker processes, and:

- each agent runs at most ENCODES_PER_AGENT at a time, so one agent cannot take every worker;
- a request waits at most ENCODE_WAIT_S for its result, then gets `EncoderBusy`;
- symbols are kept in a bounded LRU by (payload, ecc): cashier systems repeat payloads
  (a retried request, a shop's static QR), and the answer never changes.

`fits()` (planning the version only: ~5 ms at most) lets a caller refuse a payload before it
reserves a unit; `symbol()` does the whole encode once a unit is held.
"""

import asyncio
import multiprocessing
import weakref
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from firmware import qr
from firmware.proto import messages

ENCODE_WORKERS = 2
ENCODES_PER_AGENT = 1
ENCODE_WAIT_S = 5.0
CACHED_SYMBOLS = 256


class EncoderBusy(Exception):
    """No encoder result within the wait: the server is overloaded; retry later."""


@dataclass(frozen=True)
class Symbol:
    """What a unit's show_qr ack must report for the payload."""

    version: int
    mask: int
    sha256: str

    def drawn_in(self, ack):
        """Whether a unit's show_qr ack reports exactly this symbol."""
        return (ack.get("version"), ack.get("mask"), ack.get("sha256")) == (
            self.version,
            self.mask,
            self.sha256,
        )


def _warm_up():
    """Each worker's start: its first request should not pay for imports and first-use caches."""
    _encode("warm-up", "M")


def _encode(payload, ecc):
    symbol = qr.encode(payload, ecc)
    return Symbol(symbol.version, symbol.mask, messages.matrix_digest(symbol))


class Symbols:
    def __init__(self):
        self._cache = OrderedDict()
        self._slots = weakref.WeakValueDictionary()  # agent_id -> its Semaphore
        self._pool = self._new_pool()

    def _new_pool(self):
        # Spawned, not forked: the server has threads (the store's worker) a fork would copy.
        pool = ProcessPoolExecutor(
            ENCODE_WORKERS, multiprocessing.get_context("spawn"), initializer=_warm_up
        )
        # Start the workers now, not on the first requests: spawning one takes a few 100 ms.
        for _ in range(ENCODE_WORKERS):
            pool.submit(int)
        return pool

    async def close(self):
        await asyncio.to_thread(self._pool.shutdown, True, cancel_futures=True)

    async def fits(self, agent_id, payload, ecc):
        """Raises QRError unless the payload fits a QR symbol at `ecc`."""
        if (payload, ecc) not in self._cache:
            await self._run(agent_id, qr.fit, payload, ecc)

    async def symbol(self, agent_id, payload, ecc):
        """The `Symbol` for the payload; raises QRError if it does not fit."""
        key = (payload, ecc)
        symbol = self._cache.get(key)
        if symbol is None:
            symbol = await self._run(agent_id, _encode, payload, ecc)
            self._cache[key] = symbol
            if len(self._cache) > CACHED_SYMBOLS:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return symbol

    async def _run(self, agent_id, fn, payload, ecc):
        slot = self._slots.get(agent_id)
        if slot is None:
            slot = self._slots[agent_id] = asyncio.Semaphore(ENCODES_PER_AGENT)
        try:
            async with asyncio.timeout(ENCODE_WAIT_S):
                await slot.acquire()
                try:
                    future = asyncio.get_running_loop().run_in_executor(
                        self._pool, fn, payload, ecc
                    )
                except BaseException:
                    slot.release()
                    raise
                # The slot is the worker's until it finishes, even if this caller gives up.
                future.add_done_callback(lambda _: slot.release())
                return await asyncio.shield(future)
        except TimeoutError:
            raise EncoderBusy(
                f"The server could not encode this payload within {ENCODE_WAIT_S:g} s; "
                "it is busy, retry in a moment."
            ) from None
        except BrokenProcessPool:
            self._pool = (
                self._new_pool()
            )  # a worker died (e.g. killed): later requests get new ones
            raise EncoderBusy("The server's QR encoder restarted; retry the request.") from None
