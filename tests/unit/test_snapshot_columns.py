"""Training reads the store as typed Arrow columns: the snapshot must be exactly what the
stored documents say, for every column type the spec knows (text, category, integer,
float, boolean; missing values; text, integer and boolean labels)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle.datagen import write_demo
from mlcycle.errors import StoredValueError, TrainingError
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec, value_text
from mlcycle.store.columns import TextColumn
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.train.features import model_frame
from mlcycle.train.holdout import lines_digest
from mlcycle.train.snapshot import load_snapshot
from tests.data import CREDIT_SPEC, TIERS_SPEC


def _documents_path(store: EmbeddedStore, spec: DatasetSpec) -> dict[str, object]:
    """What training made of the stored documents before it read columns."""
    assert spec.target is not None
    target = spec.target.column
    frame = store.read_snapshot(spec.name, require=target)
    frame = frame.sort_values(spec.id_column, kind="stable").reset_index(drop=True)
    y = frame[target].map(lambda v: spec.target.labels.get(value_text(v)))  # type: ignore[union-attr]
    ids = frame[spec.id_column].astype(str).tolist()
    hashes = frame["_hash"].astype(str).tolist()
    digest = hashlib.sha256()
    for ident, h in zip(ids, hashes, strict=True):
        digest.update(f"{ident}\t{h}\n".encode())
    return {
        "X": model_frame(frame, spec),
        "y": y.to_numpy(dtype=np.int64),
        "ids": ids,
        "hash": digest.hexdigest(),
        "sensitive": frame[spec.sensitive].reset_index(drop=True) if spec.sensitive else None,
    }


@pytest.mark.parametrize("shape", ["loan", "credit", "tiers"])
def test_the_columnar_snapshot_is_what_the_documents_say(
    shape: str, spec: DatasetSpec, tmp_path: Path
) -> None:
    if shape != "loan":
        spec = DatasetSpec.model_validate(CREDIT_SPEC if shape == "credit" else TIERS_SPEC)
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    run_etl(spec, write_demo(spec, tmp_path / "rows.csv", 1_500, seed=3), store)
    snap = load_snapshot(store, spec)
    old = _documents_path(store, spec)
    # values and column order (numbers float64, texts object: one shared string per value)
    pd.testing.assert_frame_equal(snap.X, old["X"], check_dtype=False)
    assert all(snap.X[c].dtype == object for c in spec.categorical_features)
    assert np.array_equal(snap.y, old["y"])  # type: ignore[arg-type]
    assert list(snap.ids) == old["ids"] and snap.data_hash == old["hash"]
    assert snap.X.isna().any().any() or shape == "credit"  # missing values were read
    if spec.sensitive:
        pd.testing.assert_frame_equal(snap.sensitive, old["sensitive"], check_dtype=False)  # type: ignore[arg-type]
    held = snap.evaluation_set(0.3)
    mask = snap.positions < 0.3
    assert held.hash == lines_digest(old["ids"], list(snap.row_hashes), mask)  # type: ignore[arg-type]


def test_a_stored_value_of_the_wrong_type_stops_training_naming_row_and_column(
    spec: DatasetSpec, tmp_path: Path
) -> None:
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    run_etl(spec, write_demo(spec, tmp_path / "rows.csv", 200, seed=3), store)
    victim = store.read_snapshot(spec.name).iloc[17]
    bad = {**victim.to_dict(), "LoanAmount": "a lot"}
    bad = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in bad.items()}
    store.write_rows(spec.name, [], [bad])
    with pytest.raises(StoredValueError, match=rf"{victim['_id']}.*'a lot'.*'LoanAmount'"):
        load_snapshot(store, spec)


def test_labels_without_a_mapping_are_named(spec: DatasetSpec, tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    run_etl(spec, write_demo(spec, tmp_path / "rows.csv", 100, seed=3), store)
    row = store.read_snapshot(spec.name).iloc[3].to_dict()
    row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
    store.write_rows(spec.name, [], [{**row, "Loan_Status": "maybe"}])
    with pytest.raises(TrainingError, match=r"\['maybe'\] have no label mapping"):
        load_snapshot(store, spec)


def test_a_text_column_reads_like_a_list() -> None:
    import pyarrow as pa

    values = [f"id{i}" for i in range(70_000)]
    column = TextColumn(pa.chunked_array([values[:30_000], values[30_000:]]))
    assert len(column) == 70_000 and list(column) == values
    assert column[-1] == "id69999" and column[30_000] == "id30000"
    assert list(column[5:9]) == values[5:9] and list(column[::20_000]) == values[::20_000]
    assert "id123" in column and "nope" not in column
    with pytest.raises(IndexError):
        column[70_000]


def test_hold_out_positions_are_the_keyed_hash_of_each_id() -> None:
    from mlcycle.train.holdout import _PERSON, id_positions

    ids = ["LP001002", "", "é", "x" * 300, *[f"id{i}" for i in range(1_000)]]
    want = [
        int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, person=_PERSON).digest()) / 2**64
        for i in ids
    ]
    assert id_positions(ids).tolist() == want
    assert id_positions(TextColumn(__import__("pyarrow").array(ids))).tolist() == want
