"""Points where a test may act on a running worker, such as killing it right after a state
write to prove that nothing is lost or doubled. Production installs nothing here: the
worker calls each hook that is set, and none is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..pipeline import BatchStats

# stage ("batch": an event batch; "timers": due timers), what the write did
StateWritten = Callable[[str, BatchStats], None]


@dataclass(slots=True)
class Hooks:
    state_written: StateWritten | None = None  # after a state write, before anything is published


INSTALLED = Hooks()  # the hooks a worker built without its own uses (a test process sets them)
