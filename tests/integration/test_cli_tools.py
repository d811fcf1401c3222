"""The command-line tools as a user runs them (a subprocess per command, several at once)
against the real embedded broker: `produce TOPIC -` sends the good lines of stdin and names
the bad ones; `tail` reads any topic (dead letters with their reason), stops after N records
or at the end, refuses a dimension the rules do not have, and ends with 130 on Ctrl-C;
`topics list` / `describe` show what the broker has without creating anything; `replay`
reads the format from the file's name."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient

from segengine.devstack import DevStack
from segengine.topics import load_topics
from tests.integration.support import REPO_ROOT, consume_all, produce, values

NOW = int(time.time() * 1000) - 3_600_000
WAIT_S = 120  # a bound for a command that should take a second or two


def env_for(stack: DevStack) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEGENGINE_")}
    return {**clean, "COLUMNS": "200", "SEGENGINE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap}


async def segengine(stack: DevStack, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "segengine", *args, cwd=REPO_ROOT, env=env_for(stack),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), WAIT_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def purchase(event_id: str, customer: str, amount: Any) -> dict[str, Any]:
    return {
        "event_id": event_id, "customer_id": customer, "type": "purchase", "ts": NOW,
        "order_id": event_id, "amount": amount,
    }  # fmt: skip


async def test_produce_from_stdin_sends_the_good_lines_and_tail_shows_them(stack: DevStack) -> None:
    lines = [
        orjson.dumps(purchase("p1", "ann", 10)),
        b"",  # blank lines are skipped, and still counted for the line numbers
        orjson.dumps(purchase("p2", "bob", -3)),
        b"{not json",
        orjson.dumps(purchase("p3", "ann", 20)),
    ]
    code, out, err = await segengine(stack, "produce", "events.purchase", "-", stdin=b"\n".join(lines) + b"\n")
    assert code == 1, (out, err)
    assert out.strip() == "2 sent to events.purchase, 2 rejected"
    assert err.strip().splitlines() == [
        "line 3: rejected: bad_value: 'amount' must be >= 0",
        "line 4: rejected: not_json: record value is not JSON",
    ]
    assert [e["event_id"] for e in values(await consume_all(stack, "events.purchase"))] == ["p1", "p3"]

    (code, out, err), (code_one, one, err_one) = await asyncio.gather(
        segengine(stack, "tail", "--topic", "events.purchase", "--from-beginning", "--exit-at-end", "--json"),
        segengine(stack, "tail", "-t", "events.purchase", "--from-beginning", "-c", "1", "--json"),
    )
    assert code == 0, err
    shown = [orjson.loads(line) for line in out.splitlines()]
    assert [(r["topic"], r["event_id"]) for r in shown] == [("events.purchase", "p1"), ("events.purchase", "p3")]
    assert code_one == 0, err_one
    assert [orjson.loads(line)["event_id"] for line in one.splitlines()] == ["p1"]


async def test_tail_shows_dead_letters_with_their_reason_and_refuses_unknown_names(stack: DevStack) -> None:
    dead = {
        "error": {"code": "bad_value", "message": "'amount' must be >= 0"},
        "topic": "events.purchase", "partition": 4, "offset": 17, "key": "ann", "key_encoding": "utf-8",
        "value": "{}", "value_encoding": "utf-8", "received_at": "2026-01-01T00:00:00.000Z",
    }  # fmt: skip
    await produce(stack, "events.dlq", [("ann", dead)])
    (code, out, err), (bad_dim, _, dim_err), (bad_seg, _, seg_err) = await asyncio.gather(
        segengine(stack, "tail", "--topic", "events.dlq", "--from-beginning", "-e"),
        segengine(stack, "tail", "--dimension", "tier"),
        segengine(stack, "tail", "--dimension", "value_tier", "--segment", "Z"),
    )
    assert code == 0, err
    assert (
        out.strip() == "2026-01-01T00:00:00.000Z  ann  rejected events.purchase:4@17: bad_value: 'amount' must be >= 0"
    )
    assert bad_dim == 2 and len(dim_err.strip().splitlines()) == 1, dim_err
    assert (
        dim_err.startswith("unknown dimension 'tier'; the rules (")
        and "lifecycle" in dim_err
        and "value_tier" in dim_err
    )
    assert bad_seg == 2 and seg_err.strip() == "unknown segment 'Z'; dimension 'value_tier' has: A, B, C", seg_err


async def test_topics_list_and_describe_show_the_broker_without_creating_anything(stack: DevStack) -> None:
    declared = {t.name: t for t in load_topics()}
    (code, out, err), (dcode, dout, derr), (mcode, _, merr) = await asyncio.gather(
        segengine(stack, "topics", "list", "--json"),
        segengine(stack, "topics", "describe", "events.dlq", "--json"),
        segengine(stack, "topics", "describe", "no.such.topic"),
    )
    assert code == 0, err
    listed = {t["topic"]: t for t in orjson.loads(out)["topics"]}
    assert set(listed) == set(declared)
    assert all(t["exists"] and t["partitions"] == declared[name].partitions for name, t in listed.items())
    assert dcode == 0, derr
    described = orjson.loads(dout)
    assert len(described["partitions"]) == declared["events.dlq"].partitions and described["replication_factor"] == 1
    assert described["configs"]["cleanup.policy"] == "delete"
    assert described["declared"]["partitions"] == declared["events.dlq"].partitions
    assert mcode == 1 and merr.strip() == f"no topic 'no.such.topic' on the broker at {stack.kafka_bootstrap}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        assert "no.such.topic" not in await admin.list_topics()  # describing it did not create it
    finally:
        await admin.close()


async def test_replay_reads_the_format_from_the_files_name(stack: DevStack, tmp_path: Any) -> None:
    browse = {"customer_id": "cy", "type": "browse", "action": "view", "ts": NOW}
    ndjson, txt = tmp_path / "views.ndjson", tmp_path / "views.txt"
    for path in (ndjson, txt):
        path.write_bytes(orjson.dumps(browse) + b"\n")
    (code, out, err), (refused, _, why) = await asyncio.gather(
        segengine(stack, "replay", str(ndjson)), segengine(stack, "replay", str(txt))
    )
    assert code == 0 and "replayed 1 events (events.browse 1)" in out, (out, err)
    assert [e["customer_id"] for e in values(await consume_all(stack, "events.browse"))] == ["cy"]
    assert refused == 2 and why.strip().splitlines() == [
        "cannot replay: views.txt: the format cannot be told from its name; give --format "
        "(cdnow, csv, jsonl; .jsonl, .ndjson, .csv are known)"
    ]


async def test_ctrl_c_ends_tail_with_130(stack: DevStack) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "segengine", "tail", "--json", cwd=REPO_ROOT, env=env_for(stack),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        change = {"change_id": "k", "customer_id": "c", "dimension": "d", "from": None, "to": "x", "at": "t"}
        line = b""
        deadline = time.monotonic() + WAIT_S
        while not line:  # until tail is surely following: it printed a record produced after it started
            assert time.monotonic() < deadline, "tail printed nothing"
            await produce(stack, "segments.changes", [("c", change)])
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 1)
            except TimeoutError:
                continue
            assert line, "tail ended early"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), WAIT_S) == 130
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
