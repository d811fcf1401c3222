"""``segengine run`` with a fault injected: the worker kills itself (SIGKILL) right after its
first state write of the given kind, before anything of it is published or committed.

    python tests/integration/faulty_worker.py kill_after_save        an event batch that applied events
    python tests/integration/faulty_worker.py kill_after_timer_save  due timers that changed a segment

The hook is installed in this test process only (segengine.worker.hooks); production code has
no setting for it.
"""

from __future__ import annotations

import os
import signal
import sys

from segengine.cli import main
from segengine.pipeline import BatchStats
from segengine.worker import hooks

POINTS = {
    "kill_after_save": lambda stage, stats: stage == "batch" and stats.applied > 0,
    "kill_after_timer_save": lambda stage, stats: stage == "timers" and stats.changes > 0,
}


def install(point: str) -> None:
    kill_now = POINTS[point]

    def state_written(stage: str, stats: BatchStats) -> None:
        if kill_now(stage, stats):
            os.kill(os.getpid(), signal.SIGKILL)  # the state written, nothing published or committed

    hooks.INSTALLED.state_written = state_written


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = ["segengine", "run", *sys.argv[2:]]
    main()
