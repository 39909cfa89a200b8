"""Request validation built from the dataset spec, column-wise and without pandas.

`RequestValidator` turns parsed JSON records into the model's input arrays, or raises
`InvalidRequest` with one entry per bad field (location, message), which the API returns
as 422. The pydantic models below describe the same rules for the OpenAPI document;
requests are not validated through them because per-record pydantic objects cost ~20 µs
each, too much for 10,000-row batches.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from mlcycle.spec import ColumnSpec, DatasetSpec

MISSING = "__missing__"
MAX_ERRORS = 50
MAX_MAGNITUDE = 1e30
"""Numbers are scored as float32 (max ~3.4e38); larger ones would overflow to inf."""


class InvalidRequest(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Column:
    def __init__(self, name: str, col: ColumnSpec) -> None:
        self.name = name
        self.col = col
        self.numeric = col.type in ("float", "integer")
        self.allowed: set[float] | None = (
            {float(v) for v in col.values} if self.numeric and col.values is not None else None
        )
        fold = str.lower if col.case_insensitive else str
        self.fold = fold
        self.lookup: dict[str, str] = {}
        if col.type == "boolean":
            self.lookup = {
                "true": "true",
                "false": "false",
                "yes": "true",
                "no": "false",
                "1": "true",
                "0": "false",
            }
        for v in col.values or []:
            self.lookup[fold(_text(v))] = _text(v)
        for alias, canonical in col.aliases.items():
            self.lookup[fold(str(alias))] = _text(canonical)
        allowed = ", ".join(_text(v) for v in col.values or [])
        self.allowed_msg = f"must be one of: {allowed}" if allowed else "not an allowed value"


class RequestValidator:
    """Validates records against the spec's feature columns (plus optional id/target)."""

    def __init__(self, spec: DatasetSpec, numeric: list[str], categorical: list[str]) -> None:
        self.spec = spec
        self.numeric = [_Column(c, spec.columns[c]) for c in numeric]
        self.categorical = [_Column(c, spec.columns[c]) for c in categorical]
        self.allowed_fields = {*numeric, *categorical, spec.id_column}
        if spec.target_column:
            self.allowed_fields.add(spec.target_column)

    def validate(self, records: list[Any], single: bool) -> dict[str, np.ndarray]:
        errors: list[dict[str, Any]] = []

        def loc(i: int, field: str | None = None) -> list[Any]:
            base: list[Any] = ["body"] if single else ["body", "records", i]
            return [*base, field] if field else base

        def add(i: int, field: str | None, msg: str, kind: str) -> None:
            if len(errors) < MAX_ERRORS:
                errors.append({"loc": loc(i, field), "msg": msg, "type": kind})

        allowed = self.allowed_fields
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                add(i, None, "each record must be a JSON object", "type_error")
                continue
            extra = rec.keys() - allowed
            for field in sorted(extra):
                add(i, field, "unknown field", "extra_forbidden")
        if errors:
            raise InvalidRequest(errors)

        id_col = self.spec.id_column
        id_pattern = self.spec.columns[id_col].pattern
        id_re = re.compile(id_pattern) if id_pattern else None
        for i, rec in enumerate(records):
            ident = rec.get(id_col)
            if ident is None:
                continue
            if not isinstance(ident, str):
                add(i, id_col, f"must be a string, got {type(ident).__name__}", "string_type")
            elif id_re is not None and not id_re.fullmatch(ident):
                add(i, id_col, f"must match {id_pattern}", "string_pattern_mismatch")

        feed: dict[str, np.ndarray] = {}
        for c in self.numeric:
            values = [rec.get(c.name) for rec in records]
            out = np.empty(len(values), dtype=np.float64)
            col = c.col
            for i, v in enumerate(values):
                if v is None:
                    if not col.nullable:
                        add(i, c.name, "field required (not nullable)", "missing")
                    out[i] = math.nan
                    continue
                if type(v) is bool or not isinstance(v, int | float):
                    add(i, c.name, f"must be a number, got {type(v).__name__}", "float_type")
                    continue
                x = float(v)
                if not math.isfinite(x):
                    add(i, c.name, "must be a finite number", "finite_number")
                elif abs(x) > MAX_MAGNITUDE:
                    add(i, c.name, f"must be within ±{MAX_MAGNITUDE:g}", "finite_number")
                elif col.min is not None and x < col.min:
                    add(i, c.name, f"must be >= {col.min:g}", "greater_than_equal")
                elif col.max is not None and x > col.max:
                    add(i, c.name, f"must be <= {col.max:g}", "less_than_equal")
                elif c.allowed is not None and x not in c.allowed:
                    add(i, c.name, c.allowed_msg, "enum")
                elif col.type == "integer" and not x.is_integer():
                    add(i, c.name, "must be a whole number", "int_type")
                out[i] = x
            feed[c.name] = out.astype(np.float32).reshape(-1, 1)
        for c in self.categorical:
            lookup, fold = c.lookup, c.fold
            cats: list[str] = []
            for i, rec in enumerate(records):
                v = rec.get(c.name)
                if v is None:
                    if not c.col.nullable:
                        add(i, c.name, "field required (not nullable)", "missing")
                    cats.append(MISSING)
                    continue
                if not isinstance(v, str | int | float) or (
                    type(v) is bool and c.col.type != "boolean"
                ):
                    add(i, c.name, f"must be a string, got {type(v).__name__}", "string_type")
                    cats.append(MISSING)
                    continue
                found = lookup.get(fold(_text(v).strip()))
                if found is None:
                    add(i, c.name, c.allowed_msg, "enum")
                    cats.append(MISSING)
                else:
                    cats.append(found)
            feed[c.name] = np.array(cats, dtype=object).reshape(-1, 1)
        if errors:
            raise InvalidRequest(errors)
        return feed


def record_model(spec: DatasetSpec, numeric: list[str], categorical: list[str]) -> type[BaseModel]:
    """A pydantic model of one record, for the OpenAPI document."""
    fields: dict[str, Any] = {}
    for name in numeric:
        col = spec.columns[name]
        default = None if col.nullable else ...
        if col.values is not None:
            kind: Any = Literal[tuple(float(v) for v in col.values)]
            fields[name] = (
                (kind | None) if col.nullable else kind,
                Field(default, description=col.description),
            )
        else:
            ann: Any = int if col.type == "integer" else float
            fields[name] = (
                (ann | None) if col.nullable else ann,
                Field(
                    default,
                    ge=col.min,
                    le=col.max,
                    allow_inf_nan=False,
                    description=col.description,
                ),
            )
    for name in categorical:
        col = spec.columns[name]
        choices = tuple(_text(v) for v in col.values or ["true", "false"])
        kind = Literal[choices]
        fields[name] = (
            (kind | None) if col.nullable else kind,
            Field(None if col.nullable else ..., description=col.description),
        )
    id_spec = spec.columns[spec.id_column]
    fields[spec.id_column] = (
        str | None,
        Field(None, pattern=id_spec.pattern, description="Echoed back; not a model input"),
    )
    model = create_model(
        f"{spec.name.title()}Record", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


class Prediction(BaseModel):
    id: str | None = Field(None, description="The record's id field, if it had one")
    label: str
    probability: float = Field(description="Probability of the positive label")


class ModelRef(BaseModel):
    name: str
    version: str


class PredictResponse(BaseModel):
    request_id: str
    model: ModelRef
    predictions: list[Prediction]
