"""The command line: wiring only (the commands live in engine/commands/).

segengine run     one worker on the configured Kafka and Redis (--embedded: a development stack)
segengine dev     start the embedded stack and keep it up until Ctrl-C
segengine demo    the CDNOW demo on the embedded stack
segengine demo-produce   only produce the demo stream to the configured Kafka
segengine replay  backfill a file of historical events into the input topics
segengine inspect|segments|tail|produce  look customers up, watch changes, send events
segengine topics create|list|describe    the topics of topics/topics.yaml on the configured Kafka
segengine rules check|explain|simulate   rules tooling for marketers
segengine export   a segment's members as CSV or JSON Lines
segengine rebuild  recover from a Redis that lost data: replay the input topics into it
segengine fit clv  fit the CLV models (BG/NBD, Gamma-Gamma) on a purchase history -> models/clv.yaml
segengine discover k-means clusters of the population's features -> a rules pack (nearest_cluster)
segengine native build|status|remove   the pure core compiled with mypyc (optional)

Settings, logging, running a command, its one-line failure and the exit codes:
engine/commands/common.py.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

from . import NATIVE
from .commands import discover, export, fit, lookup, native, rebuild, rules, stack, topics
from .commands.common import FAILED, INTERRUPTED, USAGE, json_logs, out, say_error

HELP = {"help_option_names": ["-h", "--help"]}


def _flags_without_placeholder(params: list[Any]) -> list[Any]:
    """A flag takes no value, so its help shows no ``<bool>`` placeholder (typer shows one for
    every option); options that take a value keep theirs."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_placeholder(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_placeholder(super().get_params(ctx))


app = typer.Typer(
    cls=Group,
    add_completion=False,
    no_args_is_help=True,
    context_settings=HELP,
    help="segengine: streaming customer segmentation.",
)
topics_app = typer.Typer(
    cls=Group, no_args_is_help=True, context_settings=HELP, help="Kafka topics, as declared in topics/topics.yaml."
)
rules_app = typer.Typer(
    cls=Group,
    no_args_is_help=True,
    context_settings=HELP,
    help="Check rules, explain a customer's segments, preview a change.",
)
native_app = typer.Typer(
    cls=Group,
    no_args_is_help=True,
    context_settings=HELP,
    help="The pure core compiled with mypyc: build, status, remove (optional; Python runs without it).",
)
fit_app = typer.Typer(
    cls=Group,
    no_args_is_help=True,
    context_settings=HELP,
    help="Fit models on purchase history: clv (BG/NBD and Gamma-Gamma).",
)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        out.print(f"segengine {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """segengine: streaming customer segmentation."""


# The order here is the order of `segengine --help` (commands first, then the groups).
app.command("run", cls=Command)(stack.run)
app.command("dev", cls=Command)(stack.dev)
app.command("demo", cls=Command)(stack.demo)
app.command("demo-produce", cls=Command)(stack.demo_produce)
app.command("replay", cls=Command)(stack.replay)
app.command("inspect", cls=Command)(lookup.inspect_customer)
app.command("segments", cls=Command)(lookup.segments)
app.command("tail", cls=Command)(lookup.tail)
app.command("produce", cls=Command)(lookup.produce)
app.command("export", cls=Command)(export.export)
app.command("rebuild", cls=Command)(rebuild.rebuild)
app.command("discover", cls=Command)(discover.discover)

topics_app.command("create", cls=Command)(topics.topics_create)
topics_app.command("list", cls=Command)(topics.topics_list)
topics_app.command("describe", cls=Command)(topics.topics_describe)
app.add_typer(topics_app, name="topics")

rules_app.command("check", cls=Command)(rules.rules_check)
rules_app.command("explain", cls=Command)(rules.rules_explain)
rules_app.command("simulate", cls=Command)(rules.rules_simulate)
app.add_typer(rules_app, name="rules")

fit_app.command("clv", cls=Command)(fit.fit_clv)
app.add_typer(fit_app, name="fit")

native_app.command("build", cls=Command)(native.native_build)
native_app.command("status", cls=Command)(native.native_status)
native_app.command("remove", cls=Command)(native.native_remove)
app.add_typer(native_app, name="native")


def main() -> None:
    if NATIVE.error:  # SEGENGINE_NATIVE names a build that cannot be used: nothing starts
        say_error(NATIVE.error)
        sys.exit(USAGE)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except Exception as exc:  # not one of the failures a command reports itself: a defect
        if not json_logs():
            raise  # the traceback, for whoever runs it at a terminal
        logging.getLogger("segengine").critical("the command crashed: %s", type(exc).__name__, exc_info=exc)
        sys.exit(FAILED)


if __name__ == "__main__":
    main()
