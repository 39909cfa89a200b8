"""One set of column rules: the same bad (and good) values through the ETL's validator and
the API's give the same verdict in the same words."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mlcycle.etl.extract import records_frame
from mlcycle.rules.frames import validate_chunk
from mlcycle.rules.records import InvalidRequest, RequestValidator
from mlcycle.spec import DatasetSpec, parse_spec
from tests.data import CREDIT_SPEC, LOAN_RECORD, TIERS_SPEC

GOOD = LOAN_RECORD

CASES: list[tuple[str, Any]] = [
    ("ApplicantIncome", "abc"),
    ("ApplicantIncome", "5849"),
    ("ApplicantIncome", " 12.5 "),
    ("ApplicantIncome", -1),
    ("ApplicantIncome", 1e308),
    ("ApplicantIncome", 1e16),
    ("ApplicantIncome", "inf"),
    ("ApplicantIncome", "NaN"),
    ("ApplicantIncome", True),
    ("ApplicantIncome", None),
    ("ApplicantIncome", "NA"),
    ("LoanAmount", None),
    ("LoanAmount", ""),
    ("Loan_Amount_Term", 601),
    ("Loan_Amount_Term", 0.5),
    ("Credit_History", 0.5),
    ("Credit_History", "1"),
    ("Credit_History", 2),
    ("Gender", "Robot"),
    ("Gender", "m"),
    ("Gender", " FEMALE "),
    ("Gender", True),
    ("Gender", ["Male"]),
    ("Gender", "null"),
    ("Dependents", 3),
    ("Dependents", "3"),
    ("Dependents", 0),
    ("Property_Area", "semi-urban"),
    ("Property_Area", {"a": 1}),
]


def _etl_verdict(spec: DatasetSpec, record: dict[str, Any]) -> str | None:
    """Through the ETL as a JSON record (the JSONL reader's path)."""
    raw = records_frame([orjson.loads(orjson.dumps(record))], spec, 1)
    result = validate_chunk(raw.drop(columns="__record_error__"), spec)
    if result.issues.empty:
        return None
    return str(result.issues.iloc[0]["reason"])


def _api_verdict(spec: DatasetSpec, record: dict[str, Any]) -> str | None:
    validator = RequestValidator(spec, spec.numeric_features, spec.categorical_features)
    try:
        validator.validate([record], single=True)
    except InvalidRequest as err:
        return str(err.errors[0]["msg"])
    return None


@pytest.mark.parametrize(("column", "value"), CASES, ids=[f"{c}={v!r}" for c, v in CASES])
def test_the_etl_and_the_api_agree(spec: DatasetSpec, column: str, value: Any) -> None:
    record = {**GOOD, column: value}
    assert _etl_verdict(spec, record) == _api_verdict(spec, record)


def test_good_rows_pass_both(spec: DatasetSpec) -> None:
    assert _etl_verdict(spec, GOOD) is None
    assert _api_verdict(spec, GOOD) is None


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import numpy as np

    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape
        and (
            np.array_equal(a[k], b[k], equal_nan=True)
            if a[k].dtype.kind == "f"
            else a[k].tolist() == b[k].tolist()
        )
        for k in a
    )


def _canonical_records(spec: DatasetSpec, n: int, seed: int) -> list[dict[str, Any]]:
    """Records as the spec spells them, with JSON numbers in bounds and nulls where allowed."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        rec: dict[str, Any] = {spec.id_column: f"r{i}"}
        for name in spec.numeric_features:
            col = spec.columns[name]
            if col.nullable and rng.random() < 0.2:
                rec[name] = None
            elif col.values is not None:
                rec[name] = rng.choice(list(col.values))
            else:
                low = col.min if col.min is not None else -1e6
                high = col.max if col.max is not None else 1e6
                x = rng.uniform(low, high)
                rec[name] = int(x) if col.type == "integer" else x
        for name in spec.categorical_features:
            col = spec.columns[name]
            if col.type == "boolean":
                rec[name] = rng.random() < 0.5
            else:
                rec[name] = rng.choice([str(v) for v in col.values or []])
        out.append(rec)
    return out


@pytest.mark.parametrize("n", [1, 7, 32])
def test_few_canonical_records_take_the_plain_path_to_the_same_arrays(
    spec: DatasetSpec, n: int
) -> None:
    for which in (spec, parse_spec(CREDIT_SPEC), parse_spec(TIERS_SPEC)):
        validator = RequestValidator(which, which.numeric_features, which.categorical_features)
        records = _canonical_records(which, n, seed=n)
        plain = validator._plain(records)
        assert plain is not None, which.name
        columns = {k: [r.get(k) for r in records] for k in validator.allowed_fields}
        assert _same(plain, validator.validate_columns(columns, n))


@pytest.mark.parametrize(("column", "value"), CASES, ids=[f"{c}={v!r}" for c, v in CASES])
def test_the_plain_path_never_accepts_what_the_rules_refuse(
    spec: DatasetSpec, column: str, value: Any
) -> None:
    validator = RequestValidator(spec, spec.numeric_features, spec.categorical_features)
    record = {**GOOD, column: value}
    plain = validator._plain([record])
    if plain is None:
        return
    columns = {k: [record.get(k)] for k in validator.allowed_fields}
    assert _same(plain, validator.validate_columns(columns, 1, single=True))


@pytest.mark.parametrize("n", [1, 40])
@pytest.mark.parametrize("ident", ["", "has space", 7])
def test_an_id_off_its_pattern_is_refused_whatever_the_batch_size(
    spec: DatasetSpec, n: int, ident: Any
) -> None:
    assert spec.columns[spec.id_column].pattern, "the loan spec gives its ids a pattern"
    validator = RequestValidator(spec, spec.numeric_features, spec.categorical_features)
    records = [dict(GOOD) for _ in range(n)]
    records[-1][spec.id_column] = ident
    with pytest.raises(InvalidRequest) as caught:
        validator.validate(records, single=False)
    assert caught.value.errors[0]["loc"] == ["body", "records", n - 1, spec.id_column]


CITY_SPEC = {
    "name": "cities",
    "id_column": "id",
    "target": {"column": "ok", "labels": {"y": 1, "n": 0}, "positive": "y"},
    "columns": {
        "id": {"type": "string", "nullable": False},
        "city": {"type": "category", "values": ["İstanbul", "Izmir", "Straße", "Ǆemal"]},
        "ok": {"type": "category", "values": ["y", "n"]},
    },
}


@pytest.mark.parametrize(
    "value",
    [
        "İstanbul",
        "İSTANBUL",
        "i̇stanbul",
        "istanbul",
        "IZMIR",
        "ızmır",
        "STRASSE",
        "straße",
        "STRAẞE",
        "ǆemal",
        "ǅemal",
        "Ǆemal",
    ],
)
def test_non_ascii_spellings_get_one_verdict(value: str) -> None:
    """One case folding (the spec's `fold`) for the ETL and the API: Arrow's lower-casing
    maps `İ` elsewhere than Python's, and once rejected the spec's own spelling."""
    spec = parse_spec(CITY_SPEC)
    record = {"id": "c1", "city": value}
    etl = _etl_verdict(spec, record)
    assert etl == _api_verdict(spec, record)
    folded = spec.columns["city"].fold(value)
    assert (etl is None) == (folded in spec.columns["city"].spellings)
    if value in ("İstanbul", "İSTANBUL", "Ǆemal", "ǅemal", "ǆemal"):
        assert etl is None
