"""A challenger in shadow: the model behind `MLCYCLE_SHADOW_ALIAS` (default `challenger`)
scores every answered request off the request path, and its predictions are logged
beside the champion's, under the same request id and marked with its alias
(`<dataset>_predictions_<alias>`). It never answers a request.

One background thread at a lowered CPU priority takes answered bodies from a bounded
queue; when the queue is full a request is not shadowed (counted on /metrics), so a slow
challenger can never hold up the champion or grow the server's memory.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from mlcycle.serve.core import Outcome, Servable, score
from mlcycle.serve.model import ModelManager
from mlcycle.serve.predlog import PredictionLog, background_priority
from mlcycle.serve.service import Pending
from mlcycle.store.base import shadow_collection

logger = logging.getLogger(__name__)


class Shadow:
    def __init__(
        self,
        manager: ModelManager,
        log: Callable[[], PredictionLog | None],
        max_batch: int,
        queue_size: int,
        on_scored: Callable[[Servable, Outcome], None] = lambda model, outcome: None,
        on_skip: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.manager = manager
        self.log = log
        self.max_batch = max_batch
        self.on_scored = on_scored
        self.on_skip = on_skip
        self.scored = 0
        self._queue: queue.Queue[tuple[int, bytes, str] | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None

    def offer(self, body: bytes, request_id: str) -> None:
        """Called on the request path after the champion answered: never blocks."""
        if self.manager.current is None or self.log() is None:
            return
        try:
            self._queue.put_nowait((time.time_ns(), body, request_id))
        except queue.Full:
            self.on_skip("queue_full")

    def start(self) -> None:
        self.manager.start()
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.manager.stop()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)

    def idle(self) -> bool:
        """Nothing waiting (tests and shutdown wait on it)."""
        return self._queue.unfinished_tasks == 0

    def _run(self) -> None:
        background_priority()
        while (item := self._queue.get()) is not None:
            try:
                self._score(*item)
            except Exception:  # the shadow must never die, nor reach a request
                logger.exception("shadow scoring failed")
                self.on_skip("error")
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _score(self, ns: int, body: bytes, request_id: str) -> None:
        model, log = self.manager.current, self.log()
        if model is None or log is None:
            return
        started = time.perf_counter()
        outcome = score(body, model, self.max_batch, log=True)
        if outcome.reply.status != 200 or outcome.log is None:
            self.on_skip("refused")  # its own contract refused what the champion took
            return
        pending = Pending(
            ns,
            request_id,
            model.name,
            model.version,
            round((time.perf_counter() - started) * 1000, 3),
            outcome.log,
            role=self.manager.alias,
        )
        log.submit(
            [pending],
            nbytes=len(body),
            collection=shadow_collection(model.spec.name, self.manager.alias),
        )
        self.scored += 1
        self.on_scored(model, outcome)
