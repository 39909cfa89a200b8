"""The inference API (FastAPI on uvicorn).

POST /predict scores one record or {"records": [...]}; the hot path is orjson ->
column-wise validation -> onnxruntime -> orjson, with no pandas and no per-record
pydantic objects. Health, model info, Prometheus metrics and an admin reload sit beside it.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
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
from mlcycle.serve.predlog import PredictionLog
from mlcycle.serve.schemas import InvalidRequest, PredictResponse, record_model
from mlcycle.serve.security import KeyRing, parse_keys

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
    "/docs",
    "/openapi.json",
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
THREADPOOL_ROWS = 200
"""Batches larger than this are scored in a worker thread, off the event loop."""


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, "application/json"
    )


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> Response:
    return _json({"detail": detail}, status, headers)


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
            ["name", "version", "runtime", "source"],
            registry=self.registry,
        )
        self.log_dropped = Counter(
            "mlcycle_prediction_log_dropped_total",
            "Prediction log entries dropped",
            registry=self.registry,
        )
        self.reloads = Counter("mlcycle_model_reloads_total", "Model swaps", registry=self.registry)


class ObservabilityMiddleware:
    """Pure ASGI: counts and times every request; optional one-line access log."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

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

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            path = scope["path"]
            route = path if path in ROUTES else "other"
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
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


def _score(model: LoadedModel, records: list[Any], single: bool) -> tuple[np.ndarray, list[Any]]:
    feed = model.validator.validate(records, single)
    probs = model.scorer.positive_proba(feed)
    id_col = model.spec.id_column
    ids = [r.get(id_col) for r in records]
    return probs, ids


