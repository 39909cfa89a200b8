"""One set of column rules: the same bad (and good) values through the ETL's validator and
the API's give the same verdict in the same words."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mlcycle.etl.extract import records_frame
from mlcycle.etl.validate import validate_chunk
from mlcycle.serve.schemas import InvalidRequest, RequestValidator
from mlcycle.spec import DatasetSpec
from tests.data import LOAN_RECORD

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
