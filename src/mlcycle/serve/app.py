"""The inference API (FastAPI on uvicorn), wired from its rooms:

- `core`: body -> validated columns -> scores -> reply (pure, unit-tested);
- `service`: `/predict` around the core (API key, limits, model, request id, log);
- `asgi`: metrics for every request and the fast path answering `POST /predict`;
- `routes`: health, model, reload, metrics, monitoring page, docs, and the OpenAPI
  document of the loaded model;
- `model`: loading, self-checking and swapping the model behind the alias.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from mlcycle import __version__
from mlcycle.config import Settings, get_settings
from mlcycle.serve.asgi import (
    ASGIApp,
    BodyBudget,
    Metrics,
    ObservabilityMiddleware,
    PredictEndpoint,
    Receive,
    Scope,
    Send,
)
from mlcycle.serve.core import Outcome, Servable
from mlcycle.serve.model import LoadedModel, ModelManager
from mlcycle.serve.monitoring import ReportCollector, ReportFeed
from mlcycle.serve.predlog import PredictionLog
from mlcycle.serve.routes import add_routes, openapi_document
from mlcycle.serve.security import KeyRing, parse_keys
from mlcycle.serve.service import PredictService, render
from mlcycle.serve.shadow import Shadow
from mlcycle.spec import DatasetSpec, load_spec
from mlcycle.store.base import Store, predictions_collection


class _Resources:
    """The store (opened on first use) and the prediction log of one app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log: PredictionLog | None = None
        self._store: Store | None = None
        self._lock = threading.Lock()

    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                from mlcycle.store import open_store

                self._store = open_store(self.settings)
            return self._store

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self._store is not None:
            self._store.close()


class ServingApp(FastAPI):
    """FastAPI with request metrics and the `POST /predict` fast path in front of the
    framework's own middleware (error pages, body limits, telemetry), not inside it: a
    prediction pays for four ASGI layers less. Every other request still goes through
    the whole FastAPI stack, metered by the same front."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The FastAPI stack itself: what the front hands every other request to."""
        await super().__call__(scope, receive, send)


def _metered(manager: ModelManager, metrics: Metrics) -> ModelManager:
    """The manager with its swaps and failed loads counted on /metrics."""

    def on_swap(model: LoadedModel) -> None:
        metrics.reloads.inc()
        metrics.model_info.clear()
        metrics.model_info.labels(
            model.name, model.version, model.runtime, model.source, model.run_id
        ).set(1)

    def on_failure(reason: str) -> None:
        metrics.reload_failures.labels(reason).inc()

    manager.subscribe(on_swap=on_swap, on_failure=on_failure)
    return manager


def _shadow(
    settings: Settings, name: str, metrics: Metrics, resources: _Resources
) -> Shadow | None:
    """The challenger scored in shadow (None when MLCYCLE_SHADOW_ALIAS is empty)."""
    alias = settings.shadow_alias.strip()
    if not alias or alias == settings.model_alias:
        return None

    def on_swap(model: LoadedModel) -> None:
        metrics.shadow_info.clear()
        metrics.shadow_info.labels(alias, model.name, model.version, model.run_id).set(1)

    def on_scored(model: Servable, counts: list[int]) -> None:
        for label, count in zip(model.class_labels, counts, strict=True):
            if count:
                metrics.shadow_predictions.labels(alias, label).inc(count)

    manager = ModelManager(settings, name, alias=alias, shadow=True, on_swap=on_swap)
    return Shadow(
        manager,
        lambda: resources.log,
        settings.max_batch,
        settings.shadow_queue,
        on_scored=on_scored,
        on_skip=lambda reason: metrics.shadow_skipped.labels(alias, reason).inc(),
    )


def _service(
    settings: Settings,
    keys: KeyRing,
    manager: ModelManager,
    metrics: Metrics,
    resources: _Resources,
    shadow: Shadow | None = None,
) -> PredictService:
    """`POST /predict`'s service: the served model, the limits, the log, the counters."""

    def on_scored(model: Servable, outcome: Outcome) -> None:
        for label, count in zip(model.class_labels, outcome.counts, strict=True):
            if count:
                metrics.predictions.labels(label).inc(count)

    return PredictService(
        keys,
        lambda: manager.current,
        settings.max_body_bytes,
        settings.max_batch,
        log=lambda: resources.log,
        on_scored=on_scored,
        shadow=shadow.offer if shadow is not None else None,
    )


def _openapi(
    app: FastAPI, served_spec: Callable[[], DatasetSpec], max_batch: int
) -> Callable[[], dict[str, Any]]:
    documents: dict[str, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        """The OpenAPI document of the model being served: rebuilt when it changes."""
        spec = served_spec()
        if spec.fingerprint not in documents:
            documents.clear()
            documents[spec.fingerprint] = openapi_document(app, spec, max_batch)
        return documents[spec.fingerprint]

    return openapi


def create_app(settings: Settings | None = None, manager: ModelManager | None = None) -> FastAPI:
    settings = settings or get_settings()
    keys = KeyRing(parse_keys(settings.api_keys))
    metrics = Metrics()
    configured = load_spec(settings.spec_path)
    resources = _Resources(settings)

    manager = _metered(manager or ModelManager(settings, configured.registered_model), metrics)

    def served_spec() -> DatasetSpec:
        """The loaded model's spec (from its bundle), else the configured one."""
        model = manager.current
        return model.spec if model is not None else configured

    shadow = _shadow(settings, manager.name, metrics, resources)
    service = _service(settings, keys, manager, metrics, resources, shadow)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(manager.start)
        if settings.prediction_log:
            resources.log = PredictionLog(
                resources.store(),
                predictions_collection(served_spec().name),
                settings.prediction_log_queue,
                on_drop=lambda n: metrics.log_dropped.inc(n),
                max_bytes=settings.prediction_log_max_bytes,
                render=render,
            )
        # Everything made so far (modules, the app, the model) lives as long as the
        # process: out of the collector's sight, a full collection walks only what
        # requests make, a few milliseconds instead of tens while a request waits.
        if shadow is not None and resources.log is not None:
            await run_in_threadpool(shadow.start)
        gc.freeze()
        yield
        if shadow is not None:
            shadow.stop()
        manager.stop()
        await run_in_threadpool(resources.close)

    app = ServingApp(
        title="mlcycle inference API",
        version=__version__,
        description="Scores records with the model behind the registry alias "
        f'`{manager.alias}`. Send one record, or `{{"records": [...]}}` for a batch.',
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.manager = manager
    app.state.shadow = shadow
    app.state.metrics = metrics
    feed = ReportFeed(resources.store, lambda: (served_spec().name, manager.name))
    metrics.monitoring.register(ReportCollector(feed))
    add_routes(app, manager, keys, metrics, feed)

    app.openapi = _openapi(app, served_spec, settings.max_batch)  # type: ignore[method-assign]
    app.front = ObservabilityMiddleware(
        app.framework,
        metrics=metrics,
        access_log=settings.access_log,
        fast_predict=PredictEndpoint(
            service, settings.body_timeout, BodyBudget(settings.max_inflight_body_bytes)
        ),
    )
    return app


def app_factory() -> FastAPI:
    """For `uvicorn --factory mlcycle.serve.app:app_factory` (one app per worker)."""
    from mlcycle.logging_setup import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
