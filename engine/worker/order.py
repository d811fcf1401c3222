"""Output published in the order state was written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..errors import PublishRefused


class PublishOrder:
    """Output is published in the order state was written, whoever wrote it (an event batch,
    the due loop, a re-evaluation): each takes a ticket while it holds the state lock, and
    publishes when its turn comes. So, per customer, records appear in decision order, and
    a timer's change never overtakes the event change decided before it.

    A turn whose publish fails (or is abandoned) breaks the chain for the tickets after it
    whose writes began before that failure: their outboxes may hold its records, which were
    never published, so they are refused (``PublishRefused``) rather than published out of
    order and their outboxes dropped. A writer takes ``epoch()`` before it writes and hands
    it to ``ticket()``."""

    def __init__(self) -> None:
        self._issued = 0
        self._next = 0  # the ticket whose turn it is
        self._abandoned: set[int] = set()
        self._turn = asyncio.Condition()
        self._since: dict[int, int] = {}  # ticket -> the epoch its write began in
        self.failed: list[int] = []  # tickets whose publish failed, was refused or abandoned, in that order

    def epoch(self) -> int:
        return len(self.failed)

    def ticket(self, since: int | None = None) -> int:
        """The next ticket; ``since``: the epoch taken before the write (default: now)."""
        ticket = self._issued
        self._issued += 1
        self._since[ticket] = self.epoch() if since is None else since
        return ticket

    @asynccontextmanager
    async def turn(self, ticket: int) -> AsyncIterator[None]:
        since = self._since.pop(ticket, self.epoch())
        try:
            async with self._turn:
                await self._turn.wait_for(lambda: self._next == ticket)
        except BaseException:  # cancelled while waiting: the later tickets must not wait for this one
            self.failed.append(ticket)
            self._abandoned.add(ticket)
            await self._advance(ticket)
            raise
        try:
            if any(f < ticket for f in self.failed[since:]):
                raise PublishRefused(f"an earlier write's output (ticket {min(self.failed[since:])}) was not published")
            yield
        except BaseException:
            self.failed.append(ticket)
            raise
        finally:
            await self._advance(ticket)

    async def _advance(self, ticket: int) -> None:
        async with self._turn:
            if self._next == ticket:
                self._next += 1
                while self._next in self._abandoned:
                    self._abandoned.discard(self._next)
                    self._next += 1
                self._turn.notify_all()
