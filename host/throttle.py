"""Wrong pairing codes, counted per guesser: past a few within a window, it waits a while.

A pairing code has 40 bits, so guessing one is hopeless anyway; the throttle makes an attempt
noticed (logged, counted in `/api/metrics`) and keeps a guesser from spending the server's time.
The API keeps one per agent and one per unit. Counts live in this process: behind several
instances, each throttles the guesses it sees. Keys are agents and units that exist (a code is
only checked for a registered unit of the agent's location), so the tables stay small.
"""

import time
from collections import deque

# Wrong codes allowed within the window, and how long a guesser then waits.
GUESSES_PER_AGENT = 5
GUESSES_PER_UNIT = 10
GUESS_WINDOW_S = 60.0
GUESS_BLOCK_S = 300.0


class GuessThrottle:
    def __init__(self, limit, window_s=GUESS_WINDOW_S, block_s=GUESS_BLOCK_S, clock=time.monotonic):
        self.limit = limit
        self.window_s = window_s
        self.block_s = block_s
        self._clock = clock
        self._wrong = {}  # key -> deque of the times of its recent wrong guesses
        self._blocked = {}  # key -> when its wait ends

    def wait_s(self, key):
        """Seconds `key` must still wait before guessing again (0: it may guess)."""
        until = self._blocked.get(key)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._blocked[key]
            return 0.0
        return left

    def wrong(self, key):
        """Count a wrong guess -> True if it made `key` wait (once per wait)."""
        now = self._clock()
        times = self._wrong.setdefault(key, deque())
        times.append(now)
        while times[0] <= now - self.window_s:
            times.popleft()
        if len(times) < self.limit:
            return False
        del self._wrong[key]
        self._blocked[key] = now + self.block_s
        return True
