"""The prediction log: a bounded in-memory buffer drained to the store by one thread.

`submit` never blocks and never raises: it appends to a list (no lock, no thread wake-up
on the request path); when the buffer is full, entries are dropped and counted. The
writer wakes every `flush_interval` seconds and writes what has accumulated in batches,
so a slow or unreachable store cannot slow or fail a request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from mlcycle.store.base import Document, Store

logger = logging.getLogger(__name__)


class PredictionLog:
    def __init__(
        self,
        store: Store,
        collection: str,
        maxsize: int = 10_000,
        batch: int = 100,
        flush_interval: float = 0.5,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.collection = collection
        self.maxsize = maxsize
        self.batch = batch
        self.flush_interval = flush_interval
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self._buffer: list[Document] = []
        self._on_drop = on_drop or (lambda n: None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, docs: Sequence[Document]) -> None:
        room = self.maxsize - len(self._buffer)
        if room >= len(docs):
            self._buffer.extend(docs)  # atomic under the GIL
            return
        kept = max(room, 0)
        self._buffer.extend(docs[:kept])
        lost = len(docs) - kept
        self.dropped += lost
        self._on_drop(lost)

    def _drain(self) -> None:
        pending, self._buffer = self._buffer, []
        for start in range(0, len(pending), self.batch):
            self._write(pending[start : start + self.batch])
            time.sleep(0.001)  # small batches with a pause: no long hold of the GIL

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            if self._buffer:
                self._drain()
        self._drain()

    def _write(self, docs: list[Document]) -> None:
        try:
            self.store.append(self.collection, docs)
            self.written += len(docs)
        except Exception as err:  # the log is best effort; count, never crash
            self.failed += len(docs)
            self._on_drop(len(docs))
            logger.warning("prediction log: %d entries lost: %s", len(docs), err)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer after a last flush."""
        self._stop.set()
        self._thread.join(timeout)
