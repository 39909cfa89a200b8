from __future__ import annotations

import pandas as pd

from mlcycle.datagen import generate
from mlcycle.rules.frames import validate_chunk


def test_synthetic_rows_are_valid_seeded_and_labelled(spec) -> None:
    a = generate(spec, 500, seed=3)
    b = generate(spec, 500, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(generate(spec, 500, seed=4))
    raw = a.astype(object).where(a.notna(), None).astype("string")
    result = validate_chunk(raw, spec)
    assert result.issues.empty
    assert len(result.valid) == 500
    assert set(a["Loan_Status"]) == {"Y", "N"}
    assert a["Loan_ID"].is_unique
