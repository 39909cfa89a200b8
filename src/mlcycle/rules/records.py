"""The column rules on records (JSON objects, a DataFrame's columns), column-wise and
without pandas: the path of the API's decoder and of the MLflow pyfunc model.

`RequestValidator` turns parsed JSON records into the model's input arrays, or raises
`InvalidRequest` with one entry per bad field (location, message), which the API returns
as 422. The OpenAPI document describes the same rules (`mlcycle.serve.schemas`); requests
are not validated through pydantic because per-record objects cost ~20 µs each, too much
for 10,000-row batches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from functools import partial
from operator import attrgetter, is_not
from typing import Annotated, Any, Literal

import numpy as np
import orjson

from mlcycle.errors import InvalidRequest
from mlcycle.rules.values import (
    MISSING,
    NON_FINITE_PATTERN,
    NUMBER_LIMIT,
    NUMBER_PATTERN,
    value_text,
)
from mlcycle.spec import ColumnSpec, DatasetSpec

MAX_ERRORS = 50
MAX_MAGNITUDE = NUMBER_LIMIT
"""The spec's bound for every number, the same as the ETL's."""


class _Column:
    def __init__(self, name: str, col: ColumnSpec) -> None:
        self.name = name
        self.col = col
        self.numeric = col.type in ("float", "integer")
        self.allowed: set[float] | None = (
            {float(v) for v in col.values} if self.numeric and col.values is not None else None
        )
        self.fold = col.fold
        self.lookup = col.spellings
        # values sent exactly as spelled in the spec (the common case) skip folding
        self.exact: dict[Any, str] = {value_text(v): value_text(v) for v in col.values or []}
        if col.type == "boolean":
            self.exact.update({True: "true", False: "false"})
        if col.nullable and not self.numeric:  # null (or left out): the missing word
            self.exact[None] = MISSING


class RequestValidator:
    """Validates records against the spec's feature columns (plus optional id/target)."""

    def __init__(self, spec: DatasetSpec, numeric: list[str], categorical: list[str]) -> None:
        self.spec = spec
        self.numeric = [_Column(c, spec.columns[c]) for c in numeric]
        self.categorical = [_Column(c, spec.columns[c]) for c in categorical]
        self.allowed_fields = {*numeric, *categorical, spec.id_column}
        self.target = spec.target_column
        self.null_values = frozenset(spec.null_values)
        pattern = spec.columns[spec.id_column].pattern
        self._id_re = re.compile(pattern) if pattern else None
        self._bounds = [_bounds(c) for c in self.numeric]
        self._fields = sorted(self.allowed_fields)
        self._batch_decoder: Any = None
        self._getters: list[tuple[str, attrgetter[Any]]] = []
        self._checked: set[str] = set()

    def decode_records(self, body: bytes) -> dict[str, list[Any]] | None:
        """`{"records": [...]}` decoded from its bytes straight into typed rows (no dict
        a record) and then one list per field (a C-level pass a field), None where a
        record leaves a field out. The decoder checks what the spec's rules allow it to
        (`_decoded_type`); `validate_decoded` then builds the arrays.
        None for any other body (another shape, unknown fields, a record that is not an
        object, a value outside what the decoder checks, not JSON): `validate` then
        decides, folds spellings and words the errors."""
        import msgspec

        if self._batch_decoder is None:
            names = {f"f{i}": name for i, name in enumerate(self._fields)}
            self._getters = [(name, attrgetter(attr)) for attr, name in names.items()]
            fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
            for attr, name in names.items():
                kind, checked, required = self._decoded_type(name)
                fields.append((attr, kind) if required else (attr, kind, None))
                if checked:
                    self._checked.add(name)
            row = msgspec.defstruct(
                "Record", fields, rename=names, forbid_unknown_fields=True, kw_only=True, gc=False
            )
            batch = msgspec.defstruct(
                "RecordBatch",
                [("records", list[row])],  # type: ignore[valid-type]
                forbid_unknown_fields=True,
            )
            self._batch_decoder = msgspec.json.Decoder(batch)
        try:
            rows = self._batch_decoder.decode(body).records
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return None  # a value nested past the interpreter's depth: the JSON path words it
        if not rows:
            return None
        return {name: list(map(attr, rows)) for name, attr in self._getters}

    def _decoded_type(self, name: str) -> tuple[Any, bool, bool]:
        """How the batch decoder reads a field: (type, checked, required). Checked: the
        type holds every rule of the spec for it, so a decoded value needs no other check
        (a number's bounds and wholeness; a category as one of its canonical spellings,
        the same string objects: cheap lookups); null only where the spec allows it, and
        such a field must be present. The id is read as text, its pattern left to the
        checks (msgspec's pattern costs twice theirs). Anything else (booleans,
        categories without listed values, numbers with listed values) is read as
        whatever JSON it holds and checked by `validate_columns`."""
        import msgspec

        if name == self.spec.id_column:
            return str | None, self._id_re is None, False
        for name_, low, high, nullable, whole, values in self._bounds:
            if name_ == name and values is None:
                meta = msgspec.Meta(ge=low, le=high, multiple_of=1 if whole else None)
                number = Annotated[float, meta]
                return (number | None, True, False) if nullable else (number, True, True)
        for c in self.categorical:
            if c.name == name and c.col.type != "boolean" and c.col.values:
                words = Literal[tuple(value_text(v) for v in c.col.values)]  # type: ignore[valid-type]
                return (words | None, True, False) if c.col.nullable else (words, True, True)
        return Any, False, False

    def canonical_lists(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The features of `decode_records`' columns that hold canonical values with
        null where missing (those the decoder checked): as the prediction log stores
        them."""
        return {
            c.name: columns[c.name]
            for c in (*self.numeric, *self.categorical)
            if c.name in self._checked
        }

    def validate_decoded(self, columns: dict[str, list[Any]], n: int) -> dict[str, np.ndarray]:
        """`validate_columns` for `decode_records`' columns: fields the decoder checked
        only become arrays."""
        return self.validate_columns(columns, n, checked=self._checked)

    def validate(self, records: list[Any], single: bool) -> dict[str, np.ndarray]:
        """Validate records (dicts); return the model's input arrays or raise InvalidRequest."""
        if len(records) <= FEW_RECORDS:
            feed = self._plain(records)
            if feed is not None:
                return feed
        if set(map(type, records)) != {dict}:
            bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
            raise InvalidRequest(
                [
                    _err(single, i, None, "each record must be a JSON object", "type_error")
                    for i in bad[:MAX_ERRORS]
                ]
            )
        keys: set[str] = set().union(*records)
        if not keys <= self.allowed_fields:
            errors = [
                _err(single, i, field, self._unknown(field), "extra_forbidden")
                for i, rec in enumerate(records)
                for field in sorted(rec.keys() - self.allowed_fields)
            ]
            raise InvalidRequest(errors[:MAX_ERRORS])
        columns = {name: [rec.get(name) for rec in records] for name in keys}
        return self.validate_columns(columns, len(records), single)

    def plain_row(self, rec: Any) -> dict[str, Any] | None:
        """One record written as the spec spells it (numbers as JSON numbers within their
        bounds, categories in their canonical spelling, no unknown field), checked with
        plain Python: its model inputs by name (numbers as floats, nan where missing;
        categories canonical, MISSING where missing). None for anything else: the column
        rules below then decide, and word the errors."""
        if type(rec) is not dict or not rec.keys() <= self.allowed_fields:
            return None
        ident = rec.get(self.spec.id_column)
        id_re = self._id_re
        if ident is not None and (
            type(ident) is not str or (id_re is not None and not id_re.fullmatch(ident))
        ):
            return None
        row: dict[str, Any] = {}
        for name, low, high, nullable, whole, values in self._bounds:
            v: Any = rec.get(name)
            kind = type(v)
            if kind is float or kind is int:
                x = float(v)
                if not low <= x <= high:  # also false for nan and infinities
                    return None
                if (whole and not x.is_integer()) or (values is not None and x not in values):
                    return None
                row[name] = x
            elif v is None and nullable:
                row[name] = math.nan
            else:
                return None
        for c in self.categorical:
            try:
                hit = c.exact.get(rec.get(c.name))
            except TypeError:  # unhashable
                return None
            if hit is None:
                return None
            row[c.name] = hit
        return row

    def row_feed(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Rows from `plain_row` -> the model's input arrays (one n x 1 array a feature)."""
        feed: dict[str, np.ndarray] = {}
        if self.numeric:
            block = np.array([[r[c.name] for r in rows] for c in self.numeric], np.float64)
            for i, c in enumerate(self.numeric):
                feed[c.name] = block[i].reshape(-1, 1)
        if self.categorical:
            table = np.array([[r[c.name] for r in rows] for c in self.categorical], object)
            for i, c in enumerate(self.categorical):
                feed[c.name] = table[i].reshape(-1, 1)
        return feed

    def _plain(self, records: list[Any]) -> dict[str, np.ndarray] | None:
        """A few records checked one by one with `plain_row`: cheaper than numpy calls
        per column for a handful. None when one of them is not plainly valid."""
        rows = []
        for rec in records:
            row = self.plain_row(rec)
            if row is None:
                return None
            rows.append(row)
        return self.row_feed(rows)

    def validate_columns(
        self,
        columns: dict[str, list[Any]],
        n: int,
        single: bool = False,
        checked: Collection[str] = (),
    ) -> dict[str, np.ndarray]:
        """The same rules on column lists (`{"columns": {...}}` batches, or records above).
        Fields in `checked` hold values a decoder already checked (`decode_records`)."""
        errors: list[dict[str, Any]] = []
        unknown = columns.keys() - self.allowed_fields
        for field in sorted(unknown):
            errors.append(
                {
                    "loc": ["body", "columns", field],
                    "msg": self._unknown(field),
                    "type": "extra_forbidden",
                }
            )
        for name, values in columns.items():
            if not isinstance(values, list) or len(values) != n:
                errors.append(
                    {
                        "loc": ["body", "columns", name],
                        "msg": f"must be a list of {n} values",
                        "type": "list_type",
                    }
                )
        if errors:
            raise InvalidRequest(errors[:MAX_ERRORS])
        none_list = [None] * n
        if self.spec.id_column not in checked:
            self._check_ids(columns.get(self.spec.id_column) or none_list, single, errors)
        feed: dict[str, np.ndarray] = {}
        for c in self.numeric:
            values = columns.get(c.name) or none_list
            if c.name in checked:  # numbers and nulls within the rules: None -> nan
                feed[c.name] = np.array(values, dtype=np.float64).reshape(-1, 1)
            else:
                feed[c.name] = self._numeric(c, values, single, errors)
        for c in self.categorical:
            values = columns.get(c.name) or none_list
            if c.name in checked:  # canonical spellings, null only where allowed
                if None in values:
                    values = [MISSING if v is None else v for v in values]
                feed[c.name] = np.array(values, dtype=object).reshape(-1, 1)
            else:
                feed[c.name] = self._category(c, values, single, errors)
        if errors:
            raise InvalidRequest(errors[:MAX_ERRORS])
        return feed

    def checked_feed(
        self,
        numbers: dict[str, np.ndarray],
        categories: dict[str, tuple[np.ndarray, list[Any]]],
        n: int,
    ) -> dict[str, np.ndarray]:
        """The model's input arrays for rows the ETL's column rules (the same rules, in
        the same words) passed already: a file's valid rows, or the stored ones. Numbers
        come as float64 arrays (nan where missing) and are taken as they are; each
        category column comes as codes into its distinct values (-1: missing), which are
        checked and made canonical here once, by the rules `validate_columns` applies."""
        errors: list[dict[str, Any]] = []
        feed: dict[str, np.ndarray] = {}
        for c in self.numeric:
            values = numbers.get(c.name)
            values = np.full(n, np.nan) if values is None else values
            feed[c.name] = np.asarray(values, dtype=np.float64).reshape(-1, 1)
        for c in self.categorical:
            codes, distinct = categories.get(c.name, (np.full(n, -1, dtype=np.int64), []))
            missing = bool((codes < 0).any())
            canonical = self._category(c, [*distinct, *([None] if missing else [])], False, errors)
            feed[c.name] = canonical.ravel()[codes].reshape(-1, 1)  # -1: the missing entry
        if errors:
            raise InvalidRequest(errors[:MAX_ERRORS])
        return feed

    def _unknown(self, field: str) -> str:
        if field == self.target:
            return "the target (label) column is not an input: leave it out"
        return "unknown field"

    def _check_ids(self, values: list[Any], single: bool, errors: list[dict[str, Any]]) -> None:
        if set(map(type, values)) <= {str, type(None)} and (
            self._id_re is None
            or all(map(self._id_re.fullmatch, filter(partial(is_not, None), values)))
        ):
            return
        for i, ident in enumerate(values):
            if ident is None:
                continue
            if not isinstance(ident, str):
                errors.append(
                    _err(
                        single,
                        i,
                        self.spec.id_column,
                        f"must be a string, got {type(ident).__name__}",
                        "string_type",
                    )
                )
            elif self._id_re is not None and not self._id_re.fullmatch(ident):
                errors.append(
                    _err(
                        single,
                        i,
                        self.spec.id_column,
                        self.spec.columns[self.spec.id_column].msg_pattern(),
                        "string_pattern_mismatch",
                    )
                )

    def _numeric(
        self, c: _Column, values: list[Any], single: bool, errors: list[dict[str, Any]]
    ) -> np.ndarray:
        col = c.col
        if set(map(type, values)) <= _NUMBER_TYPES:  # fast path: numbers and nulls only
            arr = np.array(values, dtype=np.float64)  # None -> nan
            missing = np.isnan(arr)
            bad = np.zeros(len(arr), dtype=bool)
            if not col.nullable:
                bad |= missing
            present = ~missing
            bad |= present & (np.abs(arr) > MAX_MAGNITUDE)
            if col.min is not None:
                bad |= present & (arr < col.min)
            if col.max is not None:
                bad |= present & (arr > col.max)
            if c.allowed is not None:
                bad |= present & ~np.isin(arr, list(c.allowed))
            if col.type == "integer":
                bad |= present & (arr % 1 != 0)
            if not bad.any():
                return arr.reshape(-1, 1)
        out = np.full(len(values), np.nan, dtype=np.float64)
        for i, v in enumerate(values):
            problem, number = self._number(c, v)
            if problem is not None:
                errors.append(_err(single, i, c.name, problem[0], problem[1]))
            elif number is not None:
                out[i] = number
        return out.reshape(-1, 1)

    def _number(self, c: _Column, v: Any) -> tuple[tuple[str, str] | None, float | None]:
        """One value by the spec's rules, in the ETL's order and with its words; numbers
        written as text ("5849", as a CSV has them) are numbers, as in the ETL."""
        col = c.col
        if isinstance(v, str):
            text = v.strip()
            if text in self.null_values:
                v = None
            elif _NUMBER.fullmatch(text):
                v = float(text)
            elif _NON_FINITE.fullmatch(text):
                return (col.msg_not_finite(), "finite_number"), None
            else:
                return (col.msg_not_number(), "float_type"), None
        if v is None:
            return (None if col.nullable else (col.msg_missing(), "missing")), None
        if type(v) is bool or not isinstance(v, int | float):
            return (col.msg_not_number(), "float_type"), None
        x = float(v)
        if not math.isfinite(x):
            return (col.msg_not_finite(), "finite_number"), None
        if abs(x) > MAX_MAGNITUDE:
            return (col.msg_beyond(), "finite_number"), None
        if col.type == "integer" and not x.is_integer():
            return (col.msg_not_whole(), "int_type"), None
        if col.min is not None and x < col.min:
            return (col.msg_below(), "greater_than_equal"), None
        if col.max is not None and x > col.max:
            return (col.msg_above(), "less_than_equal"), None
        if c.allowed is not None and x not in c.allowed:
            return (col.msg_not_allowed(), "enum"), None
        return None, x

    def _category(
        self, c: _Column, values: list[Any], single: bool, errors: list[dict[str, Any]]
    ) -> np.ndarray:
        try:
            found = list(map(c.exact.get, values))  # fast path: canonical spellings
        except TypeError:  # an unhashable value (list, object): check one by one
            found = [None] * len(values)
        if None in found:
            lookup, fold = c.lookup, c.fold
            for i in [i for i, hit in enumerate(found) if hit is None]:
                v = values[i]
                if isinstance(v, str) and v.strip() in self.null_values:
                    v = None
                if v is None:
                    if not c.col.nullable:
                        errors.append(_err(single, i, c.name, c.col.msg_missing(), "missing"))
                    found[i] = MISSING
                    continue
                if isinstance(v, dict | list):  # the ETL reads nested JSON as its text
                    v = orjson.dumps(v).decode()
                hit = lookup.get(fold(value_text(v).strip()))
                if hit is None:
                    message = (
                        c.col.msg_not_boolean()
                        if c.col.type == "boolean"
                        else c.col.msg_not_allowed()
                    )
                    errors.append(_err(single, i, c.name, message, "enum"))
                found[i] = hit or MISSING
        return np.array(found, dtype=object).reshape(-1, 1)


_NUMBER_TYPES = {int, float, type(None)}
FEW_RECORDS = 32
"""Up to this many records, plain Python checks are faster than numpy per column."""


def _bounds(c: _Column) -> tuple[str, float, float, bool, bool, set[float] | None]:
    """A numeric column's rules for the plain path: name, lowest, highest, nullable,
    whole numbers only, allowed values."""
    col = c.col
    low = -MAX_MAGNITUDE if col.min is None else max(col.min, -MAX_MAGNITUDE)
    high = MAX_MAGNITUDE if col.max is None else min(col.max, MAX_MAGNITUDE)
    return c.name, float(low), float(high), col.nullable, col.type == "integer", c.allowed


_NUMBER = re.compile(NUMBER_PATTERN)
_NON_FINITE = re.compile(NON_FINITE_PATTERN, re.IGNORECASE)


def _err(single: bool, i: int, field: str | None, msg: str, kind: str) -> dict[str, Any]:
    loc: list[Any] = ["body"] if single else ["body", "records", i]
    if field is not None:
        loc.append(field)
    return {"loc": loc, "msg": msg, "type": kind}
