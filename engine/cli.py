"""The command line: wiring only.

    segengine run     one worker on the configured (or embedded) Kafka and Redis
    segengine dev     start the embedded stack and keep it up until Ctrl-C
    segengine demo    the CDNOW demo on the embedded stack
    segengine demo-produce   only produce the demo stream to the configured Kafka
    segengine topics create  create the topics of topics/topics.yaml on the configured Kafka
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from engine.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="segengine: streaming customer segmentation.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics, as declared in topics/topics.yaml.")
app.add_typer(topics_app, name="topics")
console = Console(stderr=True)


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def _logging(settings: Settings) -> None:
    if settings.log_format == "json":
        import json

        class JsonFormatter(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return json.dumps({"ts": self.formatTime(record), "level": record.levelname, "logger": record.name, "msg": record.getMessage()})

        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def _run(coro: object) -> None:
    """Run until done; Ctrl-C or SIGTERM cancels the main task so that cleanup runs."""

    async def main() -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            console.print("[yellow]stopped[/yellow]")

    asyncio.run(main())


@app.command()
def run(
    rules: Optional[Path] = typer.Option(None, help="rules file (default: rules/default.yaml)"),
    clock: Optional[str] = typer.Option(None, help="wall (live) or event (replay of history)"),
    metrics_port: Optional[int] = typer.Option(None, help="serve /metrics on this port (0 = off)"),
) -> None:
    """Run one worker. Without SEGENGINE_KAFKA_BOOTSTRAP / SEGENGINE_REDIS_URL it starts the embedded stack."""
    settings = _settings(rules_file=rules, clock=clock, metrics_port=metrics_port)
    _logging(settings)

    async def main() -> None:
        from engine.devstack import stack_for
        from engine.worker import Worker

        async with stack_for(settings) as (bootstrap, redis_url):
            worker_settings = settings.model_copy(update={"kafka_bootstrap": bootstrap, "redis_url": redis_url})
            worker = Worker(worker_settings)
            if settings.metrics_port:
                from prometheus_client import start_http_server

                start_http_server(settings.metrics_port, addr="0.0.0.0", registry=worker.metrics.registry)
            logging.getLogger("engine").info("worker starting: rules %s, clock %s", worker.rules.version, settings.clock)
            await worker.run()

    _run(main())


@app.command()
def dev() -> None:
    """Start the embedded broker and Redis on free loopback ports; keep them up until Ctrl-C."""
    settings = _settings()
    _logging(settings)

    async def main() -> None:
        from engine.devstack import stack_for

        async with stack_for(settings) as (bootstrap, redis_url):
            console.print(f"Kafka  [bold]{bootstrap}[/bold]\nRedis  [bold]{redis_url}[/bold]")
            console.print(f"export SEGENGINE_KAFKA_BOOTSTRAP={bootstrap} SEGENGINE_REDIS_URL={redis_url}")
            console.print("Ctrl-C stops both.")
            await asyncio.Event().wait()

    _run(main())


@app.command()
def demo(
    limit: Optional[int] = typer.Option(None, help="replay only the first N events (default: all)"),
) -> None:
    """Replay the CDNOW purchase history (plus synthetic browse/feedback/profile events) through the engine."""
    settings = _settings(clock="event")
    _logging(settings.model_copy(update={"log_level": "WARNING"}))
    from engine.demo import run_demo

    _run(run_demo(settings, limit=limit))


def _require_kafka(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        console.print("[red]set SEGENGINE_KAFKA_BOOTSTRAP[/red] (or use `segengine dev` for an embedded broker)")
        raise typer.Exit(2)
    return settings.kafka_bootstrap


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic of topics/topics.yaml that does not exist yet (idempotent)."""
    settings = _settings()
    _logging(settings)
    bootstrap = _require_kafka(settings)

    async def create() -> None:
        from engine.topics import create_topics, load_topics

        created = await create_topics(bootstrap, load_topics(settings.topics_file))
        console.print(f"created {len(created)} topics: {', '.join(created) or '(all existed)'}")

    _run(create())


@app.command("demo-produce")
def demo_produce(limit: Optional[int] = typer.Option(None, help="only the first N events")) -> None:
    """Produce the demo stream (CDNOW + synthetic events) to the configured Kafka, without running a worker."""
    settings = _settings()
    _logging(settings)
    bootstrap = _require_kafka(settings)
    from engine.demo import produce_demo

    _run(produce_demo(bootstrap, limit))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
