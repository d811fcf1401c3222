"""Output published in the order state was written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PublishOrder:
    """Output is published in the order state was written, whoever wrote it (an event batch,
    the due loop, a re-evaluation): each takes a ticket while it holds the state lock, and
    publishes when its turn comes. So, per customer, records appear in decision order, and
    a timer's change never overtakes the event change decided before it."""

    def __init__(self) -> None:
        self._issued = 0
        self._next = 0  # the ticket whose turn it is
        self._abandoned: set[int] = set()
        self._turn = asyncio.Condition()

    def ticket(self) -> int:
        ticket = self._issued
        self._issued += 1
        return ticket

    @asynccontextmanager
    async def turn(self, ticket: int) -> AsyncIterator[None]:
        try:
            async with self._turn:
                await self._turn.wait_for(lambda: self._next == ticket)
        except BaseException:  # cancelled while waiting: the later tickets must not wait for this one
            self._abandoned.add(ticket)
            await self._advance(ticket)
            raise
        try:
            yield
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
