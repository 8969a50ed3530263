"""The endpoints watching the agent (the ``watch`` op), and the fence ``lock``
puts up for them.

An endpoint (``exec``, ``serve``) answers from a one-second cache of the agent's
answers. Each holds a ``watch`` request open; ``bump`` - after a lock, unlock,
revoke or renewal - answers every one with the new generation and waits (at most
``ACK_WAIT``) until each watcher came back with ``seen`` at that generation: an
endpoint drops its cache before it asks again, so when ``lock`` replies, no
endpoint still serves a credential from before it. A watcher that does not come
back in time is forgotten (a dead process); its endpoint serves nothing from its
cache while its link is down.
"""

from __future__ import annotations

import trio

from dyncreds import logs
from dyncreds.protocol import WATCH_HOLD

log = logs.get("agent")

ACK_WAIT = 1.0
FORGET_AFTER = 3 * WATCH_HOLD  # no watch for this long: the watcher is gone


class Watchers:
    def __init__(self) -> None:
        self.generation = 0
        self.closed = False
        self._changed = trio.Event()
        self._came_back = trio.Event()
        self._seen: dict[str, tuple[int, float]] = {}  # id -> (generation seen, when)

    async def watch(self, ident: str, seen: int) -> int:
        """One long poll: the generation, once it differs from ``seen`` (or after
        WATCH_HOLD, unchanged)."""
        self._seen[ident] = (seen, trio.current_time())
        self._came_back.set()
        if seen == self.generation and not self.closed:
            with trio.move_on_after(WATCH_HOLD):
                await self._changed.wait()
        return self.generation

    async def bump(self) -> None:
        """A change every endpoint must see before the caller replies."""
        self.generation += 1
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        now = trio.current_time()
        self._seen = {i: s for i, s in self._seen.items() if now - s[1] < FORGET_AFTER}
        with trio.move_on_after(ACK_WAIT):
            while self._behind():
                self._came_back = trio.Event()
                await self._came_back.wait()
        late = self._behind()
        for ident in late:
            del self._seen[ident]
        if late:
            log.warning("agent.watchers_late", count=len(late), generation=self.generation)

    def _behind(self) -> list[str]:
        return [i for i, (seen, _) in self._seen.items() if seen != self.generation]

    def close(self) -> None:
        """Shutting down: every watch answers now (the agent's drain waits for none)."""
        self.closed = True
        self._changed.set()
