"""How a command ends, in process: JSON log lines carry an ISO 8601 UTC time with
milliseconds and the traceback when there is one; under JSON logs a command's failure is a
JSON line too; Ctrl-C ends a command with 130 after its cleanup, SIGTERM with 0."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Iterator

import pytest
import typer
from redis.exceptions import ConnectionError as RedisConnectionError

from segengine.commands.common import JsonFormatter, run_until_done

ISO_MS_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The root logger writing JSON lines to a buffer, as configure_logging does under
    SEGENGINE_LOG_FORMAT=json; the test's logging set-up is put back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.handlers, root.level = saved[0], saved[1]


def record(msg: str, exc_info: object = None) -> logging.LogRecord:
    rec = logging.LogRecord("segengine.x", logging.ERROR, __file__, 1, msg, None, exc_info)  # type: ignore[arg-type]
    rec.created = 1_796_026_840.123456  # 2026-11-30T08:20:40.123456Z
    return rec


def test_a_json_log_line_has_an_iso_utc_time_with_milliseconds() -> None:
    line = json.loads(JsonFormatter().format(record("hello")))
    assert line == {
        "ts": "2026-11-30T08:20:40.123Z", "level": "ERROR", "logger": "segengine.x", "pid": os.getpid(), "msg": "hello"
    }  # fmt: skip
    assert ISO_MS_UTC.match(line["ts"])


def test_a_json_log_line_carries_the_traceback_when_the_record_has_one() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record("failed", exc_info)))
    assert line["msg"] == "failed"
    assert line["exc"].startswith("Traceback (most recent call last):") and "ValueError: boom" in line["exc"]
    assert "exc" not in json.loads(JsonFormatter().format(record("fine", (None, None, None))))


def test_under_json_logs_a_commands_failure_is_one_json_line(json_logs: io.StringIO) -> None:
    async def fails() -> None:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1.\nsecond line")

    with pytest.raises(typer.Exit) as ended:
        run_until_done(fails())
    assert ended.value.exit_code == 1
    (line,) = [json.loads(text) for text in json_logs.getvalue().splitlines()]
    assert line["level"] == "ERROR" and line["logger"] == "segengine"
    assert line["msg"] == "cannot reach Redis: Error 111 connecting to 127.0.0.1:1."
    assert ISO_MS_UTC.match(line["ts"])


def cleaned_up_after(sig: signal.Signals) -> tuple[int, list[str]]:
    """Exit code and what ran when ``sig`` reaches a command that is waiting."""
    ran: list[str] = []

    async def command() -> None:
        try:
            os.kill(os.getpid(), sig)
            await asyncio.sleep(60)
            ran.append("not stopped")
        finally:
            ran.append("cleanup")

    try:
        run_until_done(command())
    except typer.Exit as ended:
        return ended.exit_code, ran
    return 0, ran


def test_ctrl_c_ends_a_command_with_130_after_its_cleanup(json_logs: io.StringIO) -> None:
    assert cleaned_up_after(signal.SIGINT) == (130, ["cleanup"])


def test_sigterm_is_a_graceful_stop_with_exit_0(json_logs: io.StringIO) -> None:
    assert cleaned_up_after(signal.SIGTERM) == (0, ["cleanup"])


def test_under_json_logs_a_crash_is_a_json_line_with_its_traceback(
    json_logs: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segengine import cli
    from segengine.commands import lookup

    def defect(**_: object) -> None:
        raise RuntimeError("a defect")

    monkeypatch.setattr(lookup, "load_settings", defect)  # `segments` crashes before it does anything
    monkeypatch.setattr(sys, "argv", ["segengine", "segments"])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # typer installs its own: put back afterwards
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == 1
    (line,) = [json.loads(text) for text in json_logs.getvalue().splitlines()]
    assert line["level"] == "CRITICAL" and line["msg"] == "the command crashed: RuntimeError"
    assert "RuntimeError: a defect" in line["exc"]
