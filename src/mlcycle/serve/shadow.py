"""A challenger in shadow: the model behind `MLCYCLE_SHADOW_ALIAS` (default `challenger`)
scores every answered request off the request path, and its predictions are logged
beside the champion's, under the same request id and marked with its alias
(`<dataset>_predictions_<alias>`). It never answers a request.

One background thread at a lowered CPU priority takes answered bodies from a bounded
queue; when the queue is full a request is not shadowed (counted on /metrics), so a slow
challenger can never hold up the champion or grow the server's memory. The thread wakes
once a batch waits (or after LINGER seconds), takes everything waiting and scores the
single-record requests among it in one call of the model (`score_many`): one call for a
hundred rows costs about what one row costs alone. The requests scored together make one
log document (`entry`: a request id, id, label and probabilities a row; the inputs stay
in the champion's entry of the same request id). So the shadow's share of the process,
of its interpreter lock and of the log's writes stays small.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from mlcycle.errors import InvalidRequest
from mlcycle.serve.core import LogPart, Outcome, ParsedOne, Servable, answer_one, parse, score
from mlcycle.serve.model import ModelManager
from mlcycle.serve.predlog import PredictionLog, background_priority
from mlcycle.serve.service import time_ordered_id
from mlcycle.store.base import shadow_collection

logger = logging.getLogger(__name__)


class Shadow:
    def __init__(
        self,
        manager: ModelManager,
        log: Callable[[], PredictionLog | None],
        max_batch: int,
        queue_size: int,
        on_scored: Callable[[Servable, list[int]], None] = lambda model, counts: None,
        on_skip: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.manager = manager
        self.log = log
        self.max_batch = max_batch
        self.on_scored = on_scored
        self.on_skip = on_skip
        self.scored = 0
        self.queue_size = queue_size
        self._items: deque[tuple[int, bytes, str]] = deque()
        self._wake = threading.Event()
        self._working = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def offer(self, body: bytes, request_id: str) -> None:
        """Called on the request path after the champion answered: never blocks, and
        wakes the shadow only once a batch is waiting (no thread switch a request)."""
        if self.manager.current is None or self.log() is None:
            return
        if len(self._items) >= self.queue_size:
            self.on_skip("queue_full")
            return
        self._items.append((time.time_ns(), body, request_id))
        if len(self._items) >= WAKE:
            self._wake.set()

    def start(self) -> None:
        self.manager.start()
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Scores what is waiting, then ends the thread."""
        self.manager.stop()
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout)

    def idle(self) -> bool:
        """Nothing waiting nor being scored (tests and shutdown wait on it)."""
        return not self._items and not self._working

    def _run(self) -> None:
        background_priority()
        while True:
            self._wake.wait(LINGER)
            self._wake.clear()
            while self._items:
                self._working = True  # before taking: `idle` never sees a gap
                work: list[tuple[int, bytes, str]] = []
                while self._items and len(work) < DRAIN:
                    work.append(self._items.popleft())
                try:
                    self._score(work)
                except Exception:  # the shadow must never die, nor reach a request
                    logger.exception("shadow scoring failed")
                    for _ in work:
                        self.on_skip("error")
                finally:
                    self._working = False
                time.sleep(0)  # the interpreter lock to the requests between batches
            if self._stopping:
                return

    def _score(self, items: list[tuple[int, bytes, str]]) -> None:
        model, log = self.manager.current, self.log()
        if model is None or log is None:
            return
        started = time.perf_counter()
        outcomes = score_many([body for _, body, _ in items], model, self.max_batch)
        each = round((time.perf_counter() - started) * 1000 / len(items), 3)
        scored = []
        counts = [0] * len(model.class_labels)
        for (ns, _, request_id), outcome in zip(items, outcomes, strict=True):
            if outcome.reply.status != 200 or outcome.log is None:
                self.on_skip("refused")  # its own contract refused what the champion took
                continue
            scored.append((ns, request_id, outcome.log))
            counts = [a + b for a, b in zip(counts, outcome.counts, strict=True)]
        self.scored += len(scored)
        if scored:
            self.on_scored(model, counts)
            doc = entry(scored, model, self.manager.alias, each)
            log.submit(
                [doc],
                nbytes=sum(len(body) for _, body, _ in items) // 4,
                collection=shadow_collection(model.spec.name, self.manager.alias),
            )


def entry(
    scored: list[tuple[int, str, LogPart]], model: Servable, alias: str, latency_ms: float
) -> dict[str, Any]:
    """One log document for the requests the shadow scored together: per row its
    request id (the champion's entry of the same request id holds the inputs, so they
    are not stored twice), the row's id, label and probabilities; `ts` is the first
    request's time, `ts_last` the last's; `latency_ms` the model's time a request."""
    request_ids: list[str] = []
    ids: list[Any] = []
    labels: list[str] = []
    rounded: list[float] = []
    names = model.class_labels
    columns: list[list[float]] = [[] for _ in names]
    for _, request_id, part in scored:
        request_ids.extend([request_id] * part.rows)
        ids.extend(part.ids)
        labels.extend(part.labels)
        rounded.extend(part.rounded)
        for column, values in zip(columns, part.columns, strict=True):
            column.extend(values)
    return {
        "_id": time_ordered_id(scored[0][0]),
        "ts": datetime.fromtimestamp(scored[0][0] / 1e9, UTC),
        "ts_last": datetime.fromtimestamp(scored[-1][0] / 1e9, UTC),
        "model_name": model.name,
        "model_version": model.version,
        "role": alias,
        "latency_ms": latency_ms,
        "requests": len(scored),
        "rows": len(ids),
        "request_ids": request_ids,
        "ids": ids,
        "labels": labels,
        "probabilities": rounded,
        "class_probabilities": dict(zip(names, columns, strict=True)),
    }


DRAIN = 128
"""The most queued requests the shadow takes at once."""
WAKE = 32
"""Queued requests that wake the shadow at once; fewer wait at most LINGER seconds."""
LINGER = 0.05


def score_many(bodies: list[bytes], model: Servable, max_batch: int) -> list[Outcome]:
    """`score` for many request bodies, with the single plain records among them scored
    in one call of the model: the same outcome for each body as `score` gives it alone
    (the same validation, the same probabilities), in the bodies' order."""
    outcomes: list[Outcome | None] = [None] * len(bodies)
    singles: list[tuple[int, ParsedOne]] = []
    for i, body in enumerate(bodies):
        parsed = _single(body, model, max_batch)
        if parsed is None:
            outcomes[i] = score(body, model, max_batch, log=True)
        else:
            singles.append((i, parsed))
    if singles:
        feed = model.validator.row_feed([p.row for _, p in singles])
        probs = model.scorer.proba(feed).tolist()
        for (i, parsed), scores in zip(singles, probs, strict=True):
            if all(map(math.isfinite, scores)):
                outcomes[i] = answer_one(parsed, scores, model, log=True)
            else:  # `score` words its refusal
                outcomes[i] = score(bodies[i], model, max_batch, log=True)
    return [o for o in outcomes if o is not None]


def _single(body: bytes, model: Servable, max_batch: int) -> ParsedOne | None:
    """One plainly valid record (`ParsedOne`), or None for anything else."""
    if len(body) > 64 * 1024:
        return None
    try:
        parsed = parse(orjson.loads(body), model, max_batch)
    except (orjson.JSONDecodeError, InvalidRequest, RecursionError):
        return None
    return parsed if isinstance(parsed, ParsedOne) else None
