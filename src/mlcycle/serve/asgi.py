"""The ASGI layer: request metrics and access log for every route, and the fast path
that answers `POST /predict` without the framework's routing or request objects (a thin
adapter: read the body, hand it to `PredictService`, send the reply)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mlcycle.errors import BodyTimeout, BodyTooLarge, InvalidRequest, MethodNotAllowed, ServerBusy
from mlcycle.serve.core import Reply, refusal
from mlcycle.serve.service import LARGE_BATCH_BYTES, PredictService

access = logging.getLogger("mlcycle.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTES = {
    "/predict",
    "/health/live",
    "/health/ready",
    "/model",
    "/metrics",
    "/admin/reload",
    "/monitor",
    "/docs",
    "/openapi.json",
}


def collector_paused(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` with the cyclic garbage collector paused. A large batch allocates
    tens of thousands of container objects (decoded rows, answers) that all live until
    its reply is made and form no cycles: the collector would scan them again and again
    (~4 ms of a 10,000-record batch) to find nothing; reference counting frees them
    after. Left as it was found: a collector someone else paused stays paused."""
    running = gc.isenabled()
    if running:
        gc.disable()
    try:
        return fn(*args)
    finally:
        if running:
            gc.enable()


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""HTTP methods counted by name; any other is counted as "other" (labels stay bounded)."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.monitoring = CollectorRegistry()
        """The newest monitoring report as gauges: on /metrics for the admin role only
        (when API keys are set), like /monitor."""
        self.requests = Counter(
            "mlcycle_http_requests_total",
            "HTTP requests",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlcycle_http_request_duration_seconds",
            "Request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.predictions = Counter(
            "mlcycle_predictions_total", "Predictions by label", ["label"], registry=self.registry
        )
        self.model_info = Gauge(
            "mlcycle_model_info",
            "The model being served",
            ["name", "version", "runtime", "source", "run_id"],
            registry=self.registry,
        )
        self.reload_failures = Counter(
            "mlcycle_model_reload_failures_total",
            "Model versions refused at load (they failed to load or their self-check)",
            ["reason"],
            registry=self.registry,
        )
        self.log_dropped = Counter(
            "mlcycle_prediction_log_dropped_total",
            "Prediction log entries dropped",
            registry=self.registry,
        )
        self.reloads = Counter("mlcycle_model_reloads_total", "Model swaps", registry=self.registry)
        self.shadow_predictions = Counter(
            "mlcycle_shadow_predictions_total",
            "Predictions of the model scored in shadow (never answered), by label",
            ["alias", "label"],
            registry=self.registry,
        )
        self.shadow_skipped = Counter(
            "mlcycle_shadow_skipped_total",
            "Answered requests the shadow did not score (queue_full, refused, error)",
            ["alias", "reason"],
            registry=self.registry,
        )
        self.shadow_info = Gauge(
            "mlcycle_shadow_model_info",
            "The model scored in shadow",
            ["alias", "name", "version", "run_id"],
            registry=self.registry,
        )


async def send_reply(reply: Reply, send: Send) -> None:
    payload = reply.encoded()
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": reply.raw_headers(payload),
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodyBudget:
    """Bytes of request bodies held at once by all of a worker's connections: a body
    that would take more is answered 503 at once, so slow or many senders cannot make
    the server hold unbounded memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


class PredictEndpoint:
    """`POST /predict` as a bare ASGI app over `PredictService`.

    Before any byte of the body is read: the API key, the content type, the declared
    length. The body then has `body_timeout` seconds to arrive in full (408 past it) and
    takes its bytes from the worker's `BodyBudget` (503 when it is spent)."""

    def __init__(
        self,
        service: PredictService,
        body_timeout: float = 30.0,
        budget: BodyBudget | None = None,
    ) -> None:
        self.service = service
        self.body_timeout = body_timeout
        self.budget = budget or BodyBudget(8 * service.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        early = self.service.refuse_early(headers)
        if early is not None:
            await send_reply(early, send)
            return
        limit = self.service.max_body_bytes
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await send_reply(refusal(BodyTooLarge(f"body larger than {limit} bytes")), send)
            return
        held = [0]  # budget bytes this body holds, given back whatever happens
        try:
            try:
                async with asyncio.timeout(self.body_timeout):
                    body = await self._read(receive, limit, held)
            except TimeoutError:
                late = f"the body did not arrive within {self.body_timeout:g} s"
                await send_reply(refusal(BodyTimeout(late)), send)
                return
            if body is None:
                return  # the client went away
            if isinstance(body, Reply):
                await send_reply(body, send)
                return
            await self._answer(body, headers, send, explain_wanted(scope))
        finally:
            self.budget.give(held[0])

    async def _read(self, receive: Receive, limit: int, held: list[int]) -> bytes | Reply | None:
        """The body (None: the client left), or the reply that refuses it: 413 over
        `limit`, 503 when the worker's budget for bodies is spent."""
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if held[0] + len(chunk) > limit:
                return refusal(BodyTooLarge(f"body larger than {limit} bytes"))
            if not self.budget.take(len(chunk)):
                busy = "the server holds too many request bodies at once; retry shortly"
                return refusal(ServerBusy(busy), {"retry-after": "1"})
            held[0] += len(chunk)
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _answer(
        self, body: bytes, headers: dict[str, str], send: Send, explain: bool | Reply
    ) -> None:
        if isinstance(explain, Reply):
            await send_reply(explain, send)
            return
        size = len(body)
        if size > LARGE_BATCH_BYTES or explain:  # in a worker thread, off the event loop
            reply = await run_in_threadpool(
                collector_paused, self.service.handle, body, headers, explain
            )
        else:
            reply = self.service.handle(body, headers)
        await send_reply(reply, send)


def explain_wanted(scope: Scope) -> bool | Reply:
    """`?explain=true` (or 1, yes); anything else in `explain` is a 422 naming it."""
    from urllib.parse import parse_qs

    query = scope.get("query_string", b"").decode("latin-1")
    if not query:
        return False
    values = parse_qs(query).get("explain")
    if not values:
        return False
    value = values[-1].strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    return refusal(
        InvalidRequest(
            [
                {
                    "loc": ["query", "explain"],
                    "msg": f"explain is true or false, not {values[-1]!r}",
                    "type": "bool_parsing",
                }
            ]
        )
    )


async def _post_only(scope: Scope, receive: Receive, send: Send) -> None:
    reply = refusal(MethodNotAllowed("Method Not Allowed"), {"allow": "POST"})
    await send_reply(reply, send)


class ObservabilityMiddleware:
    """Pure ASGI: counts and times every request; optional one-line access log; sends
    `POST /predict` to the fast path."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, access_log: bool, fast_predict: ASGIApp
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.fast_predict = fast_predict
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope["path"]
        method = scope["method"]
        target = self.app
        if path == "/predict":
            target = self.fast_predict if method == "POST" else _post_only
        try:
            await target(scope, receive, send_wrapper)
        finally:
            self._observe(path, method, status, time.perf_counter() - start)

    def _observe(self, path: str, method: str, status: int, elapsed: float) -> None:
        route = path if path in ROUTES else "other"
        if method not in METHODS:
            method = "other"
        key = (route, method, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.requests.labels(route, method, str(status))
        counter.inc()
        timer = self._timers.get(route)
        if timer is None:
            timer = self._timers[route] = self.metrics.latency.labels(route)
        timer.observe(elapsed)
        if self.access_log:
            access.info(
                "%s %s %d %.2fms",
                method,
                path,
                status,
                elapsed * 1000,
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": round(elapsed * 1000, 3),
                },
            )
