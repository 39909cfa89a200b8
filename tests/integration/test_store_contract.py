"""The Store contract: every backend (embedded SQLite, MongoDB via FerretDB) behaves alike."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from mlcycle.errors import StoredValueError
from mlcycle.store.base import Store


def _row(i: int, amount: float | None = 1.5, label: str | None = "Y", h: str = "h") -> dict:
    return {
        "_id": f"ID{i:04d}",
        "Loan_ID": f"ID{i:04d}",
        "LoanAmount": amount,
        "Loan_Status": label,
        "_hash": f"{h}{i}",
        "_batch_id": "b1",
    }


def test_new_rows_are_stored_with_their_hashes(store: Store) -> None:
    store.write_rows("loan", [_row(i) for i in range(3)], [])
    assert store.count("loan") == 3
    assert store.fetch_hashes("loan", ["ID0000", "ID0002", "IDmissing"]) == {
        "ID0000": "h0",
        "ID0002": "h2",
    }


def test_fetch_hashes_on_missing_collection_is_empty(store: Store) -> None:
    assert store.fetch_hashes("nothing_here", ["a", "b"]) == {}
    assert store.count("nothing_here") == 0


def test_changed_rows_replace_the_stored_version(store: Store) -> None:
    store.write_rows("loan", [_row(1, amount=10.0)], [])
    store.write_rows("loan", [], [_row(1, amount=20.0, h="g")])
    snap = store.read_snapshot("loan")
    assert len(snap) == 1
    assert snap.loc[0, "LoanAmount"] == 20.0
    assert store.fetch_hashes("loan", ["ID0001"]) == {"ID0001": "g1"}


def test_writing_the_same_rows_twice_is_idempotent(store: Store) -> None:
    rows = [_row(i) for i in range(50)]
    store.write_rows("loan", rows, [])
    store.write_rows("loan", rows, [])  # "new" rows that already exist: a retried batch
    assert store.count("loan") == 50
    assert sorted(store.read_snapshot("loan")["Loan_ID"]) == [f"ID{i:04d}" for i in range(50)]


def test_snapshot_selects_columns_and_required_field(store: Store) -> None:
    store.write_rows("loan", [_row(1), _row(2, label=None), _row(3, amount=None)], [])
    snap = store.read_snapshot(
        "loan", columns=["Loan_ID", "LoanAmount", "Loan_Status"], require="Loan_Status"
    )
    assert list(snap.columns) == ["Loan_ID", "LoanAmount", "Loan_Status"]
    assert sorted(snap["Loan_ID"]) == ["ID0001", "ID0003"]
    missing = snap.set_index("Loan_ID").loc["ID0003", "LoanAmount"]
    assert missing is None or math.isnan(missing)


def test_snapshot_of_missing_collection_is_empty(store: Store) -> None:
    snap = store.read_snapshot("nothing_here", columns=["a", "b"])
    assert isinstance(snap, pd.DataFrame)
    assert len(snap) == 0


def test_snapshot_keeps_lineage_fields(store: Store) -> None:
    store.write_rows("loan", [_row(7)], [])
    snap = store.read_snapshot("loan")
    assert snap.loc[0, "_hash"] == "h7"
    assert snap.loc[0, "_batch_id"] == "b1"


def _schema() -> pa.Schema:
    return pa.schema(
        [
            ("Loan_ID", pa.string()),
            ("LoanAmount", pa.float64()),
            ("Loan_Status", pa.string()),
            ("_hash", pa.string()),
        ]
    )


def test_columns_come_typed_by_the_schema_without_unlabelled_rows(store: Store) -> None:
    rows = [_row(1), _row(2, label=None), _row(3, amount=None), {**_row(4), "LoanAmount": 7}]
    del rows[0]["LoanAmount"]  # a field the document lacks reads as null
    store.write_rows("loan", rows, [])
    table = store.read_columns("loan", _schema(), require="Loan_Status")
    assert table.schema == _schema()
    got = sorted(zip(*(table[c].to_pylist() for c in _schema().names), strict=True))
    assert got == [
        ("ID0001", None, "Y", "h1"),
        ("ID0003", None, "Y", "h3"),
        ("ID0004", 7.0, "Y", "h4"),
    ]
    assert store.read_columns("nothing_here", _schema()).num_rows == 0


def test_columnar_reads_span_many_chunks_and_see_every_row_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlcycle.store import embedded, mongo

    monkeypatch.setattr(embedded, "READ_ROWS", 1_000)
    monkeypatch.setattr(mongo, "READ_BATCH", 1_000)
    rows = [_row(i, amount=float(i)) for i in range(2_500)]
    store.write_rows("loan", rows, [])
    store.write_rows("loan", [], [_row(7, amount=-1.0, h="g")])  # replaced: a new place
    table = store.read_columns("loan", _schema())
    assert table.num_rows == 2_500
    ids = table["Loan_ID"].to_pylist()
    assert sorted(ids) == [r["_id"] for r in rows]
    assert dict(zip(ids, table["LoanAmount"].to_pylist(), strict=True))["ID0007"] == -1.0


def test_a_stored_value_of_another_type_is_named_not_coerced(store: Store) -> None:
    store.write_rows("loan", [_row(1), {**_row(2), "LoanAmount": "lots"}], [])
    with pytest.raises(StoredValueError, match=r"'ID0002'.*'lots'.*'LoanAmount'.*double"):
        store.read_columns("loan", _schema())


def test_put_upserts_by_id_and_find_matches_fields(store: Store) -> None:
    store.put("etl_batches", [{"_id": "a", "status": "running"}, {"_id": "b", "status": "failed"}])
    store.put("etl_batches", [{"_id": "a", "status": "succeeded"}])
    assert store.count("etl_batches") == 2
    found = store.find("etl_batches", {"status": "succeeded"})
    assert [d["_id"] for d in found] == ["a"]
    assert store.find("etl_batches", {"status": "running"}) == []


def test_append_adds_log_documents_and_tolerates_a_replayed_batch(store: Store) -> None:
    docs = [{"_id": f"req{i}", "label": "Y", "p": 0.5 + i / 100} for i in range(10)]
    store.append("loan_predictions", docs)
    store.append("loan_predictions", docs[:3])  # replayed after a retry
    assert store.count("loan_predictions") == 10
    last = store.find("loan_predictions", limit=2)
    assert len(last) == 2


def test_append_keeps_large_and_small_documents_whole_and_in_order(store: Store) -> None:
    """A big batch's log entry (one document of ~1 MB) between small ones."""
    big = {"_id": "big", "ids": [f"r{i}" for i in range(40_000)], "p": [0.25] * 40_000}
    docs = [{"_id": "s1", "p": 0.1}, big, {"_id": "s2", "p": 0.2}, {"_id": "s3"}]
    store.append("loan_predictions", docs)
    store.append("loan_predictions", [big, docs[0]])  # replayed after a retry
    found = store.find("loan_predictions")
    assert [d["_id"] for d in found] == ["s1", "big", "s2", "s3"]
    assert found[1] == big and found[0]["p"] == 0.1


