"""The OpenAPI side of the request rules: pydantic models that describe what
`mlcycle.rules.records.RequestValidator` checks (requests are validated by it, not by
these), and the response models."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from mlcycle.rules.values import (
    FALSE_STRINGS,
    NUMBER_LIMIT,
    NUMBER_PATTERN,
    TRUE_STRINGS,
    value_text,
)
from mlcycle.spec import ColumnSpec, DatasetSpec

_NUMBER = re.compile(NUMBER_PATTERN)


def accepted_values(col: ColumnSpec) -> tuple[Any, ...]:
    """What a category or boolean field accepts, as the OpenAPI document lists it: the
    allowed values and their aliases as text, the same as JSON numbers where the text is
    one (`"0"` and `0`), and for booleans JSON true/false and the usual words."""
    texts = [value_text(v) for v in col.values or []] + [str(a) for a in col.aliases]
    out: list[Any] = []
    if col.type == "boolean":
        texts = ["true", "false", *sorted(TRUE_STRINGS | FALSE_STRINGS), *texts]
        out += [True, False]
    for text in texts:
        out.append(text)
        if _NUMBER.fullmatch(text):
            number = float(text)
            out.append(int(number) if number.is_integer() else number)
    seen: set[tuple[type, Any]] = set()
    unique = []
    for value in out:
        if (type(value), value) not in seen:
            seen.add((type(value), value))
            unique.append(value)
    return tuple(unique)


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
                    ge=col.min if col.min is not None else -NUMBER_LIMIT,
                    le=col.max if col.max is not None else NUMBER_LIMIT,
                    allow_inf_nan=False,
                    description=col.description,
                ),
            )
    for name in categorical:
        col = spec.columns[name]
        kind = Literal[accepted_values(col)]
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


def record_schema(spec: DatasetSpec, numeric: list[str], categorical: list[str]) -> dict[str, Any]:
    """The JSON Schema of one record as the API reads it: `record_model`'s, plus the
    wire forms the rules accept as the ETL does: the spec's null words (`""`, `"NA"`...)
    for a nullable field, and a number written as text where the column's rule can be
    said by a pattern (no bounds, or a minimum of 0: digits without a sign) or an enum
    (allowed values: `"1"`, `"1.0"`)."""
    schema = record_model(spec, numeric, categorical).model_json_schema()
    props = schema["properties"]
    words = "|".join(re.escape(w) for w in spec.null_values)
    nulls = {"type": "string", "pattern": rf"^\s*({words})\s*$"}  # read stripped
    for name in [*numeric, *categorical]:
        col = spec.columns[name]
        prop = props[name]
        alternatives = prop.pop("anyOf", None)
        if alternatives is None:
            alternatives = [{k: prop.pop(k) for k in list(prop) if k not in _OUTER}]
        plain = col.values is None and col.max is None and col.min in (None, 0)
        if name in numeric and plain:
            alternatives.append({"type": "string", "pattern": _number_text(col)})
        elif name in numeric and col.values is not None:
            texts = {value_text(v) for v in col.values} | {str(float(v)) for v in col.values}
            alternatives.append({"type": "string", "enum": sorted(texts)})
        if col.nullable and spec.null_values:
            alternatives.append(nulls)
        prop["anyOf"] = alternatives
    return schema


_OUTER = {"title", "description", "default"}


def _number_text(col: ColumnSpec) -> str:
    """A number written as text within ±1e15 (15 digits at most), by the column's kind."""
    sign = "" if col.min == 0 else "[+-]?"
    if col.type == "integer":
        return rf"^{sign}[0-9]{{1,15}}(\.0*)?$"
    return rf"^{sign}([0-9]{{1,15}}(\.[0-9]*)?|\.[0-9]+)$"


class Reason(BaseModel):
    feature: str
    reason: str = Field(description="The spec's reason text for the feature, else its description")
    contribution: float


class Prediction(BaseModel):
    id: str | None = Field(None, description="The record's id field, if it had one")
    label: str = Field(description="The most probable label")
    probability: float = Field(
        description="Binary: probability of the positive label; multiclass: of `label`"
    )
    probabilities: dict[str, float] = Field(description="Probability of every label")
    base: float | dict[str, float] | None = Field(
        None,
        description="With ?explain=true: the raw score the contributions add to (the "
        "positive label's log-odds; per label for more than two)",
    )
    contributions: dict[str, float] | dict[str, dict[str, float]] | None = Field(
        None,
        description="With ?explain=true: each feature's part of the raw score (per label "
        "for more than two); base + their sum is the raw score",
    )
    reasons: list[Reason] | None = Field(
        None, description="With ?explain=true: the features that lowered the score most"
    )


class ModelRef(BaseModel):
    name: str
    version: str


class ColumnarPredictions(BaseModel):
    """The answer to a `{"columns": {...}}` batch: one list per field, in request order."""

    id: list[str | None]
    label: list[str]
    probability: list[float]
    probabilities: dict[str, list[float]] = Field(description="Label -> one probability per row")
    base: list[float] | list[dict[str, float]] | None = None
    contributions: list[dict[str, float]] | list[dict[str, dict[str, float]]] | None = None
    reasons: list[list[Reason]] | None = None


class PredictResponse(BaseModel):
    request_id: str
    model: ModelRef
    predictions: list[Prediction] | ColumnarPredictions = Field(
        description="One object per record; for a columnar batch, one list per field"
    )
