"""The prediction log with a fake store (our own small protocol)."""

from __future__ import annotations

import threading

from mlcycle.serve.predlog import PredictionLog


class RecordingStore:
    name = "fake"

    def __init__(self, fail: bool = False, block: threading.Event | None = None) -> None:
        self.docs: list[dict] = []
        self.fail = fail
        self.block = block

    def append(self, collection: str, docs) -> None:
        if self.block is not None:
            self.block.wait(5)
        if self.fail:
            raise ConnectionError("store down")
        self.docs.extend(docs)


def test_entries_reach_the_store_in_batches_and_close_flushes() -> None:
    store = RecordingStore()
    log = PredictionLog(store, "p", maxsize=100, batch=10, flush_interval=0.05)
    log.submit([{"_id": i} for i in range(25)])
    log.close()
    assert [d["_id"] for d in store.docs] == list(range(25))
    assert (log.written, log.dropped) == (25, 0)


def test_a_full_buffer_drops_and_counts_instead_of_blocking() -> None:
    gate = threading.Event()
    store = RecordingStore(block=gate)
    drops: list[int] = []
    log = PredictionLog(store, "p", maxsize=5, flush_interval=10, on_drop=drops.append)
    log.submit([{"_id": i} for i in range(8)])
    log.submit([{"_id": 99}])
    assert log.dropped == 4
    assert drops == [3, 1]
    gate.set()
    log.close()
    assert len(store.docs) == 5


def test_a_failing_store_never_raises_into_the_caller() -> None:
    log = PredictionLog(RecordingStore(fail=True), "p", flush_interval=0.01)
    log.submit([{"_id": 1}])
    log.close()
    assert (log.written, log.failed) == (0, 1)
