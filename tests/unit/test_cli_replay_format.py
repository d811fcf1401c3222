"""`replay FILE` reads the format from the file's extension (or the CDNOW file's name); an
explicit --format wins; a file whose format cannot be told, or a format, speed or time the
command does not know, is a usage error (exit 2), not a failed replay."""

from __future__ import annotations

from pathlib import Path

import pytest

from segengine.replay import Format, ReplayError, ReplayUsageError, file_format, parse_speed, parse_until, prepare


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("events.jsonl", Format.jsonl),
        ("events.ndjson", Format.jsonl),
        ("EVENTS.JSONL", Format.jsonl),
        ("history.csv", Format.csv),
        ("CDNOW_master.txt", Format.cdnow),
    ],
)
def test_the_format_is_the_extensions(name: str, expected: Format) -> None:
    assert file_format(Path("/data") / name, None) is expected


def test_an_explicit_format_wins() -> None:
    assert file_format(Path("history.csv"), "jsonl") is Format.jsonl
    assert file_format(Path("purchases.txt"), "cdnow") is Format.cdnow
    assert file_format(None, "CDNOW") is Format.cdnow  # the shipped CDNOW history


@pytest.mark.parametrize(
    ("path", "fmt", "says"),
    [
        (Path("purchases.txt"), None, "purchases.txt: the format cannot be told from its name; give --format"),
        (Path("events"), None, "events: the format cannot be told"),
        (None, None, "give the file to replay"),
        (Path("a.jsonl"), "parquet", "--format 'parquet': use one of cdnow, csv, jsonl"),
    ],
)
def test_a_format_that_cannot_be_told_is_a_usage_error(path: Path | None, fmt: str | None, says: str) -> None:
    with pytest.raises(ReplayUsageError, match="^" + says.replace("(", r"\(").replace(")", r"\)")):
        file_format(path, fmt)


def test_arguments_the_command_does_not_know_are_usage_errors_and_a_bad_file_is_not(tmp_path: Path) -> None:
    for call in (lambda: parse_speed("fast"), lambda: parse_until("soon")):
        with pytest.raises(ReplayUsageError):
            call()
    with pytest.raises(ReplayUsageError, match="no such file"):
        prepare(tmp_path / "missing.jsonl", Format.jsonl, "max", None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "teleport"}\n')
    with pytest.raises(ReplayError) as refused:
        prepare(bad, Format.jsonl, "max", None)
    assert not isinstance(refused.value, ReplayUsageError) and "bad.jsonl:1" in str(refused.value)
