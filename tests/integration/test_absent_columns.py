"""A column a source does not carry is not a null: it never overwrites a stored value.

An unlabelled export (a `test.csv` beside `train.csv`) loaded after, or in the same run
as, the labelled file leaves every label as it was; a JSON record without a key leaves
that field alone, while an explicit null sets it. On every store backend."""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd
import pytest

from mlcycle.datagen import generate
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store

pytestmark = pytest.mark.integration


def _files(spec: DatasetSpec, folder: Path, rows: int = 40) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    frame = generate(spec, rows, seed=11)
    frame.to_csv(folder / "train.csv", index=False)
    frame.drop(columns=[spec.target.column]).to_csv(folder / "test.csv", index=False)
    return frame


def _labels(store: Store, spec: DatasetSpec) -> dict[str, object]:
    return {d["_id"]: d.get(spec.target.column) for d in store.find(spec.name)}


def test_an_unlabelled_file_loaded_later_keeps_every_label(
    spec: DatasetSpec, store: Store, tmp_path: Path
) -> None:
    frame = _files(spec, tmp_path / "raw")
    run_etl(spec, tmp_path / "raw" / "train.csv", store)
    before = {d["_id"]: d for d in store.find(spec.name)}
    summary = run_etl(spec, tmp_path / "raw" / "test.csv", store)
    assert (summary.inserted, summary.updated, summary.unchanged) == (0, 0, len(frame))
    after = {d["_id"]: d for d in store.find(spec.name)}
    assert after == before  # labels, values, hashes and lineage: nothing moved
    assert set(_labels(store, spec).values()) == set(frame[spec.target.column])


def test_one_run_with_both_files_stores_the_labels_whichever_sorts_first(
    spec: DatasetSpec, store: Store, tmp_path: Path
) -> None:
    frame = _files(spec, tmp_path / "raw")  # test.csv sorts before train.csv
    summary = run_etl(spec, tmp_path / "raw", store)
    assert summary.rejected == 0 and summary.quarantined == 0
    expected = dict(zip(frame[spec.id_column], frame[spec.target.column], strict=True))
    assert _labels(store, spec) == expected
    again = run_etl(spec, tmp_path / "raw", store)
    assert (again.inserted, again.updated) == (0, 0)
    assert _labels(store, spec) == expected


def test_the_same_columns_twice_in_one_run_is_still_a_duplicate(
    spec: DatasetSpec, store: Store, tmp_path: Path
) -> None:
    frame = _files(spec, tmp_path / "raw", rows=10)
    frame.head(3).to_csv(tmp_path / "raw" / "zz_again.csv", index=False)
    summary = run_etl(spec, tmp_path / "raw", store, max_rejected_share=0.5)
    reasons = [q["reason"] for q in store.find(f"{spec.name}_quarantine")]
    assert summary.rejected == 3
    assert all("duplicate id: first seen at train.csv" in r for r in reasons)


def test_a_json_record_without_a_key_keeps_the_field_and_a_null_clears_it(
    spec: DatasetSpec, store: Store, tmp_path: Path
) -> None:
    frame = _files(spec, tmp_path / "raw", rows=6)
    run_etl(spec, tmp_path / "raw" / "train.csv", store)
    ids = frame[spec.id_column].tolist()
    records = [
        {k: v for k, v in row.items() if not pd.isna(v)}
        for row in frame.astype(object).to_dict("records")
    ]
    target = spec.target.column
    records[0].pop(target)  # absent: keeps the stored label
    records[1][target] = None  # an explicit null: clears it
    records[2].pop("LoanAmount", None)  # absent feature: keeps the stored amount
    records[2]["ApplicantIncome"] = 123456  # while another field changes
    path = tmp_path / "updates.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records[:3]) + b"\n")
    stored = {d["_id"]: d for d in store.find(spec.name)}
    summary = run_etl(spec, path, store)
    assert (summary.updated, summary.unchanged) == (2, 1)
    now = {d["_id"]: d for d in store.find(spec.name)}
    assert now[ids[0]][target] == stored[ids[0]][target]
    assert now[ids[0]]["_hash"] == stored[ids[0]]["_hash"]
    assert now[ids[1]][target] is None
    assert now[ids[2]]["LoanAmount"] == stored[ids[2]]["LoanAmount"]
    assert now[ids[2]]["ApplicantIncome"] == 123456


def test_a_new_row_without_the_target_is_stored_without_a_label(
    spec: DatasetSpec, store: Store, tmp_path: Path
) -> None:
    frame = _files(spec, tmp_path / "raw", rows=5)
    run_etl(spec, tmp_path / "raw" / "test.csv", store)
    snapshot = store.read_snapshot(spec.name, require=spec.target.column)
    assert len(snapshot) == 0
    summary = run_etl(spec, tmp_path / "raw" / "train.csv", store)
    assert summary.updated == len(frame)  # the labels arrive
    assert len(store.read_snapshot(spec.name, require=spec.target.column)) == len(frame)
