"""The prediction log: a bounded buffer drained to the store in batches by one thread.

`submit` never blocks and never raises: when the buffer holds `maxsize` entries or
`max_bytes` of them (an estimate: the size of the request bodies behind them), new ones
are dropped and counted, so a slow or unreachable store can neither slow or fail a
request nor grow the process's memory past that bound.

The writer wakes every `interval` seconds, or as soon as a batch is waiting, and writes
what has gathered: under load, entries reach the store in batches of `batch`, never one
store round trip (and one wake-up of a thread competing for the interpreter) per request.
It also makes the entries into documents (`render`), so a request only leaves references
behind, and runs below the process's CPU priority.

Large batches come first: while one is being scored (`busy`), and for `QUIET_SECONDS`
after the last one, the writer holds back its store writes (a 10,000-record entry is
~1 MB of JSON and a SQLite or network write: ~6 ms of work that slowed the batches
beside it by a third), unless its buffer is half full: then it writes as it must, so a
stream of large batches is logged as before and the bound still holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mlcycle.store.base import Document, Store

logger = logging.getLogger(__name__)

RENDER_CHUNK = 32
"""Entries the writer makes into documents between two pauses: making a batch holds the
interpreter, and the event loop beside it would wait up to the switch interval (5 ms)
for it: a pause every ~0.2 ms of work keeps that out of the request latency."""
YIELD_SECONDS = 0.0001
BACKGROUND_NICE = 5
QUIET_SECONDS = 0.05
"""After the last large batch, the writer waits this long before it writes: a client
sending batches one after the other sends its next one well within it."""
GROUP_BYTES = 1024 * 1024
"""The writer writes entries in groups of about this many request bytes, looking
between groups for a large batch that came in meanwhile."""


class PredictionLog:
    def __init__(
        self,
        store: Store,
        collection: str,
        maxsize: int = 10_000,
        batch: int = 500,
        on_drop: Callable[[int], None] | None = None,
        max_bytes: int = 64 * 1024 * 1024,
        interval: float = 0.2,
        render: Callable[[Any], Document] | None = None,
    ) -> None:
        self.store = store
        self.collection = collection
        self.batch = batch
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.interval = interval
        self.render = render or (lambda item: item)
        self.writer_nice: int | None = None
        """The writer thread's nice value once it runs (Linux), None elsewhere."""
        self.pending_bytes = 0
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self._items: deque[tuple[str, Any, int]] = deque()
        self._busy = 0
        self._quiet_from = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._on_drop = on_drop or (lambda n: None)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, docs: Sequence[Any], nbytes: int = 0, collection: str | None = None) -> None:
        """Queue entries whose size is about `nbytes` in all (0: not counted), for
        `collection` (default: the log's own). An entry is a document, or anything
        `render` turns into one in the writer thread."""
        target = collection or self.collection
        each = nbytes // max(len(docs), 1)
        lost = 0
        with self._lock:
            for i, doc in enumerate(docs):
                if (
                    len(self._items) >= self.maxsize
                    or self.pending_bytes + each > self.max_bytes
                    or self._closing
                ):
                    lost = len(docs) - i
                    self.dropped += lost
                    break
                self.pending_bytes += each
                self._items.append((target, doc, each))
            waiting = len(self._items)
        if lost:
            self._on_drop(lost)
        if waiting >= self.batch:
            self._wake.set()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Around the scoring of a large batch: the writer holds back its store writes
        meanwhile and for QUIET_SECONDS after (unless its buffer is half full)."""
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                self._quiet_from = time.monotonic() + QUIET_SECONDS

    def _must_wait(self) -> float:
        """How long the writer should still hold back (0: write now)."""
        with self._lock:
            if (
                self._closing
                or self.pending_bytes * 2 >= self.max_bytes
                or len(self._items) * 2 >= self.maxsize
            ):
                return 0.0
            if self._busy:
                return QUIET_SECONDS
            return max(self._quiet_from - time.monotonic(), 0.0)

    def _hold_back(self) -> None:
        while (left := self._must_wait()) > 0:
            time.sleep(min(left, QUIET_SECONDS))

    def _take(self) -> list[tuple[str, Any, int]]:
        with self._lock:
            n = min(len(self._items), self.batch)
            return [self._items.popleft() for _ in range(n)]

    def _run(self) -> None:
        self.writer_nice = background_priority()
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            closing = self._closing
            while items := self._take():
                self._write(items)
                if len(items) < self.batch and not closing:
                    break  # what came in meanwhile waits for the next round
            if closing:
                return

    def _write(self, items: list[tuple[str, Any, int]]) -> None:
        by_collection: dict[str, list[tuple[Document, int]]] = {}
        render = self.render
        for n, (collection, item, size) in enumerate(items, 1):
            if n % RENDER_CHUNK == 0:
                time.sleep(YIELD_SECONDS)  # let the event loop have the interpreter
            try:
                doc = render(item)
            except Exception as err:  # a bug in one entry must not lose the others
                self.failed += 1
                self._on_drop(1)
                logger.warning("prediction log: an entry could not be made: %r", err)
                continue
            by_collection.setdefault(collection, []).append((doc, size))
        for collection, made in by_collection.items():
            for group in _groups(made):
                self._hold_back()
                try:
                    self.store.append(collection, group)
                    self.written += len(group)
                except Exception as err:  # the log is best effort; count, never crash
                    self.failed += len(group)
                    self._on_drop(len(group))
                    logger.warning("prediction log: %d entries lost: %s", len(group), err)
        with self._lock:
            self.pending_bytes -= sum(size for _, _, size in items)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered (for up to `timeout` seconds) and stop the writer."""
        with self._lock:
            self._closing = True
        self._wake.set()
        self._thread.join(timeout)


def _groups(made: list[tuple[Document, int]]) -> Iterator[list[Document]]:
    """Documents in order, in groups of about GROUP_BYTES request bytes (one group when
    they are small)."""
    group: list[Document] = []
    total = 0
    for doc, size in made:
        if group and total + size > GROUP_BYTES:
            yield group
            group, total = [], 0
        group.append(doc)
        total += size
    if group:
        yield group


def background_priority() -> int | None:
    """Lower this thread's CPU priority (Linux: a thread has its own nice value): with
    workers = cores, the writer would otherwise take its scheduler slices from the event
    loops, several milliseconds at a time, which shows in the latency tail."""
    if not sys.platform.startswith("linux"):
        return None
    tid = threading.get_native_id()
    nice = min(os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE, 19)
    with contextlib.suppress(OSError):  # not allowed: the writer keeps the process's
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    return os.getpriority(os.PRIO_PROCESS, tid)
