"""The dataset spec: columns, types, allowed values, id and target columns.

A spec is YAML validated into pydantic models when loaded; an invalid spec raises
`SpecError` naming the bad key, so a typo never turns into silently-unchecked data.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlcycle.errors import SpecError

ColumnType = Literal["string", "integer", "float", "category", "boolean"]

TRUE_STRINGS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_STRINGS = frozenset({"false", "f", "no", "n", "0"})
NUMBER_LIMIT = 1e15
"""Numbers beyond ±1e15 are rejected by the ETL and the API alike: they are no real
feature value, lose integer precision (2^53 ~ 9e15) and overflow float32 arithmetic."""


def packaged(relative: str) -> Path:
    """A file of the project template shipped inside the package (the loan example)."""
    return Path(str(resources.files("mlcycle") / "project" / relative))


def value_text(value: object) -> str:
    """A spec value as text; whole floats lose their ".0" so 1.0 matches "1", and
    booleans are "true"/"false" (as the ETL stores a boolean column's text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class DemoSpec(BaseModel):
    """How `mlcycle demo-data` draws a column, and its documented effect on the target.

    Numbers are log-normal around `median` (`spread` is the sigma of the log) with an
    optional share of exact zeros, or drawn from `choices` (value -> weight). Categories
    use `weights` (value -> weight). `effect` adds to the target's log-odds: for a number,
    per standard deviation of log(1 + value); for a category, per value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    median: float | None = None
    spread: float = Field(default=0.6, gt=0.0)
    zero_share: float = Field(default=0.0, ge=0.0, le=1.0)
    choices: dict[str, float] | None = None
    weights: dict[str, float] | None = None
    missing: float = Field(default=0.0, ge=0.0, le=1.0)
    effect: float | dict[str, float] = 0.0


class ColumnSpec(BaseModel):
    """Rules for one column."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ColumnType
    nullable: bool = True
    required: bool = True
    values: list[str | float | int | bool] | None = None
    aliases: dict[str, str | float | int] = Field(default_factory=dict)
    case_insensitive: bool = True
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    on_missing: Literal["keep", "drop", "fill"] = "keep"
    fill_value: str | float | int | bool | None = None
    description: str | None = None
    reason: str | None = None
    """How an explanation words this column when it lowered the positive label's score
    (an adverse-action reason, e.g. "no credit history on record"); else `description`."""
    header: str | None = None
    """The column's name in files and messages when it differs from the spec's (a
    header such as `a.b` or `$x`, which a stored field cannot be named)."""
    demo: DemoSpec | None = None

    def fold(self, text: str) -> str:
        """The one case folding of spellings, for the ETL and the API alike (Python's
        full lower-casing: `İ` becomes `i̇`, as the spec's own spellings are folded)."""
        return text.lower() if self.case_insensitive else text

    # The one wording of every rule's failure: the ETL's quarantine and the API's 422
    # say the same thing for the same value.
    def msg_missing(self) -> str:
        return "missing value (column is not nullable)"

    def msg_not_number(self) -> str:
        return f"not a number (expected {self.type})"

    def msg_not_finite(self) -> str:
        return "not a finite number"

    def msg_beyond(self) -> str:
        return f"beyond ±{NUMBER_LIMIT:g}"

    def msg_below(self) -> str:
        return f"below the minimum {self.min:g}"

    def msg_above(self) -> str:
        return f"above the maximum {self.max:g}"

    def msg_not_whole(self) -> str:
        return "not a whole number"

    def msg_not_allowed(self) -> str:
        allowed = ", ".join(value_text(v) for v in self.values or [])
        return f"not one of the allowed values ({allowed})"

    def msg_not_boolean(self) -> str:
        return "not a boolean (true/false, yes/no, 1/0)"

    def msg_pattern(self) -> str:
        return f"does not match {self.pattern}"

    @cached_property
    def spellings(self) -> dict[str, str]:
        """Every accepted spelling (folded) -> its canonical text: the allowed values,
        their aliases, and for booleans the usual true/false words. The ETL and the API
        both validate with this one table."""
        table: dict[str, str] = {}
        if self.type == "boolean":
            table.update({t: "true" for t in TRUE_STRINGS} | {f: "false" for f in FALSE_STRINGS})
        for value in self.values or []:
            table[self.fold(value_text(value))] = value_text(value)
        for alias, canonical in self.aliases.items():
            table[self.fold(str(alias))] = value_text(canonical)
        return table

    @model_validator(mode="after")
    def _check(self) -> ColumnSpec:
        if self.on_missing == "fill" and self.fill_value is None:
            raise ValueError("on_missing: fill needs a fill_value")
        if self.type == "category" and not self.values:
            raise ValueError("a category column needs a non-empty 'values' list")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.pattern is not None and self.type != "string":
            raise ValueError("'pattern' applies to string columns only")
        if self.type != "boolean":
            texts = [*(self.values or []), *self.aliases.values()]
            if any(isinstance(v, bool) for v in texts):
                raise ValueError(
                    "true/false in 'values' or 'aliases' of a non-boolean column: "
                    'quote them ("true") or make the column type: boolean'
                )
        return self


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    labels: dict[str, int]
    positive: str | None = None
    """The label whose probability a binary model reports (required for two labels;
    a multiclass target has none: every class gets its probability)."""
    demo_intercept: float = 0.0
    """Base log-odds of the positive label in `mlcycle demo-data`."""

    @model_validator(mode="after")
    def _check(self) -> TargetSpec:
        if len(self.labels) < 2:
            raise ValueError("a target needs at least two labels")
        if len(set(self.labels.values())) != len(self.labels):
            raise ValueError("labels must map to distinct class indexes")
        if len(self.labels) == 2:
            if self.positive is None:
                raise ValueError(
                    "a binary target needs 'positive': the label whose probability is reported"
                )
            if self.positive not in self.labels:
                raise ValueError(f"positive label {self.positive!r} is not one of labels")
        elif self.positive is not None:
            raise ValueError(
                f"'positive' applies to a binary target; this one has {len(self.labels)} "
                "labels (every class gets its probability): remove it"
            )
        return self

    @property
    def binary(self) -> bool:
        return len(self.labels) == 2

    @property
    def label_order(self) -> list[str]:
        """The labels in class-index order (the model's probability columns)."""
        return sorted(self.labels, key=self.labels.__getitem__)


RESERVED_FIELDS = frozenset({"_id", "_hash", "_batch_id", "_source", "__record_error__"})
"""Fields the store and the ETL write beside a dataset's columns (its lineage)."""


def _illegal_name(name: str) -> str | None:
    """Why a column name cannot be a stored field, or None."""
    if name in RESERVED_FIELDS:
        return "is a field mlcycle writes itself (lineage: _id, _hash, _batch_id, _source)"
    if not name or name != name.strip():
        return "is empty or starts or ends with spaces"
    if name.startswith("$") or "." in name or "\0" in name:
        return "is not a legal MongoDB field name (no leading $, no dots, no NUL)"
    return None


class DatasetSpec(BaseModel):
    """A dataset: its columns and which of them are the id, the target and the features."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
    version: int = 1
    experiment: str | None = Field(default=None, min_length=1, max_length=200)
    """MLflow experiment of this dataset's training runs (default: the dataset name)."""
    model_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    """Registered model name (default: the dataset name)."""
    id_column: str
    target: TargetSpec | None = None
    null_values: list[str] = Field(default_factory=lambda: ["", "NA", "null", "None", "nan"])
    columns: dict[str, ColumnSpec]
    features: list[str] | None = None
    intended_use: str | None = None
    """Who may use the model, for which decisions, and what is out of scope (the card)."""
    limitations: str | None = None
    """What the model's owner knows it cannot do (the card)."""
    out_of_scope: list[str] = Field(default_factory=list)
    """Uses the model must not be put to (the card lists them)."""
    sensitive: list[str] = Field(default_factory=list)
    """Columns fairness is measured by (per group, at training and in monitoring),
    whether or not the model takes them as inputs (`features`)."""

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        for name in self.columns:
            if problem := _illegal_name(name):
                raise ValueError(
                    f"column {name!r} {problem}: name it otherwise in the spec and map the "
                    f"file's header to it with `header: {name!r}`"
                )
        headers = [col.header or name for name, col in self.columns.items()]
        if len(set(headers)) != len(headers):
            raise ValueError("two columns read the same header (check their `header:` keys)")
        if self.id_column not in self.columns:
            raise ValueError(f"id_column {self.id_column!r} is not in columns")
        if self.columns[self.id_column].nullable:
            raise ValueError(f"id_column {self.id_column!r} must be nullable: false")
        if self.target is not None:
            tcol = self.columns.get(self.target.column)
            if tcol is None:
                raise ValueError(f"target column {self.target.column!r} is not in columns")
            if tcol.values is not None:
                unknown = {value_text(v) for v in tcol.values} - set(self.target.labels)
                if unknown:
                    raise ValueError(f"target values {sorted(unknown)} have no label mapping")
        for feature in self.features or []:
            if feature not in self.columns:
                raise ValueError(f"feature {feature!r} is not in columns")
            if feature in (self.id_column, self.target_column):
                raise ValueError(f"feature {feature!r} is the id or the target column")
        for column in self.sensitive:
            if column not in self.columns:
                raise ValueError(f"sensitive column {column!r} is not in columns")
            if column in (self.id_column, self.target_column):
                raise ValueError(f"sensitive column {column!r} is the id or the target column")
        return self

    @cached_property
    def headers(self) -> dict[str, str]:
        """A file's or message's name of each column -> the spec's name."""
        return {(col.header or name): name for name, col in self.columns.items()}

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    @property
    def registered_model(self) -> str:
        return self.model_name or self.name

    @property
    def target_column(self) -> str | None:
        return self.target.column if self.target else None

    @cached_property
    def feature_columns(self) -> list[str]:
        if self.features is not None:
            return list(self.features)
        return [c for c in self.columns if c not in (self.id_column, self.target_column)]

    @cached_property
    def required_columns(self) -> list[str]:
        """Columns a file must have; the target may be absent (unlabelled files)."""
        return [
            name
            for name, col in self.columns.items()
            if col.required and name != self.target_column
        ]

    @cached_property
    def numeric_features(self) -> list[str]:
        return [c for c in self.feature_columns if self.columns[c].type in ("integer", "float")]

    @cached_property
    def categorical_features(self) -> list[str]:
        return [c for c in self.feature_columns if self.columns[c].type in ("category", "boolean")]

    @cached_property
    def string_features(self) -> list[str]:
        return [c for c in self.feature_columns if self.columns[c].type == "string"]

    @cached_property
    def contract_hash(self) -> str:
        """SHA-256 of what a model's inputs and outputs mean: the feature columns with
        their rules (not descriptions, reason texts or demo hints), their order, and the
        labels. Two models are comparable, and one may replace the other, only when it is
        equal."""
        exclude = {"description", "reason", "demo"}
        contract = {
            "features": [
                [name, self.columns[name].model_dump(mode="json", exclude=exclude)]
                for name in self.feature_columns
            ],
            "id": self.id_column,
            "target": self.target.model_dump(mode="json", exclude={"demo_intercept"})
            if self.target
            else None,
        }
        return hashlib.sha256(json.dumps(contract, sort_keys=True).encode()).hexdigest()

    @cached_property
    def fingerprint(self) -> str:
        """A stable SHA-256 of the spec's content (not its formatting)."""
        canonical = self.model_dump_json(exclude_none=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _format_errors(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "<root>"
        parts.append(f"{loc}: {item['msg']}")
    return "; ".join(parts)


def parse_spec(data: Any, source: str = "<spec>") -> DatasetSpec:
    """Validate a mapping into a DatasetSpec, naming the bad key on error."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a dataset spec must be a mapping at the top level")
    try:
        return DatasetSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(f"{source}: invalid dataset spec: {_format_errors(err)}") from err


class _Word(str):
    """A YAML 1.1 boolean word (yes/no/on/off) kept as written, so the loader can tell
    `values: [yes, no]` (almost surely meant as text) from `nullable: no`."""


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_bool(loader: yaml.SafeLoader, node: yaml.Node) -> bool | _Word:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return _Word(text)


_StrictLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
BOOLEAN_KEYS = frozenset({"nullable", "required", "case_insensitive"})


def _resolve_words(data: Any, source: str, where: str = "") -> Any:
    """Turn yes/no into booleans under boolean keys; anywhere else they are an error."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            at = f"{where}.{key}" if where else str(key)
            if isinstance(key, bool | _Word):
                raise SpecError(
                    f'{source}: {at}: the key {key} is read by YAML as a boolean; quote it: "{key}"'
                )
            if isinstance(value, _Word):
                if key not in BOOLEAN_KEYS:
                    raise SpecError(
                        f'{source}: {at}: {value} is read by YAML as a boolean; quote it: "{value}"'
                    )
                value = value.lower() in ("yes", "on")
            out[key] = _resolve_words(value, source, at)
        return out
    if isinstance(data, list):
        for i, item in enumerate(data):
            if isinstance(item, _Word):
                raise SpecError(
                    f"{source}: {where}[{i}]: {item} is read by YAML as a boolean; quote it: "
                    f'"{item}"'
                )
        return [_resolve_words(item, source, f"{where}[{i}]") for i, item in enumerate(data)]
    return data


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file read strictly: yes/no/on/off only count as booleans where one is meant."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(f"{path}: cannot read {what}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: {what} is not UTF-8 text") from err
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from err
    return _resolve_words(data, str(path))


def load_spec(path: Path | str) -> DatasetSpec:
    """Read and validate a YAML dataset spec."""
    path = Path(path)
    return parse_spec(read_yaml(path, "dataset spec"), str(path))
