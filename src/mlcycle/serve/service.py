"""`POST /predict` around the core: API key, content type, body limit, the model being
served, request id, metrics and the prediction log. No framework: the ASGI fast path
calls `PredictService.handle` with the raw body and headers."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from mlcycle.serve.core import Outcome, Reply, Servable, score
from mlcycle.serve.predlog import PredictionLog
from mlcycle.serve.security import KeyRing, denied
from mlcycle.store.base import predictions_collection

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class PredictService:
    def __init__(
        self,
        keys: KeyRing,
        current: Callable[[], Servable | None],
        max_body_bytes: int,
        max_batch: int,
        log: Callable[[], PredictionLog | None] = lambda: None,
        on_scored: Callable[[Servable, Outcome], None] = lambda model, outcome: None,
    ) -> None:
        self.keys = keys
        self.current = current
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.log = log
        self.on_scored = on_scored

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Reply:
        if (reply := denied(self.keys, headers, "predict")) is not None:
            return reply
        if not is_json(headers.get("content-type", "")):
            return Reply(
                415, {"detail": "send the body as JSON with Content-Type: application/json"}
            )
        model = self.current()
        if model is None:
            return Reply(503, {"detail": "no model is loaded yet"})
        if len(body) > self.max_body_bytes:
            return Reply(413, {"detail": f"body larger than {self.max_body_bytes} bytes"})
        started = time.perf_counter()
        log = self.log()
        outcome = score(body, model, self.max_batch, log=log is not None)
        reply = outcome.reply
        rid = headers.get("x-request-id", "")
        request_id = rid if _REQUEST_ID.match(rid) else os.urandom(16).hex()
        reply.headers["x-request-id"] = request_id
        if reply.status == 200:
            reply.body = {"request_id": request_id, **reply.body}
            self.on_scored(model, outcome)
        if log is not None and outcome.log is not None:
            log.submit(
                [
                    {
                        # server-made (a reused request id loses nothing) and time-ordered,
                        # as MongoDB's ObjectId: inserts append to the end of the id index
                        # instead of splitting pages all over it
                        "_id": time_ordered_id(),
                        "request_id": request_id,
                        "ts": datetime.now(UTC),
                        "model_name": model.name,
                        "model_version": model.version,
                        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                        **outcome.log,
                    }
                ],
                nbytes=len(body),
                collection=predictions_collection(model.spec.name),
            )
        return reply


def time_ordered_id() -> str:
    """32 hex digits: nanoseconds since the epoch, then 64 random bits."""
    return f"{time.time_ns():016x}{os.urandom(8).hex()}"


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
