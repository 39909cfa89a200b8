"""The routes beside `/predict` (health, model, reload, metrics, monitoring page, docs)
and the OpenAPI document, which follows the loaded model's contract."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlcycle.errors import (
    MlcycleError,
    ModelNotFound,
    NoModelLoaded,
    NoReport,
    StoreUnavailable,
)
from mlcycle.serve.asgi import Metrics
from mlcycle.serve.core import Reply, refusal
from mlcycle.serve.model import ModelManager
from mlcycle.serve.monitoring import ReportFeed
from mlcycle.serve.schemas import PredictResponse, record_schema
from mlcycle.serve.security import KeyRing, denied
from mlcycle.spec import DatasetSpec


def respond(reply: Reply) -> Response:
    return Response(reply.encoded(), reply.status, reply.headers, "application/json")


def add_routes(
    app: FastAPI, manager: ModelManager, keys: KeyRing, metrics: Metrics, feed: ReportFeed
) -> None:
    """Every route but `POST /predict` (the fast path, `mlcycle.serve.asgi`), and the one
    handler that answers an `MlcycleError` a route raises with its HTTP status."""

    async def refuse(_request: Request, err: Exception) -> Response:
        assert isinstance(err, MlcycleError)
        return respond(refusal(err))

    app.add_exception_handler(MlcycleError, refuse)
    add_model_routes(app, manager, keys)
    add_card_route(app, manager)
    add_operator_routes(app, manager, keys, metrics, feed)
    add_offline_docs(app)


def add_model_routes(app: FastAPI, manager: ModelManager, keys: KeyRing) -> None:
    """The probes and the model being served."""

    @app.get("/health/live")
    async def live() -> Response:
        """The process is up."""
        return respond(Reply(200, {"status": "ok"}))

    @app.get("/health/ready", responses={503: {"description": "No model loaded yet"}})
    async def ready() -> Response:
        """Ready when a model is loaded."""
        model = manager.current
        if model is None:  # anonymous (probes): no internals; /model says why (admin)
            return respond(refusal(NoModelLoaded("no model loaded yet")))
        return respond(
            Reply(200, {"status": "ready", "model": model.name, "version": model.version})
        )

    @app.get("/model", responses={503: {"description": "No model loaded yet"}})
    async def model_info(request: Request) -> Response:
        """The model being served: name, version, alias, run, training data hash, inputs
        and labels (what the OpenAPI document shows anyway); the last load error for
        the admin role only when API keys are set."""
        admin = not keys.enabled or denied(keys, request.headers, "admin") is None
        model = manager.current
        if model is None:
            detail = (manager.last_error if admin else None) or "no model loaded yet"
            return respond(refusal(NoModelLoaded(detail)))
        shadow = getattr(request.app.state, "shadow", None)
        beside, scored = (shadow.manager.current, shadow.scored) if shadow else (None, 0)
        info = {
            **model.describe(),
            "tracking_reachable": manager.tracking_reachable,
            "last_error": manager.last_error if admin else None,
            "shadow": {**beside.describe(), "scored": scored} if beside else None,
        }
        return respond(Reply(200, info))


def add_card_route(app: FastAPI, manager: ModelManager) -> None:
    @app.get(
        "/model/card",
        responses={
            200: {"content": {"text/markdown": {}, "text/html": {}}},
            404: {"description": "The served version has no model card"},
            503: {"description": "No model loaded yet"},
        },
    )
    async def model_card(format: Literal["markdown", "html"] = "markdown") -> Response:
        """The served version's model card: intended use, training data, evaluation
        against the baseline and champion, fairness by group, the gate's decision and
        limitations (`?format=html` for a page)."""
        model = manager.current
        if model is None:
            return respond(refusal(NoModelLoaded("no model loaded yet")))
        if model.card is None:
            return respond(
                refusal(ModelNotFound(f"v{model.version} was trained before model cards"))
            )
        header = f"<!-- {model.name} v{model.version}, run {model.run_id} -->\n"
        if format == "html":
            from mlcycle.card import card_html

            return Response(card_html(model.card), media_type="text/html; charset=utf-8")
        return Response(header + model.card, media_type="text/markdown; charset=utf-8")


def add_operator_routes(
    app: FastAPI, manager: ModelManager, keys: KeyRing, metrics: Metrics, feed: ReportFeed
) -> None:
    """Reload, /metrics and the monitoring dashboard."""

    @app.post(
        "/admin/reload",
        responses={401: {"description": "No key"}, 403: {"description": "Not admin"}},
    )
    async def reload(request: Request) -> Response:
        """Check the alias now and swap to its version if it changed (admin role)."""
        if (reply := denied(keys, request.headers, "admin")) is not None:
            return respond(reply)
        swapped = await run_in_threadpool(manager.refresh)
        model = manager.current
        body = {
            "reloaded": swapped,
            "model": model.describe() if model else None,
            "tracking_reachable": manager.tracking_reachable,
            "last_error": manager.last_error,
        }
        return respond(Reply(200, body))

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics: requests, latency, predictions, the model served; with the
        newest monitoring report as gauges for the admin role (or when no API keys are
        set: scrape with `Authorization: Bearer <admin key>`)."""
        admin = not keys.enabled or denied(keys, request.headers, "admin") is None
        body = await run_in_threadpool(generate_latest, metrics.registry)
        if admin:
            body += await run_in_threadpool(generate_latest, metrics.monitoring)
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
        if keys.enabled and (reply := denied(keys, request.headers, "admin")) is not None:
            return respond(reply)
        reports = await run_in_threadpool(feed.reports, True)
        if not reports:
            detail = (
                f"monitoring reports unreadable: {feed.error}"
                if feed.error
                else "no monitoring report yet: run `mlcycle monitor`"
            )
            return respond(refusal(StoreUnavailable(detail) if feed.error else NoReport(detail)))
        from mlcycle.monitor.dashboard import render

        page = render(reports[0], reports)
        return HTMLResponse(page, headers={"cache-control": "no-store"})


