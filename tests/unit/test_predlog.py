"""The prediction log with a fake store (our own small protocol)."""

from __future__ import annotations

import threading
import time

from mlcycle.serve.predlog import PredictionLog


class RecordingStore:
    name = "fake"

    def __init__(self, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.docs: list[dict] = []
        self.calls = 0
        self.fail = fail
        self.gate = gate
        self.entered = threading.Event()

    def append(self, collection: str, docs) -> None:
        self.entered.set()
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise ConnectionError("store down")
        self.docs.extend(docs)


def test_entries_reach_the_store_in_order_and_close_flushes() -> None:
    store = RecordingStore()
    log = PredictionLog(store, "p", maxsize=100, batch=10)
    log.submit([{"_id": i} for i in range(25)])
    log.close()
    assert [d["_id"] for d in store.docs] == list(range(25))
    assert (log.written, log.dropped) == (25, 0)


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    gate = threading.Event()
    store = RecordingStore(gate=gate)
    drops: list[int] = []
    log = PredictionLog(store, "p", maxsize=5, on_drop=drops.append)
    log.submit([{"_id": "first"}])
    assert store.entered.wait(5)  # the writer now holds one entry and is stuck in the store
    log.submit([{"_id": i} for i in range(8)])  # 5 fit in the queue, 3 are dropped
    log.submit([{"_id": 99}])  # still full
    assert log.dropped == 4
    assert drops == [3, 1]
    gate.set()
    log.close()
    assert len(store.docs) == 6


def test_a_failing_store_never_raises_into_the_caller() -> None:
    log = PredictionLog(RecordingStore(fail=True), "p")
    log.submit([{"_id": 1}])
    log.close()
    assert (log.written, log.failed) == (0, 1)


def test_the_buffer_is_bounded_by_bytes_and_counts_what_it_drops() -> None:
    """With the store stuck, big entries stop being queued once their bytes reach the
    bound, whatever the entry count allows; the writer gives the bytes back."""
    gate = threading.Event()
    store = RecordingStore(gate=gate)
    dropped: list[int] = []
    log = PredictionLog(store, "p", maxsize=1000, batch=1, on_drop=dropped.append, max_bytes=10_000)
    log.submit([{"i": 0}], nbytes=1_000)
    assert store.entered.wait(5)  # the writer holds entry 0 and is stuck on the store
    for i in range(1, 40):
        log.submit([{"i": i}], nbytes=1_000)
    assert log.pending_bytes <= 10_000
    assert log.dropped == sum(dropped) == 30
    gate.set()
    log.close()
    assert len(store.docs) == 10
    assert log.pending_bytes == 0


def test_entries_submitted_one_by_one_are_written_in_batches() -> None:
    """One request, one entry, and the server idle between requests: the writer must
    not make a store round trip (and take the interpreter) per entry."""
    store = RecordingStore()
    log = PredictionLog(store, "p", batch=1000, interval=0.5)
    for i in range(200):
        log.submit([{"_id": i}])
        time.sleep(0.001)  # between requests the server waits on its sockets
    log.close()
    assert [d["_id"] for d in store.docs] == list(range(200))
    assert store.calls <= 3


def test_entries_are_made_into_documents_by_the_writer_and_a_bad_one_loses_only_itself() -> None:
    def render(item: object) -> dict:
        if item == "bad":
            raise ValueError("cannot make this one")
        return {"_id": item, "made_by": threading.current_thread().name}

    store = RecordingStore()
    drops: list[int] = []
    log = PredictionLog(store, "p", render=render, on_drop=drops.append)
    log.submit(["a", "bad", "b"])
    log.close()
    assert [d["_id"] for d in store.docs] == ["a", "b"]
    assert {d["made_by"] for d in store.docs} == {"prediction-log"}  # off the caller's thread
    assert (log.written, log.failed, drops) == (2, 1, [1])


def test_log_ids_are_time_ordered_and_unique_and_request_ids_random() -> None:
    from mlcycle.serve.service import new_request_id, time_ordered_id

    ids = [time_ordered_id(1_700_000_000_000_000_000 + i // 3) for i in range(3000)]
    assert len(set(ids)) == 3000 and ids == sorted(ids)  # same nanosecond: the counter
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    requests = {new_request_id() for _ in range(1000)}
    assert len(requests) == 1000 and all(len(r) == 32 for r in requests)


def test_a_forked_worker_draws_its_own_ids() -> None:
    import os

    from mlcycle.serve.service import new_request_id, time_ordered_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what a worker process forked from the parent would draw
        os.write(write, f"{new_request_id()} {time_ordered_id(5)}".encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_request, child_id = os.read(read, 200).decode().split()
    assert child_request != new_request_id()
    assert child_id[16:24] != time_ordered_id(5)[16:24]  # another process token


def test_the_writer_runs_below_the_event_loops_priority() -> None:
    """Workers = cores: the writer must not take whole scheduler slices from the loops."""
    import os
    import sys

    from mlcycle.serve.predlog import BACKGROUND_NICE

    log = PredictionLog(RecordingStore(), "p")
    log.submit([{"_id": 1}])
    log.close()  # the writer has run (and set its priority) before it stopped
    assert log.written == 1
    if sys.platform.startswith("linux"):
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert log.writer_nice == min(ours + BACKGROUND_NICE, 19)
    else:
        assert log.writer_nice is None


def test_the_writer_holds_back_while_a_large_batch_is_scored_and_writes_after() -> None:
    """Large batches first: nothing is written while one is busy (nor within the quiet
    time after it); then every entry arrives, in order."""
    from mlcycle.serve import predlog

    store = RecordingStore()
    log = PredictionLog(store, "p", batch=1, interval=0.01)
    with log.busy():
        log.submit([{"_id": i} for i in range(5)], nbytes=5_000)
        time.sleep(0.3)  # the writer has woken many times meanwhile
        assert store.calls == 0
        ended = time.monotonic()
    deadline = time.monotonic() + 5
    while len(store.docs) < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert time.monotonic() - ended >= predlog.QUIET_SECONDS * 0.9
    assert [d["_id"] for d in store.docs] == list(range(5))
    log.close()
    assert (log.written, log.dropped) == (5, 0)


def test_a_stream_of_large_batches_is_still_logged_once_the_buffer_is_half_full() -> None:
    """Held back forever, the buffer would fill and drop entries: past half its bound
    the writer writes even while a large batch is busy."""
    store = RecordingStore()
    log = PredictionLog(store, "p", batch=1, interval=0.01, max_bytes=10_000)
    with log.busy():
        for i in range(4):
            log.submit([{"_id": i}], nbytes=1_000)
        time.sleep(0.2)
        assert store.calls == 0  # 4,000 of 10,000 bytes: held back
        for i in range(4, 8):
            log.submit([{"_id": i}], nbytes=1_000)
        deadline = time.monotonic() + 5
        while len(store.docs) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(store.docs) >= 3  # written while still busy, down to below half
        assert log.dropped == 0
        log.close()  # closing writes the rest at once, busy or not
    assert [d["_id"] for d in store.docs] == list(range(8))


def test_large_entries_are_written_in_groups_and_small_ones_in_one() -> None:
    from mlcycle.serve import predlog

    store = RecordingStore()
    log = PredictionLog(store, "p", batch=100, interval=0.2)
    big = predlog.GROUP_BYTES // 2
    log.submit([{"_id": i} for i in range(6)], nbytes=6 * big)  # three groups of two
    log.submit([{"_id": i} for i in range(6, 56)], nbytes=50 * 300)  # one more
    log.close()
    assert [d["_id"] for d in store.docs] == list(range(56))
    assert store.calls == 4
