"""native build|status|remove: the compiled core (segengine.native).

segengine native build    compile the pure core with mypyc (about a minute; needs mypy and a C compiler)
segengine native status   which modules run: compiled or Python, and why
segengine native remove   delete the build (the Python modules run from then on)
"""

from __future__ import annotations

import time

import typer

from ..native import DEFAULT_FOLDER, MODULES, NativeError, build, remove, select, unusable
from .common import FAILED, console, out, say_error


def native_build(
    if_possible: bool = typer.Option(
        False, "--if-possible", help="no compiler or no mypy: say so and exit 0, the Python modules run"
    ),
) -> None:
    """Compile the pure core (the fold, decisions, timers, codec, pipeline) with mypyc into the
    package's _native folder; SEGENGINE_NATIVE=auto (the default) uses it from the next start."""
    if unusable(DEFAULT_FOLDER) is None:
        out.print(f"up to date: {len(MODULES)} compiled modules in {DEFAULT_FOLDER}", highlight=False)
        return
    started = time.perf_counter()
    try:
        with console.status(f"compiling {len(MODULES)} modules with mypyc (a minute or two)"):
            folder = build()
    except NativeError as exc:
        if if_possible:
            out.print(f"not compiled, the Python modules run: {exc}", highlight=False)
            return
        say_error(str(exc))
        raise typer.Exit(FAILED) from None
    out.print(
        f"compiled {len(MODULES)} modules into {folder} in {time.perf_counter() - started:.0f} s",
        highlight=False,
    )


def native_status() -> None:
    """Which modules run in a new process: compiled or Python, and why."""
    selection = select()
    if selection.error:
        say_error(selection.error)
        raise typer.Exit(FAILED)
    out.print(selection.reason, highlight=False)


def native_remove() -> None:
    """Delete the build: the Python modules run from the next start."""
    out.print("removed" if remove() else "nothing to remove: not built", highlight=False)
