"""Reading a window of the prediction log: the Arrow path (embedded store's JSON texts)
and the document path (MongoDB, or a chunk the typed schema refuses) give the same
columns; `--since` and `--last` cut where they say."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlcycle.monitor.window import Window, read_window
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Document, predictions_collection
from mlcycle.store.embedded import EmbeddedStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _docs(spec: DatasetSpec, n: int, rows: int, numeric_ids: bool = False) -> list[Document]:
    rng = np.random.default_rng(n)
    docs = []
    for i in range(n):
        features: dict[str, list[Any]] = {}
        for c in spec.numeric_features:
            features[c] = [
                None if rng.random() < 0.1 else float(rng.integers(0, 9000)) for _ in range(rows)
            ]
        for c in spec.categorical_features:
            features[c] = [
                None if rng.random() < 0.1 else f"v{rng.integers(0, 3)}" for _ in range(rows)
            ]
        probs = [float(p) for p in rng.random(rows)]
        docs.append(
            {
                "_id": f"d{i:05d}",
                "request_id": f"r{i}",
                "ts": T0 + timedelta(seconds=i),
                "model_name": "m",
                "model_version": "2" if i % 5 == 0 else "1",
                "latency_ms": 1.0,
                "rows": rows,
                "ids": [i * 100 + k if numeric_ids else f"id{i}-{k}" for k in range(rows)],
                "features": features,
                "labels": ["Y" if p > 0.5 else "N" for p in probs],
                "probabilities": probs,
            }
        )
    return docs


class DocsOnly:
    """The same store without its JSON fast path (as MongoDB reads)."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store

    def scan(self, *args: Any, **kwargs: Any) -> Iterator[list[Document]]:
        return self.store.scan(*args, **kwargs)


def _same(a: Window, b: Window) -> None:
    assert (a.rows, a.requests, a.first_ts, a.last_ts) == (
        b.rows,
        b.requests,
        b.first_ts,
        b.last_ts,
    )
    for name in a.numeric:
        np.testing.assert_array_equal(a.numeric[name], b.numeric[name])
    assert a.categorical == b.categorical
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.predicted == b.predicted
    assert a.ids.tolist() == b.ids.tolist() and a.labels.tolist() == b.labels.tolist()
    np.testing.assert_array_equal(a.stamps, b.stamps)


@pytest.mark.parametrize("numeric_ids", [False, True])
def test_arrow_and_document_paths_agree(
    spec: DatasetSpec, tmp_path: Path, numeric_ids: bool
) -> None:
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    store.append(predictions_collection(spec.name), _docs(spec, 300, 3, numeric_ids))
    fast = read_window(store, spec, "m", "1")  # type: ignore[arg-type]
    slow = read_window(DocsOnly(store), spec, "m", "1")  # type: ignore[arg-type]
    _same(fast, slow)
    assert fast.rows == 240 * 3 and fast.requests == 240
    assert fast.first_ts == T0 + timedelta(seconds=1) and fast.last_ts == T0 + timedelta(
        seconds=299
    )
    # each row carries its request's time: 3 rows a request, newest first
    assert fast.stamps.size == fast.ids.size
    assert fast.stamps[0] == fast.stamps[2] == (T0 + timedelta(seconds=299)).timestamp()
    assert fast.stamps[-1] == (T0 + timedelta(seconds=1)).timestamp()
    name = spec.numeric_features[0]
    assert (
        np.isnan(fast.numeric[name]).any()
        and None in fast.categorical[spec.categorical_features[0]]
    )
    store.close()


def test_since_and_last_cut_the_window(spec: DatasetSpec, tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    store.append(predictions_collection(spec.name), _docs(spec, 100, 2))
    recent = read_window(store, spec, "m", "1", since=T0 + timedelta(seconds=90))
    assert recent.requests == 8 and recent.first_ts == T0 + timedelta(seconds=91)
    newest = read_window(store, spec, "m", "1", last=5)  # whole requests: 3 of 2 rows
    assert (newest.requests, newest.rows) == (3, 6)
    assert newest.last_ts == T0 + timedelta(seconds=99)
    assert read_window(store, spec, "m", "9").rows == 0
    store.close()


def test_prefetch_hands_over_pages_errors_and_stops_early() -> None:
    from mlcycle.errors import StoreUnavailable
    from mlcycle.monitor.window import _prefetch

    assert list(_prefetch(iter([[1], [2], [3]]))) == [[1], [2], [3]]

    def failing() -> Iterator[list[int]]:
        yield [1]
        raise StoreUnavailable("gone")

    pages = _prefetch(failing())
    assert next(pages) == [1]
    with pytest.raises(StoreUnavailable, match="gone"):
        next(pages)
    closed = []

    def endless() -> Iterator[list[int]]:
        try:
            i = 0
            while True:
                i += 1
                yield [i]
        finally:
            closed.append(True)

    reader = _prefetch(endless())
    assert next(reader) == [1]
    reader.close()  # the reader stopped early: the producer ends and the source is closed
    assert closed == [True]


@pytest.mark.parametrize(
    "bad",
    [
        {"rows": "three"},
        {"rows": 5},  # lists shorter than rows
        {"features": None},
        {"probabilities": ["x", "y", "z"]},
        {"ids": None},
    ],
)
def test_a_malformed_log_document_is_skipped_and_counted(
    spec: DatasetSpec, tmp_path: Path, bad: dict[str, Any]
) -> None:
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    docs = [d for d in _docs(spec, 20, 3) if d["model_version"] == "1"]
    broken = {**docs[0], **bad, "_id": "zz-broken", "ts": T0 + timedelta(days=1)}
    store.append(predictions_collection(spec.name), [*docs, broken])
    win = read_window(store, spec, "m", "1")
    assert win.malformed == 1
    assert win.rows == 3 * len(docs)
    store.close()


def test_since_further_back_than_dates_go_is_the_whole_log() -> None:
    from mlcycle.cli import parse_since

    assert parse_since("99999999d") == datetime(1970, 1, 1, tzinfo=UTC)


def test_monitor_on_an_empty_log_says_so_and_exits_0() -> None:
    import json

    from typer.testing import CliRunner

    from mlcycle.cli import app

    runner = CliRunner()
    text = runner.invoke(app, ["monitor"])
    assert text.exit_code == 0, text.output
    assert "nothing to monitor" in text.output
    out = runner.invoke(app, ["monitor", "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["status"] == "no_predictions"


def test_a_page_parsed_in_several_blocks_stays_on_the_arrow_path(
    spec: DatasetSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of log documents larger than one block of pyarrow's JSON reader comes back
    in several chunks: every check of it must hold across them."""
    from mlcycle.monitor import window

    monkeypatch.setattr(window, "JSON_BLOCK", 4096)  # a few documents a block
    parsed: list[int] = []
    add_table = window._Columns.add_table

    def spy(self: Any, table: Any) -> None:
        parsed.append(table.num_rows)
        add_table(self, table)

    monkeypatch.setattr(window._Columns, "add_table", spy)
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    store.append(predictions_collection(spec.name), _docs(spec, 300, 3))
    fast = read_window(store, spec, "m", "1")  # type: ignore[arg-type]
    slow = read_window(DocsOnly(store), spec, "m", "1")  # type: ignore[arg-type]
    _same(fast, slow)
    assert sum(parsed) == 240, "the pages went the slow way"
    store.close()
