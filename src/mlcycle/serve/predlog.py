"""The prediction log: a bounded queue drained to the store in batches by one thread.

`submit` never blocks and never raises: when the queue holds `maxsize` entries or
`max_bytes` of them (an estimate: the size of the request bodies behind them), new ones
are dropped and counted, so a slow or unreachable store can neither slow or fail a
request nor grow the process's memory past that bound.
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
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.collection = collection
        self.batch = batch
        self.queue: queue.Queue[tuple[str, Document, int] | None] = queue.Queue(maxsize=maxsize)
        self.max_bytes = max_bytes
        self.pending_bytes = 0
        self._bytes_lock = threading.Lock()
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self._on_drop = on_drop or (lambda n: None)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(
        self, docs: Sequence[Document], nbytes: int = 0, collection: str | None = None
    ) -> None:
        """Queue entries whose size is about `nbytes` in all (0: not counted), for
        `collection` (default: the log's own)."""
        target = collection or self.collection
        each = nbytes // max(len(docs), 1)
        put = self.queue.put_nowait
        for i, doc in enumerate(docs):
            with self._bytes_lock:
                fits = self.pending_bytes + each <= self.max_bytes
                if fits:
                    self.pending_bytes += each
            try:
                if not fits:
                    raise queue.Full
                put((target, doc, each))
            except queue.Full:
                if fits:
                    with self._bytes_lock:
                        self.pending_bytes -= each
                lost = len(docs) - i
                self.dropped += lost
                self._on_drop(lost)
                return

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            items = [first]
            while len(items) < self.batch:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._write(items)
                    return
                items.append(nxt)
            self._write(items)

    def _write(self, items: list[tuple[str, Document, int]]) -> None:
        by_collection: dict[str, list[Document]] = {}
        for collection, doc, _ in items:
            by_collection.setdefault(collection, []).append(doc)
        for collection, docs in by_collection.items():
            try:
                self.store.append(collection, docs)
                self.written += len(docs)
            except Exception as err:  # the log is best effort; count, never crash
                self.failed += len(docs)
                self._on_drop(len(docs))
                logger.warning("prediction log: %d entries lost: %s", len(docs), err)
        with self._bytes_lock:
            self.pending_bytes -= sum(size for _, _, size in items)

    def close(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(queue.Full):
            self.queue.put(None, timeout=timeout)
        self._thread.join(timeout)
