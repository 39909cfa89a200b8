"""The inference API (FastAPI on uvicorn).

POST /predict scores one record or {"records": [...]}; the hot path is orjson ->
column-wise validation -> onnxruntime -> orjson, with no pandas and no per-record
pydantic objects. Health, model info, Prometheus metrics and an admin reload sit beside it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from mlcycle import __version__
from mlcycle.config import Settings, get_settings
from mlcycle.serve.model import LoadedModel, ModelManager
from mlcycle.serve.monitoring import ReportCollector, ReportFeed
from mlcycle.serve.predlog import PredictionLog
from mlcycle.serve.schemas import MISSING, InvalidRequest, PredictResponse, record_schema
from mlcycle.serve.security import KeyRing, parse_keys
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store, predictions_collection

logger = logging.getLogger(__name__)
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
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
THREADPOOL_BYTES = 64 * 1024
"""Bodies larger than this are scored in a worker thread, off the event loop."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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


class ObservabilityMiddleware:
    """Pure ASGI: counts and times every request; optional one-line access log.

    `POST /predict` is answered here by `fast_predict` (the same handler FastAPI routes
    to), skipping the framework's routing and request objects on the hot path."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, access_log: bool, fast_predict: ASGIApp | None = None
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
        target = (
            self.fast_predict
            if path == "/predict" and scope["method"] == "POST" and self.fast_predict
            else self.app
        )
        try:
            await target(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = path if path in ROUTES else "other"
            key = (route, scope["method"], status)
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = self.metrics.requests.labels(
                    route, scope["method"], str(status)
                )
            counter.inc()
            timer = self._timers.get(route)
            if timer is None:
                timer = self._timers[route] = self.metrics.latency.labels(route)
            timer.observe(elapsed)
            if self.access_log:
                access.info(
                    "%s %s %d %.2fms",
                    scope["method"],
                    path,
                    status,
                    elapsed * 1000,
                    extra={
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "ms": round(elapsed * 1000, 3),
                    },
                )


class Reply:
    """A response before encoding: shared by the fast ASGI path and the FastAPI route."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}

    def encoded(self) -> bytes:
        return orjson.dumps(self.body, option=orjson.OPT_SERIALIZE_NUMPY)

    def response(self) -> Response:
        return Response(self.encoded(), self.status, self.headers, "application/json")

    async def send(self, send: Send) -> None:
        payload = self.encoded()
        raw = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})


