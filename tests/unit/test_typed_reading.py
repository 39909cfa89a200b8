"""Fast paths that must not change a verdict: Parquet number columns are read as numbers
(not printed to text and parsed back), and category columns are checked one distinct
value at a time. Both give exactly what the text rules give: the same typed rows, the
same issues in the same words with the same values, the same quarantine entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlcycle.etl.extract import read_file
from mlcycle.etl.sources import FileOrigin
from mlcycle.etl.steps import quarantine_docs
from mlcycle.rules.frames import validate_chunk
from mlcycle.rules.text import is_typed_numbers, raw_text
from mlcycle.spec import DatasetSpec

SPEC = DatasetSpec.model_validate(
    {
        "name": "t",
        "id_column": "id",
        "null_values": ["", "NA", "-999", "inf", " x "],
        "columns": {
            "id": {"type": "string", "nullable": False},
            "f": {"type": "float", "nullable": True, "min": -1e300},
            "g": {"type": "float", "nullable": False, "max": 100.0},
            "n": {"type": "integer", "nullable": True, "min": -5},
            "v": {"type": "float", "values": [1, 2.5, 3]},
            "w": {"type": "float", "on_missing": "fill", "fill_value": 7.0},
            "k": {"type": "integer", "nullable": True},
            "s": {"type": "float", "nullable": True},
            "c": {"type": "category", "values": ["Aa", "b", "İx"], "aliases": {"z": "b"}},
            "d": {
                "type": "category",
                "values": ["Up", "down"],
                "case_insensitive": False,
                "nullable": False,
            },
        },
    }
)

EDGES = [
    np.nan, 0.0, -0.0, 1.0, -1.0, 0.5, 2.5, 3.0, 1e-320, 5e-324, 0.1 + 0.2, 1e300, -1e300,
    1e16, 1e15 + 0.5, 2.0**53, 2.0**53 + 2, -(2.0**53), 1e308, np.inf, -np.inf, -999.0,
    -999.5, 99.0, 100.0, 100.000001, 7.0, -5.0, -6.0, 1e22, 123456789.123456789,
]  # fmt: skip
WORDS = [
    None, "Aa", "aa", " AA ", "b", "B", "z", "Z ", "İx", "i̇x", "İX", "ix", "", " ", "NA",
    " x ", "x", "nope", "Up", "up", " Up", "down", "DOWN", "\u00a0b\u00a0", "\tb\n",
]  # fmt: skip


def _table(rows: int, seed: int) -> pa.Table:
    """Mostly good values, with an edge case in about one cell in twelve."""
    rng = np.random.default_rng(seed)

    def mixed(good: np.ndarray | list[Any], edges: list[Any]) -> list[Any]:
        edge = rng.random(rows) < 0.08
        picks = rng.integers(0, len(edges), rows)
        return [edges[picks[i]] if edge[i] else good[i] for i in range(rows)]

    def floats(good: np.ndarray) -> pa.Array:
        values = np.array(mixed(good, EDGES), dtype=np.float64)
        return pa.array(values, mask=rng.random(rows) < 0.03)

    ints = rng.integers(-10, 10, rows)
    ints[:3] = [-999, 2**53 - 1, -(2**53) + 1]
    small = [e for e in EDGES if not abs(e) > 1e30]
    return pa.table(
        {
            "id": [f"r{i}" for i in range(rows)],
            "f": floats(rng.normal(0, 50, rows)),
            "g": floats(rng.uniform(0, 100, rows)),
            "n": floats(rng.integers(-5, 10, rows).astype(float)),
            "v": floats(rng.choice([1.0, 2.5, 3.0], rows)),
            "w": floats(rng.normal(0, 1, rows)),
            "k": pa.array(ints, mask=rng.random(rows) < 0.2),
            "s": pa.array(np.array(mixed(rng.normal(0, 9, rows), small), dtype=np.float32)),
            "c": mixed(rng.choice(["Aa", "b", "z"], rows), WORDS),
            "d": mixed(rng.choice(["Up", "down"], rows), WORDS),
        }
    )


def _text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The same raw values, every column as text (as a CSV of them would hold)."""
    return raw_text(frame).astype("string")


