from __future__ import annotations

from pathlib import Path

import pytest

from mlcycle.errors import SpecError
from mlcycle.spec import load_spec, parse_spec

BASE = {
    "name": "t",
    "id_column": "id",
    "target": {"column": "y", "labels": {"Y": 1, "N": 0}, "positive": "Y"},
    "columns": {
        "id": {"type": "string", "nullable": False},
        "x": {"type": "float", "min": 0},
        "c": {"type": "category", "values": ["a", "b"]},
        "y": {"type": "category", "values": ["Y", "N"]},
    },
}


def _with(**changes: object) -> dict:
    data = {**BASE, **changes}
    return data


def test_loan_spec_loads(spec) -> None:
    assert spec.id_column == "Loan_ID"
    assert spec.target_column == "Loan_Status"
    assert "Loan_ID" not in spec.feature_columns
    assert "Credit_History" in spec.numeric_features
    assert "Property_Area" in spec.categorical_features
    assert len(spec.fingerprint) == 64


def test_features_default_to_all_but_id_and_target() -> None:
    spec = parse_spec(BASE)
    assert spec.feature_columns == ["x", "c"]
    assert spec.required_columns == ["id", "x", "c"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with(id_column="nope"), "id_column 'nope' is not in columns"),
        (_with(colums={}), "colums"),
        (_with(features=["zzz"]), "feature 'zzz' is not in columns"),
        (_with(features=["id"]), "is the id or the target"),
        ({**BASE, "columns": {**BASE["columns"], "x": {"type": "flaot"}}}, "columns.x.type"),
        ({**BASE, "columns": {**BASE["columns"], "c": {"type": "category"}}}, "non-empty 'values'"),
        (
            {**BASE, "columns": {**BASE["columns"], "x": {"type": "float", "min": 5, "max": 1}}},
            "min",
        ),
        (
            {**BASE, "columns": {**BASE["columns"], "x": {"type": "float", "colour": 1}}},
            "columns.x.colour",
        ),
        (
            {**BASE, "columns": {**BASE["columns"], "id": {"type": "string"}}},
            "must be nullable: false",
        ),
        (
            {**BASE, "target": {"column": "y", "labels": {"Y": 1, "Q": 0}, "positive": "Y"}},
            "no label mapping",
        ),
        (
            {**BASE, "target": {"column": "y", "labels": {"Y": 1}, "positive": "Y"}},
            "at least two labels",
        ),
        (
            {**BASE, "target": {"column": "y", "labels": {"Y": 1, "N": 0}}},
            "a binary target needs 'positive'",
        ),
        (
            {
                **BASE,
                "target": {"column": "y", "labels": {"Y": 1, "N": 0, "M": 2}, "positive": "Y"},
            },
            "'positive' applies to a binary target",
        ),
        (
            {**BASE, "target": {"column": "y", "labels": {"Y": 1, "N": 0}, "positive": "maybe"}},
            "positive",
        ),
    ],
)
def test_invalid_specs_name_the_bad_key(data: dict, message: str) -> None:
    with pytest.raises(SpecError, match="invalid dataset spec") as info:
        parse_spec(data, "my.yaml")
    assert message in str(info.value)
    assert "my.yaml" in str(info.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read dataset spec"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(SpecError, match="mapping at the top level"):
        load_spec(scalar)


def test_fingerprint_ignores_formatting_but_not_content() -> None:
    a = parse_spec(BASE)
    b = parse_spec(dict(reversed(list(BASE.items()))))
    c = parse_spec({**BASE, "columns": {**BASE["columns"], "x": {"type": "float", "min": 1}}})
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("_batch_id", "lineage"),
        ("_source", "lineage"),
        ("_hash", "lineage"),
        ("_id", "lineage"),
        ("a.b", "not a legal MongoDB field name"),
        ("$x", "not a legal MongoDB field name"),
        (" padded", "spaces"),
    ],
)
def test_reserved_and_illegal_column_names_are_refused_at_load(name: str, why: str) -> None:
    from mlcycle.spec import DatasetSpec

    with pytest.raises(ValueError, match=why) as info:
        DatasetSpec.model_validate(
            {
                "name": "t",
                "id_column": "id",
                "columns": {"id": {"type": "string", "nullable": False}, name: {"type": "float"}},
            }
        )
    assert repr(name) in str(info.value) and "header:" in str(info.value)


def test_a_header_maps_a_file_name_to_a_legal_one(tmp_path: Path) -> None:
    import orjson

    from mlcycle.etl.pipeline import run_etl
    from mlcycle.spec import DatasetSpec
    from mlcycle.store.embedded import EmbeddedStore

    spec = DatasetSpec.model_validate(
        {
            "name": "t",
            "id_column": "id",
            "columns": {
                "id": {"type": "string", "nullable": False},
                "a_b": {"type": "float", "header": "a.b"},
                "x": {"type": "category", "values": ["İstanbul", "Izmir"], "header": "$x"},
            },
        }
    )
    (tmp_path / "in.csv").write_text("id,a.b,$x\n1,2.5,İSTANBUL\n")
    (tmp_path / "in.jsonl").write_bytes(orjson.dumps({"id": "2", "a.b": 3, "$x": "izmir"}) + b"\n")
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    summary = run_etl(spec, tmp_path, store)
    assert summary.rejected == 0
    rows = {d["_id"]: (d["a_b"], d["x"]) for d in store.find("t")}
    assert rows == {"1": (2.5, "İstanbul"), "2": (3.0, "Izmir")}
