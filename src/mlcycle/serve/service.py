"""`POST /predict` around the core: API key, content type, body limit, the model being
served, request id, metrics and the prediction log. No framework: the ASGI fast path
calls `PredictService.handle` with the raw body and headers."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from mlcycle.errors import BodyTooLarge, NoModelLoaded, UnsupportedMediaType
from mlcycle.serve.core import LogPart, Outcome, Reply, Servable, refusal, score
from mlcycle.serve.explain import attach
from mlcycle.serve.explain import explain as explained
from mlcycle.serve.predlog import PredictionLog
from mlcycle.serve.security import KeyRing, denied
from mlcycle.store.base import Document, predictions_collection

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
LARGE_BATCH_BYTES = 64 * 1024
"""Bodies larger than this are large batches: the ASGI fast path scores them in a worker
thread with the garbage collector paused (`asgi.collector_paused`), and the prediction
log's writer steps aside meanwhile (`PredictionLog.busy`)."""


class PredictService:
    def __init__(
        self,
        keys: KeyRing,
        current: Callable[[], Servable | None],
        max_body_bytes: int,
        max_batch: int,
        log: Callable[[], PredictionLog | None] = lambda: None,
        on_scored: Callable[[Servable, Outcome], None] = lambda model, outcome: None,
        shadow: Callable[[bytes, str], None] | None = None,
    ) -> None:
        self.keys = keys
        self.current = current
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.log = log
        self.on_scored = on_scored
        self.shadow = shadow
        """Hands an answered request's body and id to the shadow (`serve.shadow`)."""

    def refuse_early(self, headers: Mapping[str, str]) -> Reply | None:
        """What can be answered from the headers alone, before the body is read: the API
        key (401/403) and the content type (415)."""
        if (reply := denied(self.keys, headers, "predict")) is not None:
            return reply
        if not is_json(headers.get("content-type", "")):
            return refusal(
                UnsupportedMediaType("send the body as JSON with Content-Type: application/json")
            )
        return None

    def handle(self, body: bytes, headers: Mapping[str, str], explain: bool = False) -> Reply:
        if (reply := self.refuse_early(headers)) is not None:
            return reply
        model = self.current()
        if model is None:
            return refusal(NoModelLoaded("no model is loaded yet"))
        if len(body) > self.max_body_bytes:
            return refusal(BodyTooLarge(f"body larger than {self.max_body_bytes} bytes"))
        started = time.perf_counter()
        log = self.log()
        large = len(body) > LARGE_BATCH_BYTES
        with log.busy() if log is not None and large else contextlib.nullcontext():
            outcome = score(body, model, self.max_batch, log=log is not None)
        reply = outcome.reply
        rid = headers.get("x-request-id", "")
        request_id = rid if _REQUEST_ID.match(rid) else new_request_id()
        reply.headers["x-request-id"] = request_id
        if reply.status == 200 and explain:
            found = explained(body, model, self.max_batch)
            if isinstance(found, Reply):
                found.headers["x-request-id"] = request_id
                return found
            attach(reply, found)
        if reply.status == 200:
            reply.body = {"request_id": request_id, **reply.body}
            self.on_scored(model, outcome)
        if log is not None and outcome.log is not None:
            log.submit(
                [
                    Pending(
                        time.time_ns(),
                        request_id,
                        model.name,
                        model.version,
                        round((time.perf_counter() - started) * 1000, 3),
                        outcome.log,
                    )
                ],
                nbytes=len(body),
                collection=predictions_collection(model.spec.name),
            )
        if self.shadow is not None and reply.status == 200:
            self.shadow(body, request_id)
        return reply


class Pending:
    """A prediction log entry as the request leaves it; `document` (the log's writer
    thread) makes the stored entry."""

    __slots__ = ("latency_ms", "model_name", "model_version", "ns", "part", "request_id")

    def __init__(
        self,
        ns: int,
        request_id: str,
        model_name: str,
        model_version: str,
        latency_ms: float,
        part: LogPart,
    ) -> None:
        self.ns, self.request_id, self.latency_ms, self.part = ns, request_id, latency_ms, part
        self.model_name, self.model_version = model_name, model_version

    def document(self) -> Document:
        return {
            # server-made (a reused request id loses nothing) and time-ordered, as
            # MongoDB's ObjectId: inserts append to the end of the id index instead of
            # splitting pages all over it
            "_id": time_ordered_id(self.ns),
            "request_id": self.request_id,
            "ts": datetime.fromtimestamp(self.ns / 1e9, UTC),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "latency_ms": self.latency_ms,
            **self.part.body(),
        }


def render(item: Any) -> Document:
    """The prediction log's renderer: a Pending entry -> its document (documents pass)."""
    return item.document() if isinstance(item, Pending) else item


class _Ids:
    """Request ids and log ids without a system call a request: a generator seeded from
    the OS once per process (and again in a forked child, so workers never share one)."""

    def __init__(self) -> None:
        self.seed()
        os.register_at_fork(after_in_child=self.seed)

    def seed(self) -> None:
        self.random = random.Random(os.urandom(32))
        self.process = os.urandom(4).hex()
        self.count = itertools.count()


_IDS = _Ids()


def new_request_id() -> str:
    """32 random hex digits."""
    return f"{_IDS.random.getrandbits(128):032x}"


def time_ordered_id(ns: int | None = None) -> str:
    """32 hex digits: nanoseconds since the epoch, this process's 32-bit token and a
    32-bit counter: ordered by time, unique across a server's worker processes."""
    ns = time.time_ns() if ns is None else ns
    return f"{ns:016x}{_IDS.process}{next(_IDS.count) & 0xFFFFFFFF:08x}"


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