def _docs(frame: pd.DataFrame, issues: pd.DataFrame) -> list[dict[str, Any]]:
    origin = FileOrigin("t.parquet", "0" * 64, 1, 1)
    return [
        {k: v for k, v in doc.items() if k != "quarantined_at"}
        for doc in quarantine_docs(frame, issues, origin, "b1")
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_parquet_numbers_read_typed_give_the_text_rules_verdicts(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(_table(3000, seed), path)
    chunks = list(read_file(path, SPEC, 1000))
    assert len(chunks) == 3
    for chunk in chunks:
        typed = chunk.frame
        assert [c for c in typed.columns if is_typed_numbers(typed[c])] == list("fgnvwk")
        text = _text_frame(typed)
        assert not any(is_typed_numbers(text[c]) for c in text.columns)
        fast, slow = validate_chunk(typed, SPEC), validate_chunk(text, SPEC)
        assert len(fast.issues) > 100 and len(fast.valid) > 100  # both kinds of row occur
        pd.testing.assert_frame_equal(fast.valid, slow.valid, check_exact=True)
        pd.testing.assert_frame_equal(fast.issues, slow.issues, check_exact=True)
        assert fast.dropped == slow.dropped
        assert _docs(typed, fast.issues) == _docs(text, slow.issues)


def test_the_typed_values_are_what_the_same_text_in_a_csv_reads_as(tmp_path: Path) -> None:
    table = _table(2000, 9)
    pq.write_table(table, tmp_path / "t.parquet")
    (chunk,) = list(read_file(tmp_path / "t.parquet", SPEC, 5000))
    _text_frame(chunk.frame).to_csv(tmp_path / "t.csv", index=False, na_rep="")
    (csv_chunk,) = list(read_file(tmp_path / "t.csv", SPEC, 5000))
    fast, from_csv = validate_chunk(chunk.frame, SPEC), validate_chunk(csv_chunk.frame, SPEC)
    pd.testing.assert_frame_equal(fast.valid, from_csv.valid, check_exact=True)
    pd.testing.assert_frame_equal(fast.issues, from_csv.issues, check_exact=True)
    # a whole -0.0 is the text "0": no negative zero reaches the store
    assert not np.signbit(fast.valid["f"].to_numpy()[fast.valid["f"].to_numpy() == 0]).any()


def test_integers_beyond_two_to_the_53_keep_their_own_text(tmp_path: Path) -> None:
    big = 2**53 + 1
    path = tmp_path / "t.parquet"
    table = _table(3, 1).slice(0, 2)
    table = table.set_column(table.schema.get_field_index("k"), "k", pa.array([big, 3]))
    pq.write_table(table, path)
    (chunk,) = list(read_file(path, SPEC, 10))
    assert not is_typed_numbers(chunk.frame["k"])  # text: the quarantine shows the digits
    assert chunk.frame["k"].tolist() == [str(big), "3"]


def _reference_category(spec: DatasetSpec, column: str, values: list[Any]) -> list[Any]:
    """The category rule a value at a time: strip, null spelling, fold, look up."""
    col = spec.columns[column]
    out = []
    for value in values:
        word = None if value is None else pd.Series([value], dtype="string").str.strip()[0]
        if word is None or word in spec.null_values:
            out.append("missing")
            continue
        out.append(col.spellings.get(col.fold(word), "refused"))
    return out


def test_category_columns_checked_by_distinct_value_match_the_rule_value_by_value() -> None:
    rng = np.random.default_rng(4)
    rows = [WORDS[i] for i in rng.integers(0, len(WORDS), 4000)]
    frame = pd.DataFrame(
        {"id": [f"r{i}" for i in range(len(rows))], "g": "1", "c": rows, "d": rows},
        dtype="string",
    )
    result = validate_chunk(frame, SPEC)
    for column in ("c", "d"):
        expected = _reference_category(SPEC, column, rows)
        refused = result.issues[result.issues["column"] == column]
        assert sorted(refused["pos"]) == [
            i
            for i, e in enumerate(expected)
            if e == "refused" or (e == "missing" and column == "d")
        ]
        for pos, value, reason in zip(
            refused["pos"], refused["value"], refused["reason"], strict=True
        ):
            if expected[pos] == "refused":
                assert value == rows[pos].strip() and "not one of the allowed values" in reason
            else:
                assert value is pd.NA and reason.startswith("missing value")
        kept = result.valid[column].astype(object)
        for pos, got in kept.items():
            want = expected[pos]
            assert (got is np.nan or pd.isna(got)) if want == "missing" else got == want
