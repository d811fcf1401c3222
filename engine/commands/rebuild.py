"""rebuild: recover from a Redis that lost data (logic: engine/rebuild.py)."""

from __future__ import annotations

import sys

import typer

from .common import (
    Bootstrap,
    RedisUrl,
    configure_logging,
    console,
    kafka_security,
    load_settings,
    out,
    require_kafka,
    require_redis,
    run_until_done,
)


def rebuild(
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    bootstrap: Bootstrap = None,
    redis_url: RedisUrl = None,
) -> None:
    """Empty the engine's keys in Redis and make the workers replay the input topics from the
    earliest offsets the broker holds: the recovery after a Redis that lost data (a worker says
    so and stops). Stop every worker first; start them again afterwards."""
    settings = load_settings(kafka_bootstrap=bootstrap, redis_url=redis_url)
    kafka, url = require_kafka(settings), require_redis(settings)
    security = kafka_security(settings)
    configure_logging(settings)
    if not yes:
        if not sys.stdin.isatty():
            console.print("[red]rebuild empties the engine's keys in Redis: confirm with --yes[/red]")
            raise typer.Exit(2)
        typer.confirm(f"Empty every seg:* key of {url.split('@')[-1]} and replay the input topics?", abort=True)

    async def main() -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn

        from ..rebuild import rebuild as rebuild_store
        from ..store_redis import connect

        redis = connect(url)
        try:
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True) as bar:
                task = bar.add_task("waiting for the group's members to leave", total=None)

                def removed(n: int) -> None:
                    bar.update(task, description=f"emptying the engine's keys: {n:,} removed")

                session_s = settings.session_timeout_ms / 1000
                done = await rebuild_store(
                    redis, kafka, settings.group_id, wait_s=session_s + 5, progress=removed, security=security
                )
        finally:
            await redis.aclose()
        out.print(
            f"removed {done.keys_removed:,} keys; {len(done.replay_from)} input partitions marked for replay",
            highlight=False,
        )
        for tp, start in sorted(done.truncated.items()):
            console.print(
                f"[yellow]warning:[/yellow] {tp.topic}:{tp.partition} starts at offset {start:,}: the records before "
                "it are gone (retention), so the rebuilt state misses them",
                highlight=False,
            )
        out.print("start the workers: they replay the input topics from there", highlight=False)

    run_until_done(main())