PREDICT_DESCRIPTION = """Score one record (the raw columns), a batch `{"records": [...]}`,
or a columnar batch `{"columns": {"Gender": [...], ...}}` (answered column-wise, the
fastest; its schema is `ColumnarBatch` under components: every list of one length).
Each prediction has the most probable `label`, `probability` (binary: of the positive
label; multiclass: of the label) and `probabilities` (every label's)."""

ERROR = {
    "type": "object",
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "loc": {
                                "type": "array",
                                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                            },
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                        "required": ["loc", "msg", "type"],
                    },
                },
            ]
        }
    },
    "required": ["detail"],
}


def openapi_document(app: FastAPI, spec: DatasetSpec, max_batch: int) -> dict[str, Any]:
    """The OpenAPI document for the model of `spec`: the routes, and `/predict` with its
    body schema generated from the spec's rules (one record or a batch of records; the
    columnar batch as its own schema, see `request_schemas`)."""
    from fastapi.openapi.utils import get_openapi

    served = (
        f"Serves the MLflow registered model `{spec.registered_model}` (the version behind "
        f"its serving alias: `GET /model` says which), trained on the dataset `{spec.name}`"
    )
    if spec.target is not None:
        labels = ", ".join(f"`{label}`" for label in spec.target.label_order)
        served += f", predicting `{spec.target.column}` ({labels})"
    doc = get_openapi(
        title=f"{app.title}: {spec.registered_model}",
        version=app.version,
        description=f"{served}.\n\n{app.description}",
        routes=app.routes,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    response = PredictResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(response.pop("$defs", {}))
    schemas["PredictResponse"] = response
    schemas["Error"] = ERROR
    record = record_schema(spec, spec.numeric_features, spec.categorical_features)
    body, columnar = request_schemas(record, max_batch)
    schemas["ColumnarBatch"] = columnar
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    doc["paths"]["/predict"] = {
        "post": {
            "summary": "Predict",
            "operationId": "predict",
            "description": PREDICT_DESCRIPTION,
            "parameters": [
                {
                    "name": "explain",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "boolean", "default": False},
                    "description": "Add to each prediction `base`, `contributions` (one "
                    "number a feature; base + their sum is the raw score) and `reasons` "
                    "(the features that lowered the score most, worded from the spec). "
                    "Linear models only: other versions answer 422.",
                }
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {
                    "description": "Predictions",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/PredictResponse"}
                        }
                    },
                },
                "401": {"description": "Missing or invalid API key", "content": error},
                "403": {"description": "The key lacks the predict role", "content": error},
                "413": {"description": "Body too large", "content": error},
                "415": {"description": "Body is not sent as application/json", "content": error},
                "422": {"description": "Invalid input", "content": error},
                "503": {"description": "No model loaded", "content": error},
            },
        }
    }
    return doc


def request_schemas(
    record: dict[str, Any], max_batch: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The /predict body schema, inlined: one record or a batch of records; and the
    columnar batch (one list per field, all of one length), documented as its own schema
    (`components.schemas.ColumnarBatch`) and not in the request body's: JSON Schema cannot
    say "all lists of one length", so a client or fuzzer generating bodies from it would
    send ragged columns the API must refuse."""
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


def add_offline_docs(app: FastAPI) -> None:
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
