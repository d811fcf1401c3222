"""``segengine run --processes N``: N worker processes in one consumer group, behind one HTTP API.

Python runs a worker's pipeline on one core; a machine with more runs more workers. The
supervisor (the process the operator started) does no processing itself:

    supervisor  :http_port   /metrics  the children's pages merged (segengine.metrics.merge_pages)
                             /healthz  ok while every child answers its own
                             /readyz   ready when every child is (each has partitions, Redis, Kafka)
                             other     passed on to a child, in turn (Redis is shared: any answers)
       |-- child 0  `segengine run`, SEGENGINE_PROCESSES=1, its API on a socket of 127.0.0.1 the supervisor bound
       |-- child 1  ...
       `-- child N-1

Each child is the ordinary one-process worker, a member of the same consumer group (with
static membership, ``<group_instance_id>-<index>``). SIGTERM or SIGINT to the supervisor is
passed on to every child, and the supervisor waits until all of them have stopped. A child
that stops on its own (an error, a signal from elsewhere) ends the set: the supervisor stops
the others and fails naming that child; it never restarts one (an orchestrator restarting
the whole set sees the failure, a loop of restarts inside would hide it).

Children run in their own process group, so that a Ctrl-C at a terminal reaches them once,
through the supervisor, and not twice (a second signal would cut their graceful stop short);
on Linux each one is also told to stop (SIGTERM) if the supervisor dies without telling it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from .errors import SegengineError
from .metrics import MergedPages, exposition, process_page
from .settings import Settings, env_name

log = logging.getLogger(__name__)

CHILD_HOST = "127.0.0.1"
PROBE_TIMEOUT_S = 2.0
SCRAPE_TIMEOUT_S = 10.0
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"
# the settings a `run` option can give: a child cannot see the supervisor's options, so they go in its environment
FROM_OPTIONS = ("kafka_bootstrap", "redis_url", "rules_file", "clock")
PASSED_ON = ("Authorization", "Accept")  # request headers a child needs to answer as the set would
PASSED_BACK = ("Content-Type", "WWW-Authenticate")
PR_SET_PDEATHSIG = 1


class WorkerProcessFailed(SegengineError):
    """A worker process of the set stopped on its own, or failed while it was being stopped;
    the other ones were stopped. Not retriable here: the set's orchestrator decides."""


@dataclass(frozen=True, slots=True)
class ChildHealth:
    """What a child answered on /readyz, or ``None`` fields when it did not answer."""

    index: int
    pid: int | None
    ready: bool
    redis: bool
    kafka: bool
    partitions: int


def child_env(settings: Settings, environ: Mapping[str, str], index: int, api_fd: int | None) -> dict[str, str]:
    """The environment of child ``index``: the supervisor's, with its settings as resolved
    (options given, the embedded stack's addresses), one process, no embedded stack of its own,
    its API on the inherited listening socket ``api_fd`` (``None``: no API) and, with static
    membership, a name of its own."""
    env = dict(environ)
    for field in FROM_OPTIONS:
        value = getattr(settings, field)
        if value is not None:
            env[env_name(field)] = str(value)
    env[env_name("processes")] = "1"
    env[env_name("embedded")] = "false"
    env[env_name("http_host")] = CHILD_HOST
    env[env_name("http_port")] = "0"
    if api_fd is None:
        env.pop(env_name("http_socket_fd"), None)
    else:
        env[env_name("http_socket_fd")] = str(api_fd)
    if settings.group_instance_id is not None:
        env[env_name("group_instance_id")] = f"{settings.group_instance_id}-{index}"
    return env


def exit_reason(code: int) -> str:
    """How a process ended, in words: ``exited with code 1``, ``was killed by SIGKILL``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def clean_exit(code: int, stopped_by: signal.Signals) -> bool:
    """Whether a child's exit code is the one its graceful stop by ``stopped_by`` gives (or, for a
    child still starting when the signal came, the signal's own default: killed by it)."""
    return code in (0, -stopped_by) or (stopped_by is signal.SIGINT and code == 130)


def readiness(children: Sequence[ChildHealth]) -> tuple[bool, dict[str, Any]]:
    """The set's /readyz: ready when every child is; the checks of the one-process body (all
    children reach Redis and Kafka, the partitions they hold together) and each child's own."""
    ready = bool(children) and all(c.ready for c in children)
    body = {
        "ready": ready,
        "redis": bool(children) and all(c.redis for c in children),
        "kafka": bool(children) and all(c.kafka for c in children),
        "partitions": sum(c.partitions for c in children),
        "processes": [
            {"process": c.index, "pid": c.pid, "ready": c.ready, "partitions": c.partitions} for c in children
        ],
    }
    return ready, body


