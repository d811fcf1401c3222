"""The command line: wiring only (the commands live in engine/commands/).

segengine run     one worker on the configured Kafka and Redis (--embedded: a development stack)
segengine dev     start the embedded stack and keep it up until Ctrl-C
segengine demo    the CDNOW demo on the embedded stack
segengine demo-produce   only produce the demo stream to the configured Kafka
segengine replay  backfill a file of historical events into the input topics
segengine topics create  create the topics of topics/topics.yaml on the configured Kafka
segengine rules check|explain|simulate   rules tooling for marketers
segengine inspect|segments|tail|produce  look customers up, watch changes, send one event

Settings, logging, running a command and its one-line failure: engine/commands/common.py.
"""

from __future__ import annotations

import sys

import typer

from .commands import lookup, rules, stack
from .commands.common import out

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings=HELP,
    help="segengine: streaming customer segmentation.",
)
topics_app = typer.Typer(
    no_args_is_help=True, context_settings=HELP, help="Kafka topics, as declared in topics/topics.yaml."
)
rules_app = typer.Typer(
    no_args_is_help=True, context_settings=HELP, help="Check rules, explain a customer's segments, preview a change."
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
app.command("run")(stack.run)
app.command("dev")(stack.dev)
app.command("demo")(stack.demo)
app.command("demo-produce")(stack.demo_produce)
app.command("replay")(stack.replay)
app.command("inspect")(lookup.inspect_customer)
app.command("segments")(lookup.segments)
app.command("tail")(lookup.tail)
app.command("produce")(lookup.produce)

topics_app.command("create")(stack.topics_create)
app.add_typer(topics_app, name="topics")

rules_app.command("check")(rules.rules_check)
rules_app.command("explain")(rules.rules_explain)
rules_app.command("simulate")(rules.rules_simulate)
app.add_typer(rules_app, name="rules")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
