"""The prediction log: a bounded queue drained to the store in batches by one thread.

`submit` never blocks and never raises: when the queue is full the entries are dropped
and counted, so a slow or unreachable store cannot slow or fail a request.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence

from mlcycle.store.base import Document, Store

logger = logging.getLogger(__name__)


class PredictionLog:
    def __init__(
        self,
        store: Store,
        collection: str,
        maxsize: int = 10_000,
        batch: int = 500,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.collection = collection
        self.batch = batch
        self.queue: queue.Queue[Document | None] = queue.Queue(maxsize=maxsize)
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self._on_drop = on_drop or (lambda n: None)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, docs: Sequence[Document]) -> None:
        put = self.queue.put_nowait
        for i, doc in enumerate(docs):
            try:
                put(doc)
            except queue.Full:
                lost = len(docs) - i
                self.dropped += lost
                self._on_drop(lost)
                return

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            docs = [first]
            while len(docs) < self.batch:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._write(docs)
                    return
                docs.append(nxt)
            self._write(docs)

    def _write(self, docs: list[Document]) -> None:
        try:
            self.store.append(self.collection, docs)
            self.written += len(docs)
        except Exception as err:  # the log is best effort; count, never crash
            self.failed += len(docs)
            self._on_drop(len(docs))
            logger.warning("prediction log: %d entries lost: %s", len(docs), err)

    def close(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(queue.Full):
            self.queue.put(None, timeout=timeout)
        self._thread.join(timeout)
