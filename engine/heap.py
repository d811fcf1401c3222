"""The garbage collector of a long-running worker (``segengine run``).

A worker's objects are nearly all freed by their reference counts the moment they are
dropped; the cyclic collector finds almost nothing to free (a few thousand objects over a
benchmark run, most of them at start-up) but walks every object it tracks to learn that.
With every shipped pack and the state cache filling, the interpreter's young collections
walked 40,000-130,000 objects each (30-120 ms), its middle ones up to 290 ms and a full
one 540 ms: pauses that every event in flight waits out, and most of a p99.

So the heap is handled in three steps:

- ``settle_heap``, once the worker is set up: what exists then (the rules, the clients, the
  modules) is collected once and frozen out of every later collection, and the young
  generation is collected every 200,000 container allocations instead of 700
  (``GC_THRESHOLDS``: collecting every 700 promoted a batch's live objects to the older
  generations, whose collections took about a sixth of the worker's CPU with the core rules);
- ``after_batch``, after each batch of events and each turn of timers or re-evaluations: what
  it left alive (the states it cached, mostly) is frozen too, so a collection only ever walks
  what the batch in hand made, and a batch of 2,000 events (some 130,000 objects left alive)
  ends before the young generation is full: most batches are never walked at all. A cycle that
  becomes garbage after that freeze is not freed until the next sweep (cycles are rare here:
  the young collections of a benchmark run free a few thousand objects in all);
- a sweep every ``SEGENGINE_GC_SWEEP_S`` seconds (600 by default; 0: never): the frozen objects
  are unfrozen, collected in full and frozen again. That is the one long pause left (0.3-0.7 s
  with the benchmark's 20,000 customers cached; it freed 0-226 objects each time), once in ten
  minutes.

Nothing changes until ``settle_heap`` runs: code that only imports the worker (the tests) keeps
the interpreter's own collections.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("segengine.heap")

# Allocations between young collections, and young (then middle) collections between older
# ones: the interpreter's defaults are 700, 10, 10. Without the freeze after each batch, a young
# generation of 200,000 took 146 ms to walk; with it, the young generation rarely fills.
GC_THRESHOLDS = (200_000, 20, 100)


class _Managed:
    """Whether ``settle_heap`` ran in this process, and when the frozen heap was last swept."""

    settled = False
    sweep_s = 0.0
    swept = 0.0


def settle_heap(sweep_s: float = 600.0) -> None:
    """Tune the collector for a long-running worker (see the module's text); ``sweep_s``: seconds
    between full collections of what ``after_batch`` froze (0: never)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    _Managed.settled, _Managed.sweep_s, _Managed.swept = True, sweep_s, time.monotonic()


def after_batch() -> None:
    """A batch is done: what it left alive is frozen out of later collections, and the frozen
    heap is swept when its time has come. Nothing before ``settle_heap``."""
    if not _Managed.settled:
        return
    if _Managed.sweep_s and time.monotonic() - _Managed.swept >= _Managed.sweep_s:
        sweep()
    else:
        gc.freeze()


def sweep() -> int:
    """Collect everything, the frozen objects too, and freeze what is left; returns how many
    objects were unreachable."""
    started = time.perf_counter()
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    _Managed.swept = time.monotonic()
    log.debug("heap swept: %d unreachable objects, %.0f ms", found, (time.perf_counter() - started) * 1000)
    return found