def create_app(settings: Settings | None = None, manager: ModelManager | None = None) -> FastAPI:
    settings = settings or get_settings()
    keys = KeyRing(parse_keys(settings.api_keys))
    metrics = Metrics()
    from mlcycle.spec import load_spec

    spec = load_spec(settings.spec)
    manager = manager or ModelManager(settings, _model_name(settings))
    state: dict[str, Any] = {"log": None, "store": None}

    def on_swap() -> None:
        model = manager.current
        if model is not None:
            metrics.model_info.clear()
            metrics.model_info.labels(model.name, model.version, model.runtime, model.source).set(1)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(manager.start)
        on_swap()
        original = manager.refresh

        def refresh_and_track() -> bool:
            swapped = original()
            if swapped:
                metrics.reloads.inc()
                on_swap()
            return swapped

        manager.refresh = refresh_and_track  # type: ignore[method-assign]
        if settings.prediction_log:
            from mlcycle.store import open_store
            from mlcycle.store.base import predictions_collection

            store = open_store(settings)
            state["store"] = store
            state["log"] = PredictionLog(
                store,
                predictions_collection(spec.name),
                settings.prediction_log_queue,
                on_drop=lambda n: metrics.log_dropped.inc(n),
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
    )
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, access_log=settings.access_log)
    app.state.manager = manager
    app.state.metrics = metrics

    record = record_model(spec, spec.numeric_features, spec.categorical_features)
    request_schema = _request_schema(record, settings.max_batch)

    def api_key(request: Request) -> str | None:
        key = request.headers.get("x-api-key")
        if key is None:
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                key = auth[7:].strip()
        return key

    def denied(request: Request, role: str) -> Response | None:
        status = keys.check(api_key(request), role)
        if status == 401:
            return _error(401, "missing or invalid API key", {"WWW-Authenticate": "ApiKey"})
        if status == 403:
            return _error(403, f"this API key lacks the {role!r} role")
        return None

    @app.post(
        "/predict",
        response_model=PredictResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_schema}},
            }
        },
        responses={
            413: {"description": "Body or batch too large"},
            422: {"description": "Invalid input"},
            503: {"description": "No model loaded"},
        },
    )
    async def predict(request: Request) -> Response:
        """Score one record (the raw columns) or a batch `{"records": [...]}`."""
        if (resp := denied(request, "predict")) is not None:
            return resp
        model = manager.current
        if model is None:
            return _error(503, "no model is loaded yet")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return _error(413, f"body larger than {settings.max_body_bytes} bytes")
        body = await request.body()
        if len(body) > settings.max_body_bytes:
            return _error(413, f"body larger than {settings.max_body_bytes} bytes")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            return _error(
                422, [{"loc": ["body"], "msg": f"invalid JSON: {err}", "type": "json_invalid"}]
            )
        single = True
        if isinstance(payload, dict) and "records" in payload:
            records = payload["records"]
            single = False
            if len(payload) != 1 or not isinstance(records, list):
                return _error(
                    422,
                    [
                        {
                            "loc": ["body"],
                            "msg": 'a batch is {"records": [ ... ]} and nothing else',
                            "type": "value_error",
                        }
                    ],
                )
            if not records:
                return _error(
                    422,
                    [
                        {
                            "loc": ["body", "records"],
                            "msg": "at least one record",
                            "type": "too_short",
                        }
                    ],
                )
            if len(records) > settings.max_batch:
                return _error(
                    413,
                    f"batch of {len(records)} records exceeds the limit of {settings.max_batch}",
                )
        elif isinstance(payload, dict):
            records = [payload]
        else:
            return _error(
                422,
                [
                    {
                        "loc": ["body"],
                        "msg": "expected a JSON object",
                        "type": "model_attributes_type",
                    }
                ],
            )
        started = time.perf_counter()
        try:
            if len(records) > THREADPOOL_ROWS:
                probs, ids = await run_in_threadpool(_score, model, records, single)
            else:
                probs, ids = _score(model, records, single)
        except InvalidRequest as err:
            return _error(422, err.errors)
        if not np.isfinite(probs).all():  # defensive: never answer a NaN score
            bad = np.flatnonzero(~np.isfinite(probs)).tolist()[:50]
            return _error(
                422,
                [
                    {
                        "loc": ["body", "records", i],
                        "msg": "the model cannot score this record",
                        "type": "value_error",
                    }
                    for i in bad
                ],
            )
        positive = probs > 0.5
        labels = np.where(positive, model.positive_label, model.negative_label)
        rid = request.headers.get("x-request-id", "")
        request_id = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        n_pos = int(positive.sum())
        if n_pos:
            metrics.predictions.labels(model.positive_label).inc(n_pos)
        if len(records) - n_pos:
            metrics.predictions.labels(model.negative_label).inc(len(records) - n_pos)
        rounded = np.round(probs, 6).tolist()
        label_list = labels.tolist()
        body_out = {
            "request_id": request_id,
            "model": {"name": model.name, "version": model.version},
            "predictions": [
                {"id": i, "label": lab, "probability": p}
                for i, lab, p in zip(ids, label_list, rounded, strict=True)
            ],
        }
        log = state["log"]
        if log is not None:
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            ts = time.time()
            log.submit(
                [
                    {
                        "_id": f"{request_id}:{k}",
                        "request_id": request_id,
                        "ts": ts,
                        "model_name": model.name,
                        "model_version": model.version,
                        "inputs": rec,
                        "label": lab,
                        "probability": p,
                        "latency_ms": latency_ms,
                    }
                    for k, (rec, lab, p) in enumerate(
                        zip(records, label_list, rounded, strict=True)
                    )
                ]
            )
        return _json(
            body_out, headers={"X-Request-ID": request_id, "X-Model-Version": model.version}
        )

    @app.get("/health/live")
    async def live() -> Response:
        """The process is up."""
        return _json({"status": "ok"})

    @app.get("/health/ready", responses={503: {"description": "No model loaded yet"}})
    async def ready() -> Response:
        """Ready when a model is loaded."""
        model = manager.current
        if model is None:
            return _error(503, manager.last_error or "no model loaded yet")
        return _json({"status": "ready", "model": model.name, "version": model.version})

    @app.get("/model", responses={503: {"description": "No model loaded yet"}})
    async def model_info() -> Response:
        """The model being served: name, version, alias, run, training data hash, inputs."""
        model = manager.current
        if model is None:
            return _error(503, manager.last_error or "no model loaded yet")
        return _json(
            {
                **model.describe(),
                "tracking_reachable": manager.tracking_reachable,
                "last_error": manager.last_error,
            }
        )

    @app.post(
        "/admin/reload",
        responses={401: {"description": "No key"}, 403: {"description": "Not admin"}},
    )
    async def reload(request: Request) -> Response:
        """Check the alias now and swap to its version if it changed (admin role)."""
        if (resp := denied(request, "admin")) is not None:
            return resp
        swapped = await run_in_threadpool(manager.refresh)
        model = manager.current
        return _json(
            {
                "reloaded": swapped,
                "model": model.describe() if model else None,
                "tracking_reachable": manager.tracking_reachable,
                "last_error": manager.last_error,
            }
        )

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _request_schema(record: Any, max_batch: int) -> dict[str, Any]:
    """The /predict body schema (one record or a batch), inlined for the OpenAPI document."""
    one = record.model_json_schema()
    batch = {
        "type": "object",
        "properties": {
            "records": {"type": "array", "items": one, "minItems": 1, "maxItems": max_batch}
        },
        "required": ["records"],
        "additionalProperties": False,
        "title": "Batch",
    }
    return {"anyOf": [one, batch]}


def _model_name(settings: Settings) -> str:
    from mlcycle.train.config import load_train_config

    try:
        return load_train_config(settings.train_config).registered_model
    except Exception:
        return settings.model_name


def app_factory() -> FastAPI:
    """For `uvicorn --factory mlcycle.serve.app:app_factory` (one app per worker)."""
    from mlcycle.logging_setup import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