def input_partitions(settings: Settings) -> int:
    """The partitions of the input topics (as declared): more processes than this own nothing."""
    from .events import INPUT_TOPICS
    from .topics import load_topics

    return max(t.partitions for t in load_topics(settings.topics_file) if t.name in INPUT_TOPICS)


def listening_socket() -> socket.socket:
    """A socket listening on a free port of ``CHILD_HOST``, for a child to inherit and serve its
    API on. Bound here, before the child starts, so that no other program (nor the next child)
    can take the port in between, as it could if the child bound a port chosen for it."""
    sock = socket.socket()
    try:
        sock.bind((CHILD_HOST, 0))
        sock.listen(128)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def _stop_with_parent() -> Callable[[], None] | None:
    """On Linux, a function for the child between fork and exec: SIGTERM when the supervisor
    dies (SIGKILL, OOM) without passing a signal on. Resolved here, in the parent: the child
    only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


@dataclass(slots=True)
class _Child:
    index: int
    port: int
    process: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://{CHILD_HOST}:{self.port}"


class Supervisor:
    """Runs ``settings.processes`` children until a signal or a child's own exit (``run``)."""

    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self.settings = settings
        self.environ = environ
        self.children: list[_Child] = []
        self.stopped_by: signal.Signals | None = None
        self._stopping = asyncio.Event()
        self._turn = itertools.count()
        self._http: aiohttp.ClientSession | None = None

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> signal.Signals:
        """Until every child has stopped; returns the signal that stopped the set, or raises
        ``WorkerProcessFailed`` naming a child that stopped on its own or did not stop cleanly.

        The signal handlers replace those of ``run_until_done`` (which would cancel this
        task): a signal is passed on to the children, whose graceful stop is then awaited."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signalled, sig)
        serve = self.settings.http_port != 0
        runner = web.AppRunner(self._app(), access_log=None) if serve else None
        self._http = aiohttp.ClientSession()
        try:
            if runner is not None:  # first: a port in use stops the set before any child starts
                await runner.setup()
                await web.TCPSite(runner, self.settings.http_host, self.settings.http_port).start()
                log.info("API of %d worker processes on %s:%d", self.settings.processes, *self._address())
            for index in range(self.settings.processes):
                if self._stopping.is_set():
                    break
                await self._spawn(index, serve)
            failed = await self._until_stopped()
        finally:
            self._signal_all(signal.SIGTERM)  # left only when something failed in the supervisor itself
            for child in self.children:
                await child.process.wait()
            if runner is not None:
                await runner.cleanup()
            await self._http.close()
        return self._outcome(failed)

    def _address(self) -> tuple[str, int]:
        return self.settings.http_host, self.settings.http_port

    async def _spawn(self, index: int, serve: bool) -> None:
        """Start child ``index``; with ``serve``, its API on a socket bound here, which the child
        inherits (the supervisor's copy is closed once the child has it)."""
        with listening_socket() if serve else contextlib.nullcontext() as sock:
            port = sock.getsockname()[1] if sock is not None else 0
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "segengine", "run",
                env=child_env(self.settings, self.environ, index, sock.fileno() if sock is not None else None),
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_stop_with_parent(),
                pass_fds=(sock.fileno(),) if sock is not None else (),
            )  # fmt: skip
        self.children.append(_Child(index, port, process))
        log.info("worker process %d started: pid %d%s", index, process.pid, f", API on port {port}" if port else "")
        if self._stopping.is_set() and self.stopped_by is not None:  # a signal came while it was starting
            process.send_signal(self.stopped_by)

    async def _until_stopped(self) -> _Child | None:
        """Wait for a signal or a child's exit; then for every child. Returns the child that
        stopped on its own, if one did first."""
        exits = {asyncio.ensure_future(c.process.wait()): c for c in self.children}
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([*exits, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        failed = next((exits[t] for t in exits if t in done), None)
        if failed is not None and self.stopped_by is None:
            log.error(
                "worker process %d (pid %d) %s: stopping the other ones",
                failed.index, failed.process.pid, exit_reason(failed.process.returncode or 0),
            )  # fmt: skip
            self._stopping.set()
            self._signal_all(signal.SIGTERM)
        else:
            failed = None
        await asyncio.gather(*exits)
        return failed

    def _signalled(self, sig: signal.Signals) -> None:
        if self.stopped_by is None:
            self.stopped_by = sig
            log.info("%s: stopping %d worker processes", sig.name, len(self.children))
        self._stopping.set()
        self._signal_all(sig)  # again on a second signal: the operator insists

    def _signal_all(self, sig: signal.Signals) -> None:
        for child in self.children:
            if child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(sig)

    def _outcome(self, failed: _Child | None) -> signal.Signals:
        if failed is not None:
            code = failed.process.returncode or 0
            raise WorkerProcessFailed(
                f"worker process {failed.index} (pid {failed.process.pid}) {exit_reason(code)}; "
                f"the other {len(self.children) - 1} were stopped"
            )
        stopped_by = self.stopped_by or signal.SIGTERM
        for child in self.children:
            ended = child.process.returncode
            if ended is not None and not clean_exit(ended, stopped_by):
                raise WorkerProcessFailed(
                    f"worker process {child.index} (pid {child.process.pid}) {exit_reason(ended)} "
                    f"while stopping on {stopped_by.name}"
                )
        return stopped_by

    # -- the set's HTTP API --------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/{tail:.*}", self._pass_on)
        return app

    def _get(
        self, child: _Child, path: str, timeout: float, headers: Mapping[str, str] | None = None
    ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """A GET of ``path`` (as the client sent it, still percent-encoded) on the child's API."""
        assert self._http is not None
        return self._http.get(
            URL(child.url + path, encoded=True), headers=headers, timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        )  # fmt: skip

    async def _probe(self, child: _Child) -> ChildHealth:
        down = ChildHealth(child.index, child.process.pid, False, False, False, 0)
        if child.process.returncode is not None:
            return down
        try:
            async with self._get(child, "/readyz", PROBE_TIMEOUT_S) as response:
                body = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return down
        return ChildHealth(
            child.index, child.process.pid, response.status == 200 and bool(body.get("ready")),
            bool(body.get("redis")), bool(body.get("kafka")), int(body.get("partitions", 0)),
        )  # fmt: skip

    async def _alive(self, child: _Child) -> bool:
        if child.process.returncode is not None:
            return False
        try:
            async with self._get(child, "/healthz", PROBE_TIMEOUT_S) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _healthz(self, request: web.Request) -> web.Response:
        alive = await asyncio.gather(*(self._alive(c) for c in self.children))
        ok = len(alive) == self.settings.processes and all(alive)
        processes = [{"process": child.index, "alive": a} for child, a in zip(self.children, alive)]
        body = {"status": "ok" if ok else "down", "processes": processes}
        return _json(body, 200 if ok else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        children = list(await asyncio.gather(*(self._probe(c) for c in self.children)))
        ready, body = readiness(children)
        ready = ready and len(children) == self.settings.processes
        return _json({**body, "ready": ready}, 200 if ready else 503)

    async def _page(self, child: _Child) -> str:
        try:
            async with self._get(child, "/metrics", SCRAPE_TIMEOUT_S, {"Accept": OPENMETRICS_ACCEPT}) as response:
                if response.status == 200:
                    return await response.text()
                problem = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = type(exc).__name__
        raise _Unscraped(f"worker process {child.index} (pid {child.process.pid}) did not serve /metrics: {problem}")

    async def _metrics(self, request: web.Request) -> web.Response:
        """The children's pages merged, and the supervisor's own process metrics. A child that
        does not answer fails the scrape (503): a partial sum would look like a counter reset."""
        try:
            pages = await asyncio.gather(*(self._page(c) for c in self.children))
        except _Unscraped as exc:
            return web.Response(text=f"{exc}\n", status=503)
        body, content_type = exposition(MergedPages([*pages, process_page()]), request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _pass_on(self, request: web.Request) -> web.Response:
        """A data endpoint, answered by the children in turn: they share Redis, so any answers
        for any customer; the token is checked by the child (the header is passed on)."""
        running = [c for c in self.children if c.process.returncode is None]
        if not running:
            return _json({"error": "no worker process running"}, 503)
        child = running[next(self._turn) % len(running)]
        headers = {h: request.headers[h] for h in PASSED_ON if h in request.headers}
        try:
            async with self._get(child, request.raw_path, SCRAPE_TIMEOUT_S, headers) as response:
                body = await response.read()
                passed = {h: response.headers[h] for h in PASSED_BACK if h in response.headers}
                return web.Response(body=body, status=response.status, headers=passed)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("worker process %d did not answer %s: %s", child.index, request.path, type(exc).__name__)
            return _json({"error": "worker process unavailable"}, 503)


class _Unscraped(Exception):
    pass


def _json(body: Any, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
