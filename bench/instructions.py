"""Instructions per event of the batch pipeline: a figure that holds still on a busy machine.

CPU time of the same code moves by a quarter and more from run to run on a shared machine;
the instructions a run executes do not. This runs ``bench.fold`` (the pipeline in one process,
every shipped pack, no broker and no Redis) under valgrind's callgrind, on the benchmark's
workload cut to ``--events`` events over ``--customers`` customers, and again on ``BASE``
events, and prints the difference per event: start-up (imports, rules, the population
sample) falls out. The digests of what was published and stored let two versions of the code
be held to the same output.

    python -m bench.instructions                  # the compiled core when it is built
    SEGENGINE_NATIVE=off python -m bench.instructions --events 5000

Needs valgrind (Debian: ``apt-get install valgrind``). The default run takes about two
minutes: under callgrind the code runs some fifty times slower than it does alone.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.fold import next_midnight_ms, write_events
from bench.run import workload

ROOT = Path(__file__).resolve().parent.parent
BASE = 100  # events of the run whose count is subtracted (start-up)
COLLECTED = re.compile(r"Collected : (\d+)")
console = Console()


def counted(events: Path, start: int, out: Path) -> tuple[int, dict[str, Any]]:
    """Instructions of one ``bench.fold`` run under callgrind, and what the run printed."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "bench.fold",
         str(events), str(start)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"the fold under callgrind failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return int(found.group(1)), json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="events of the measured run (default 10,000)")
    parser.add_argument("--customers", type=int, default=1_000, help="customers they spread over (default 1,000)")
    parser.add_argument(
        "--keep", type=Path, help="a folder to keep the callgrind files in (callgrind_annotate reads them)"
    )
    args = parser.parse_args()
    if args.events <= BASE:
        parser.error(f"--events must be more than {BASE} (the start-up run's)")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind): it counts the instructions")
    start = next_midnight_ms()
    with tempfile.TemporaryDirectory(prefix="segengine-instructions-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        runs: dict[int, tuple[int, dict[str, Any]]] = {}
        for n in (BASE, args.events):
            events = folder / f"events-{n}.json"
            write_events(events, workload(n, args.customers))
            with console.status(f"{n:,} events over {args.customers:,} customers under callgrind ..."):
                runs[n] = counted(events, start, folder / f"callgrind-{n}.out")
    (base, _), (total, printed) = runs[BASE], runs[args.events]
    per_event = (total - base) / (args.events - BASE)
    table = Table(title="segengine: instructions per event, in-process pipeline (every shipped pack)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("core", str(printed["native"]))
    table.add_row("instructions per event", f"{per_event:,.0f}")
    table.add_row(f"instructions, {args.events:,} and {BASE} events", f"{total:,}; {base:,}")
    table.add_row("records published; timers fired", f"{printed['records']:,}; {printed['fired']:,}")
    table.add_row("published digest", printed["published"][:16])
    table.add_row("stored digest", printed["stored"][:16])
    console.print(table)
    if args.keep:
        console.print(f"callgrind files kept in {args.keep}")


if __name__ == "__main__":
    main()