def create_app(settings: Settings | None = None, manager: ModelManager | None = None) -> FastAPI:
    settings = settings or get_settings()
    keys = KeyRing(parse_keys(settings.api_keys))
    metrics = Metrics()
    from mlcycle.spec import load_spec

    spec = load_spec(settings.spec_path)
    state: dict[str, Any] = {"log": None, "store": None}
    store_lock = threading.Lock()

    def store() -> Store:
        """The store, opened on first use (the prediction log, monitoring reports)."""
        with store_lock:
            if state["store"] is None:
                from mlcycle.store import open_store

                state["store"] = open_store(settings)
            return state["store"]

    def on_swap(model: LoadedModel) -> None:
        metrics.reloads.inc()
        metrics.model_info.clear()
        metrics.model_info.labels(
            model.name, model.version, model.runtime, model.source, model.run_id
        ).set(1)

    def on_failure(reason: str) -> None:
        metrics.reload_failures.labels(reason).inc()

    if manager is None:
        manager = ModelManager(
            settings, spec.registered_model, on_swap=on_swap, on_failure=on_failure
        )
    else:
        manager.on_swap, manager.on_failure = on_swap, on_failure

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(manager.start)
        if settings.prediction_log:
            state["log"] = PredictionLog(
                store(),
                predictions_collection(served_spec().name),
                settings.prediction_log_queue,
                on_drop=lambda n: metrics.log_dropped.inc(n),
                max_bytes=settings.prediction_log_max_bytes,
            )
        yield
        manager.stop()
        if state["log"] is not None:
            await run_in_threadpool(state["log"].close)
        if state["store"] is not None:
            state["store"].close()

    app = FastAPI(
        title="mlcycle inference API",
        version=__version__,
        description="Scores records with the model behind the registry alias "
        f'`{manager.alias}`. Send one record, or `{{"records": [...]}}` for a batch.',
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _offline_docs(app)
    app.state.manager = manager
    app.state.metrics = metrics
    feed = ReportFeed(store, lambda: (served_spec().name, manager.name))
    metrics.registry.register(ReportCollector(feed))

    def served_spec() -> DatasetSpec:
        """The loaded model's spec (from its bundle), else the configured one."""
        model = manager.current
        return model.spec if model is not None else spec

    openapi_cache: dict[str, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        """The OpenAPI document of the model being served: rebuilt when it changes."""
        current = served_spec()
        key = current.fingerprint
        if key not in openapi_cache:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            record = record_schema(current, current.numeric_features, current.categorical_features)
            body, columnar = _request_schema(record, settings.max_batch)
            doc["paths"]["/predict"]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body}},
            }
            doc.setdefault("components", {}).setdefault("schemas", {})["ColumnarBatch"] = columnar
            openapi_cache.clear()
            openapi_cache[key] = doc
        return openapi_cache[key]

    app.openapi = openapi  # type: ignore[method-assign]

    def api_key(headers: Mapping[str, str]) -> str | None:
        key = headers.get("x-api-key")
        if key is None:
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                key = auth[7:].strip()
        return key

    def denied(headers: Mapping[str, str], role: str) -> Reply | None:
        status = keys.check(api_key(headers), role)
        if status == 401:
            return Reply(
                401, {"detail": "missing or invalid API key"}, {"www-authenticate": "ApiKey"}
            )
        if status == 403:
            return Reply(403, {"detail": f"this API key lacks the {role!r} role"})
        return None

    def invalid(msg: str, loc: list[Any] | None = None, kind: str = "value_error") -> Reply:
        return Reply(422, {"detail": [{"loc": loc or ["body"], "msg": msg, "type": kind}]})

    def parse(
        payload: Any, model: LoadedModel
    ) -> tuple[dict[str, np.ndarray], list[Any], int, str] | Reply:
        """Body -> (model inputs, ids, rows, shape) where shape is single|records|columns."""
        if not isinstance(payload, dict):
            return invalid("expected a JSON object", kind="model_attributes_type")
        validator = model.validator
        if "records" in payload or "columns" in payload:
            if len(payload) != 1:
                return invalid(
                    'a batch is {"records": [...]} or {"columns": {...}} and nothing else'
                )
            if "records" in payload:
                records = payload["records"]
                if not isinstance(records, list) or not records:
                    return invalid("records must be a non-empty list", ["body", "records"])
                if len(records) > settings.max_batch:  # the schema's maxItems
                    return invalid(
                        f"batch of {len(records)} records exceeds the limit of {settings.max_batch}",
                        ["body", "records"],
                        "too_long",
                    )
                feed = validator.validate(records, single=False)
                ids = [r.get(model.spec.id_column) for r in records]
                return feed, ids, len(records), "records"
            columns = payload["columns"]
            if not isinstance(columns, dict) or not columns:
                return invalid("columns must be a non-empty object of lists", ["body", "columns"])
            first = next(iter(columns.values()))
            n = len(first) if isinstance(first, list) else 0
            if n == 0:
                return invalid("columns must hold non-empty lists", ["body", "columns"])
            if n > settings.max_batch:
                return invalid(
                    f"batch of {n} rows exceeds the limit of {settings.max_batch}",
                    ["body", "columns"],
                    "too_long",
                )
            feed = validator.validate_columns(columns, n)
            return feed, columns.get(model.spec.id_column) or [None] * n, n, "columns"
        return (
            validator.validate([payload], single=True),
            [payload.get(model.spec.id_column)],
            1,
            "single",
        )

    def score(body: bytes, model: LoadedModel) -> tuple[Reply, dict[str, Any] | None]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            return invalid(f"invalid JSON: {err}", kind="json_invalid"), None
        try:
            parsed = parse(payload, model)
            if isinstance(parsed, Reply):
                return parsed, None
            feed, ids, n, shape = parsed
            probs = model.scorer.proba(feed)
        except InvalidRequest as err:
            return Reply(422, {"detail": err.errors}), None
        if not np.isfinite(probs).all():  # defensive: never answer a NaN score
            bad = np.flatnonzero(~np.isfinite(probs).all(axis=1)).tolist()[:50]
            return Reply(
                422,
                {
                    "detail": [
                        {
                            "loc": ["body", "records", i],
                            "msg": "the model cannot score this record",
                            "type": "value_error",
                        }
                        for i in bad
                    ]
                },
            ), None
        best = probs.argmax(axis=1)
        names = model.class_labels
        labels = [names[b] for b in best.tolist()]
        score = probs[:, model.positive] if model.positive is not None else probs.max(axis=1)
        rounded = np.round(score, 6).tolist()
        per_class = {name: np.round(probs[:, j], 6).tolist() for j, name in enumerate(names)}
        for j, count in enumerate(np.bincount(best, minlength=len(names)).tolist()):
            if count:
                metrics.predictions.labels(names[j]).inc(count)
        if shape == "columns":
            predictions: Any = {
                "id": ids,
                "label": labels,
                "probability": rounded,
                "probabilities": per_class,
            }
        else:
            rows = zip(*per_class.values(), strict=True)
            predictions = [
                {
                    "id": i,
                    "label": lab,
                    "probability": p,
                    "probabilities": dict(zip(names, r, strict=True)),
                }
                for i, lab, p, r in zip(ids, labels, rounded, rows, strict=True)
            ]
        out = {"model": {"name": model.name, "version": model.version}, "predictions": predictions}
        log_doc = {
            "rows": n,
            "ids": ids,
            "features": _canonical_columns(feed),
            "labels": labels,
            "probabilities": rounded,
            "class_probabilities": per_class,
        }
        return Reply(200, out, {"x-model-version": model.version}), log_doc

    def predict_core(body: bytes, headers: Mapping[str, str]) -> Reply:
        if (resp := denied(headers, "predict")) is not None:
            return resp
        if not _is_json(headers.get("content-type", "")):
            return Reply(
                415, {"detail": "send the body as JSON with Content-Type: application/json"}
            )
        model = manager.current
        if model is None:
            return Reply(503, {"detail": "no model is loaded yet"})
        if len(body) > settings.max_body_bytes:
            return Reply(413, {"detail": f"body larger than {settings.max_body_bytes} bytes"})
        started = time.perf_counter()
        reply, log_doc = score(body, model)
        rid = headers.get("x-request-id", "")
        request_id = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        reply.headers["x-request-id"] = request_id
        if isinstance(reply.body, dict) and reply.status == 200:
            reply.body = {"request_id": request_id, **reply.body}
        log = state["log"]
        if log is not None and log_doc is not None:
            log.submit(
                [
                    {
                        "_id": uuid.uuid4().hex,  # server-made: a reused request id loses nothing
                        "request_id": request_id,
                        "ts": datetime.now(UTC),
                        "model_name": model.name,
                        "model_version": model.version,
                        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                        **log_doc,
                    }
                ],
                nbytes=len(body),
                collection=predictions_collection(model.spec.name),
            )
        return reply

    async def fast_predict(scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = settings.max_body_bytes
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            reply = Reply(413, {"detail": f"body larger than {limit} bytes"})
        else:
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= limit:
                    chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks) if size <= limit else b"x" * (limit + 1)
            if size > limit:
                reply = Reply(413, {"detail": f"body larger than {limit} bytes"})
            elif size > THREADPOOL_BYTES:
                reply = await run_in_threadpool(predict_core, body, headers)
            else:
                reply = predict_core(body, headers)
        await reply.send(send)

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses={
            413: {"description": "Body or batch too large"},
            415: {"description": "Body is not sent as application/json"},
            422: {"description": "Invalid input"},
            503: {"description": "No model loaded"},
        },
    )
    async def predict(request: Request) -> Response:
        """Score one record (the raw columns), a batch `{"records": [...]}`, or a columnar
        batch `{"columns": {"Gender": [...], ...}}` (answered column-wise, the fastest; its
        schema is `ColumnarBatch` under components: every list of one length)."""
        reply = await run_in_threadpool(predict_core, await request.body(), request.headers)
        return reply.response()

    @app.get("/health/live")
    async def live() -> Response:
        """The process is up."""
        return Reply(200, {"status": "ok"}).response()

    @app.get("/health/ready", responses={503: {"description": "No model loaded yet"}})
    async def ready() -> Response:
        """Ready when a model is loaded."""
        model = manager.current
        if model is None:
            return Reply(503, {"detail": manager.last_error or "no model loaded yet"}).response()
        return Reply(
            200, {"status": "ready", "model": model.name, "version": model.version}
        ).response()

    @app.get("/model", responses={503: {"description": "No model loaded yet"}})
    async def model_info() -> Response:
        """The model being served: name, version, alias, run, training data hash, inputs."""
        model = manager.current
        if model is None:
            return Reply(503, {"detail": manager.last_error or "no model loaded yet"}).response()
        info = {
            **model.describe(),
            "tracking_reachable": manager.tracking_reachable,
            "last_error": manager.last_error,
        }
        return Reply(200, info).response()

    @app.post(
        "/admin/reload",
        responses={401: {"description": "No key"}, 403: {"description": "Not admin"}},
    )
    async def reload(request: Request) -> Response:
        """Check the alias now and swap to its version if it changed (admin role)."""
        if (resp := denied(request.headers, "admin")) is not None:
            return resp.response()
        swapped = await run_in_threadpool(manager.refresh)
        model = manager.current
        body = {
            "reloaded": swapped,
            "model": model.describe() if model else None,
            "tracking_reachable": manager.tracking_reachable,
            "last_error": manager.last_error,
        }
        return Reply(200, body).response()

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def prometheus() -> Response:
        """Prometheus metrics (with the newest monitoring report as gauges)."""
        body = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/monitor",
        response_class=HTMLResponse,
        responses={
            200: {"content": {"text/html": {}}},
            401: {"description": "No key (when API keys are set)"},
            403: {"description": "Not admin"},
            404: {"description": "No monitoring report yet"},
        },
    )
    async def monitor_page(request: Request) -> Response:
        """The newest monitoring report as a self-contained HTML dashboard (admin role
        when API keys are set). `mlcycle monitor` makes the reports."""
        if keys.enabled and (resp := denied(request.headers, "admin")) is not None:
            return resp.response()
        reports = await run_in_threadpool(feed.reports, True)
        if not reports:
            detail = (
                f"monitoring reports unreadable: {feed.error}"
                if feed.error
                else "no monitoring report yet: run `mlcycle monitor`"
            )
            return Reply(503 if feed.error else 404, {"detail": detail}).response()
        from mlcycle.monitor.dashboard import render

        page = render(reports[0], reports)
        return HTMLResponse(page, headers={"cache-control": "no-store"})

    app.add_middleware(
        ObservabilityMiddleware,
        metrics=metrics,
        access_log=settings.access_log,
        fast_predict=fast_predict,
    )
    return app


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _canonical_columns(feed: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    """The validated model inputs as the prediction log stores them: one list per
    feature, canonical values, null where missing (whatever the request body's shape)."""
    out: dict[str, list[Any]] = {}
    for name, column in feed.items():
        flat = column.ravel()
        if flat.dtype.kind == "f":
            values = flat.astype(np.float64)
            out[name] = [None if v != v else v for v in values.tolist()]
        else:
            out[name] = [None if v == MISSING else v for v in flat.tolist()]
    return out


def _request_schema(
    record: dict[str, Any], max_batch: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The /predict body schema, inlined for the OpenAPI document: one record or a batch
    of records; and the columnar batch (one list per field, all of one length), which is
    documented as its own schema (`components.schemas.ColumnarBatch`) and not in the
    request body's: JSON Schema cannot say "all lists of one length", so a client or
    fuzzer generating bodies from it would send ragged columns the API must refuse."""
    one = record
    batch = {
        "type": "object",
        "properties": {
            "records": {"type": "array", "items": one, "minItems": 1, "maxItems": max_batch}
        },
        "required": ["records"],
        "additionalProperties": False,
        "title": "Batch",
    }
    columns = {
        "type": "object",
        "properties": {
            "columns": {
                "type": "object",
                "properties": {
                    name: {"type": "array", "items": field, "minItems": 1, "maxItems": max_batch}
                    for name, field in one["properties"].items()
                },
                "required": list(one.get("required", [])),
                "additionalProperties": False,
                "minProperties": 1,
            }
        },
        "required": ["columns"],
        "additionalProperties": False,
        "title": "ColumnarBatch",
    }
    return {"anyOf": [one, batch]}, columns


DOCS_ASSETS = "/docs-assets"


def _offline_docs(app: FastAPI) -> None:
    """/docs with Swagger UI served from an installed package: no CDN, works offline."""
    from importlib import resources

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )


def app_factory() -> FastAPI:
    """For `uvicorn --factory mlcycle.serve.app:app_factory` (one app per worker)."""
    from mlcycle.logging_setup import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