def test_append_of_many_documents_keeps_order_and_ignores_replays(store: Store) -> None:
    """More documents than one statement takes, an odd count, a replayed stretch inside
    the batch and ids that are not strings."""
    docs: list[dict[str, object]] = [{"_id": f"m{i:04d}", "n": i} for i in range(700)]
    docs += [{"_id": 7, "n": -1}, dict(docs[5])]  # 7 is new, m0005 a replay
    store.append("loan_predictions", docs[:300])
    store.append("loan_predictions", docs[250:])  # 50 already stored
    found = store.find("loan_predictions")
    assert [d["n"] for d in found] == [*range(700), -1]
    assert found[-1]["_id"] == 7


def test_drop_removes_a_collection(store: Store) -> None:
    store.put("scratch", [{"_id": "x"}])
    store.drop("scratch")
    assert store.count("scratch") == 0


def test_ping_succeeds_on_a_live_backend(store: Store) -> None:
    store.ping()


def test_large_hash_lookups_stay_current_after_writes(store: Store) -> None:
    """Large lookups may be served from one scan (MongoDB backend); writes keep it current."""
    rows = [_row(i) for i in range(2500)]
    ids = [r["_id"] for r in rows]
    store.write_rows("loan", rows[:2000], [])
    assert len(store.fetch_hashes("loan", ids)) == 2000
    store.write_rows("loan", rows[2000:], [_row(0, h="new")])
    hashes = store.fetch_hashes("loan", ids)
    assert len(hashes) == 2500
    assert hashes["ID0000"] == "new0"
    assert hashes["ID2499"] == "h2499"


def _log(i: int, minute: int, version: str = "1") -> dict:
    from datetime import UTC, datetime

    return {
        "_id": f"log{i:04d}",
        "ts": datetime(2026, 1, 1, 12, minute, 0, 1000 * i, tzinfo=UTC),
        "model_name": "m",
        "model_version": version,
        "rows": 1,
    }


def test_scan_reads_log_documents_newest_first_in_chunks(store: Store) -> None:
    from datetime import UTC, datetime

    from mlcycle.store.base import as_datetime

    store.append("m_log", [_log(i, i % 50, "1" if i % 3 else "2") for i in range(120)])
    chunks = list(store.scan("m_log", chunk=25))
    assert [len(c) for c in chunks] == [25, 25, 25, 25, 20]
    stamps = [as_datetime(d["ts"]) for c in chunks for d in c]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == 120
    assert stamps[0].tzinfo is not None
    ones = [d["_id"] for c in store.scan("m_log", match={"model_version": "1"}) for d in c]
    assert sorted(ones) == sorted(f"log{i:04d}" for i in range(120) if i % 3)
    since = datetime(2026, 1, 1, 12, 40, tzinfo=UTC)
    recent = [d for c in store.scan("m_log", since=since, chunk=7) for d in c]
    assert {d["_id"] for d in recent} == {f"log{i:04d}" for i in range(120) if i % 50 >= 40}
    assert list(store.scan("no_such_log")) == []


def test_the_embedded_append_holds_a_bounded_number_of_bytes_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large log entries (a big batch's) are written a few at a time, not 256 at once."""
    from mlcycle.store import embedded

    held: list[int] = []
    real = embedded._insert_rows

    def spy(conn: Any, table: str, params: list[str | bytes]) -> None:
        held.append(sum(len(p) for p in params[1::2]))
        real(conn, table, params)

    monkeypatch.setattr(embedded, "_insert_rows", spy)
    monkeypatch.setattr(embedded, "APPEND_BYTES", 100_000)
    store = embedded.EmbeddedStore(tmp_path / "s.sqlite3")
    docs = [{"_id": f"b{i}", "p": [0.5] * 8_000} for i in range(40)]  # ~32 KB each
    store.append("loan_predictions", docs)
    assert [d["_id"] for d in store.find("loan_predictions")] == [d["_id"] for d in docs]
    assert max(held) < 140_000 and len(held) >= 10
