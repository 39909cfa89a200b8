from __future__ import annotations

import math

import pandas as pd
import pytest

from mlcycle.etl.transform import plan_writes, row_hashes, to_documents
from mlcycle.rules.frames import validate_chunk
from mlcycle.spec import DatasetSpec, parse_spec

GOOD = {
    "Loan_ID": "LP1",
    "Gender": "Male",
    "Married": "Yes",
    "Dependents": "0",
    "Education": "Graduate",
    "Self_Employed": "No",
    "ApplicantIncome": "5000",
    "CoapplicantIncome": "0",
    "LoanAmount": "120",
    "Loan_Amount_Term": "360",
    "Credit_History": "1",
    "Property_Area": "Urban",
    "Loan_Status": "Y",
}


def _one(spec: DatasetSpec, **changes: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    row = {**GOOD, **changes}
    frame = pd.DataFrame([row]).astype("string")
    result = validate_chunk(frame, spec)
    return result.valid, result.issues


@pytest.mark.parametrize(
    ("column", "raw", "expected"),
    [
        ("Gender", " male ", "Male"),
        ("Gender", "F", "Female"),
        ("Dependents", "3+", "3+"),
        ("Dependents", "3", "3+"),
        ("Married", "YES", "Yes"),
        ("Property_Area", "semi-urban", "Semiurban"),
        ("ApplicantIncome", " 4583 ", 4583.0),
        ("LoanAmount", "1.5e2", 150.0),
        ("Credit_History", "1.0", 1.0),
        ("Loan_Status", "yes", "Y"),
    ],
)
def test_values_are_trimmed_and_made_canonical(
    spec, column: str, raw: str, expected: object
) -> None:
    valid, issues = _one(spec, **{column: raw})
    assert issues.empty
    assert valid.loc[0, column] == expected


@pytest.mark.parametrize(
    ("column", "raw", "reason"),
    [
        ("Gender", "Robot", "not one of the allowed values (Male, Female)"),
        ("ApplicantIncome", "12k", "not a number"),
        ("ApplicantIncome", "-1e9", "below the minimum 0"),
        ("ApplicantIncome", "inf", "not a finite number"),
        ("Loan_Amount_Term", "1200", "above the maximum 600"),
        ("Credit_History", "0.5", "not one of the allowed values (0, 1)"),
        ("Loan_ID", "LP 001", "does not match"),
        ("Loan_ID", "", "missing value (column is not nullable)"),
        ("ApplicantIncome", "NA", "missing value"),
    ],
)
def test_bad_values_are_rejected_with_column_value_and_reason(
    spec, column: str, raw: str, reason: str
) -> None:
    valid, issues = _one(spec, **{column: raw})
    assert valid.empty
    assert list(issues["column"]) == [column]
    assert reason in issues.loc[0, "reason"]
    if raw.strip() and raw != "NA":
        assert issues.loc[0, "value"] == raw.strip()


def test_missing_values_stay_missing_by_default(spec) -> None:
    valid, issues = _one(spec, LoanAmount="", Gender="NA", Loan_Status=None)
    assert issues.empty
    assert math.isnan(valid.loc[0, "LoanAmount"])
    assert pd.isna(valid.loc[0, "Gender"])
    assert pd.isna(valid.loc[0, "Loan_Status"])


def test_several_problems_in_one_row_are_all_reported(spec) -> None:
    valid, issues = _one(spec, Gender="X", LoanAmount="abc")
    assert valid.empty
    assert set(issues["column"]) == {"Gender", "LoanAmount"}


def _mini(**col: object) -> DatasetSpec:
    return parse_spec(
        {
            "name": "m",
            "id_column": "id",
            "columns": {"id": {"type": "string", "nullable": False}, "v": col},
        }
    )


def test_missing_value_policies() -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "v": ["1", ""]}).astype("string")
    dropped = validate_chunk(frame, _mini(type="float", on_missing="drop"))
    assert list(dropped.valid["id"]) == ["a"]
    assert dropped.dropped == 1
    assert dropped.issues.empty
    filled = validate_chunk(frame, _mini(type="float", on_missing="fill", fill_value=0))
    assert list(filled.valid["v"]) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("raw", "expected"), [("yes", True), ("0", False), ("TRUE", True), ("f", False)]
)
def test_boolean_columns(raw: str, expected: bool) -> None:
    frame = pd.DataFrame({"id": ["a"], "v": [raw]}).astype("string")
    result = validate_chunk(frame, _mini(type="boolean"))
    assert bool(result.valid.loc[0, "v"]) is expected


def test_integer_columns_reject_fractions() -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "v": ["3", "3.5"]}).astype("string")
    result = validate_chunk(frame, _mini(type="integer"))
    assert list(result.valid["id"]) == ["a"]
    assert "not a whole number" in result.issues.loc[0, "reason"]


def test_validation_does_not_mutate_its_input(spec) -> None:
    frame = pd.DataFrame([{**GOOD, "Gender": " male "}]).astype("string")
    before = frame.copy()
    validate_chunk(frame, spec)
    pd.testing.assert_frame_equal(frame, before)


def test_documents_carry_id_hash_batch_and_no_nan(spec) -> None:
    valid, _ = _one(spec, LoanAmount="")
    (doc,) = to_documents(valid, "Loan_ID", "batch-1")
    assert doc["_id"] == "LP1"
    assert doc["_batch_id"] == "batch-1"
    assert doc["LoanAmount"] is None
    assert len(doc["_hash"]) == 16


def test_hash_changes_with_content_only(spec) -> None:
    a, _ = _one(spec)
    b, _ = _one(spec, Gender=" MALE ")
    c, _ = _one(spec, ApplicantIncome="5001")
    ha = to_documents(a, "Loan_ID", "x")[0]["_hash"]
    hb = to_documents(b, "Loan_ID", "y")[0]["_hash"]
    hc = to_documents(c, "Loan_ID", "x")[0]["_hash"]
    assert ha == hb != hc
    swapped = pd.DataFrame({"a": [1.0, None], "b": [None, 1.0]})
    first, second = row_hashes(swapped)
    assert first != second


def test_plan_writes_splits_new_changed_unchanged() -> None:
    docs = [{"_id": "a", "_hash": "1"}, {"_id": "b", "_hash": "2"}, {"_id": "c", "_hash": "3"}]
    plan = plan_writes(docs, {"a": "1", "b": "old"})
    assert [d["_id"] for d in plan.new] == ["c"]
    assert [d["_id"] for d in plan.changed] == ["b"]
    assert plan.unchanged == 1
