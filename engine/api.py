"""The HTTP API every worker serves on ``SEGENGINE_HTTP_PORT`` (aiohttp):

    GET /customers/{id}   memberships, features, next check time, last changes   token
    GET /segments         exact population per dimension and segment             token
    GET /segments/{dimension}/{segment}/members?cursor=&limit=   a page of members   token
    GET /healthz          the process is alive                                   open
    GET /readyz           Redis and the broker reachable, partitions assigned    open (503 when not)
    GET /metrics          Prometheus text of the worker's registry               open

With ``SEGENGINE_API_TOKEN`` set, the customer data endpoints want ``Authorization:
Bearer <token>`` (401 without it or with another). Probes and the Prometheus scraper
stay open: they carry no customer data, and need no secret to be configured. Redis is
shared, so any worker answers for any customer, whichever worker owns its partition.
"""

from __future__ import annotations

import hmac
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from .audience import audience_problem, members_page, parse_cursor, parse_limit
from .inspect import check_customer_id, customer_report, segments_report

if TYPE_CHECKING:
    from .worker.view import WorkerView

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
WORKER: web.AppKey[WorkerView] = web.AppKey("worker")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body, default=str), status=status, content_type="application/json")


def _auth(token: str | None) -> Any:
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.Response(
                    body=orjson.dumps({"error": "unauthorized"}), status=401, content_type="application/json",
                    headers={"WWW-Authenticate": 'Bearer realm="segengine"'},
                )  # fmt: skip
        return await handler(request)

    return middleware


async def customer(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    customer_id = request.match_info["id"]
    problem = check_customer_id(customer_id)
    if problem is not None:
        return _json({"error": problem}, 400)
    try:
        report = await customer_report(worker.store, worker.rules, customer_id, worker.now())
    except RedisError as exc:
        log.warning("customer lookup failed: %s", type(exc).__name__)
        return _json({"error": "redis unavailable"}, 503)
    if report is None:
        return _json({"error": "unknown customer"}, 404)
    return _json(report)


async def segments(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    try:
        report = await segments_report(worker.store)
    except RedisError as exc:
        log.warning("segment counts failed: %s", type(exc).__name__)
        return _json({"error": "redis unavailable"}, 503)
    return _json({"rules_version": worker.rules.version, **report})


async def segment_members(request: web.Request) -> web.Response:
    """One page of a segment's members: one SCAN step of about ``limit`` customers (the page may
    hold fewer members, or none, while more follow); follow ``next_cursor`` until it is null."""
    worker = request.app[WORKER]
    dimension, segment = request.match_info["dimension"], request.match_info["segment"]
    problem = audience_problem(worker.rules, dimension, segment)
    if problem is not None:
        return _json({"error": problem}, 404)
    limit = parse_limit(request.query.get("limit"))
    if limit is None:
        return _json({"error": "limit is an integer from 1 to 1000"}, 400)
    cursor = parse_cursor(request.query.get("cursor"))
    if cursor is None:
        return _json({"error": "cursor is not one this API gave: start without one"}, 400)
    try:
        members, after = await members_page(worker.store, dimension, segment, cursor, limit)
    except RedisError as exc:
        log.warning("segment members failed: %s", type(exc).__name__)
        return _json({"error": "redis unavailable"}, 503)
    return _json({"members": [m.as_dict() for m in members], "next_cursor": str(after) if after else None})


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    health = await request.app[WORKER].health()
    checks = {"redis": health.redis, "kafka": health.kafka, "partitions": health.partitions}
    return _json({"ready": health.ready, **checks}, 200 if health.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[WORKER].metrics.exposition(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


def make_app(worker: WorkerView) -> web.Application:
    token = worker.settings.api_token
    app = web.Application(middlewares=[_auth(token.get_secret_value() if token is not None else None)])
    app[WORKER] = worker
    app.router.add_get("/customers/{id:.*}", customer)
    app.router.add_get("/segments", segments)
    app.router.add_get("/segments/{dimension}/{segment}/members", segment_members)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class ApiServer:
    """The API of one worker, on ``host:port`` while the worker runs."""

    def __init__(self, worker: WorkerView, host: str, port: int, sock: socket.socket | None = None) -> None:
        """On ``host:port``, or on ``sock`` when given: a listening socket bound by the parent
        process (whose address it then is), so that no other program can take the port between
        the parent choosing it and this process binding it."""
        if sock is not None:
            host, port = sock.getsockname()[:2]
        self.host = host
        self.port = port
        self._sock = sock
        self._runner = web.AppRunner(make_app(worker), access_log=None)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await self._runner.setup()
        if self._sock is not None:
            await web.SockSite(self._runner, self._sock).start()
        else:
            await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("API on %s", self.url)

    async def stop(self) -> None:
        await self._runner.cleanup()
