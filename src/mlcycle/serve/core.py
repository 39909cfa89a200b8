"""The prediction core: a request body in, a reply and a log entry out.

Pure: no I/O, no framework, no clock. `score` is body bytes -> JSON -> the body's shape
(one record, `{"records": [...]}`, `{"columns": {...}}`) -> validated model columns ->
class probabilities -> the answer. `Servable` is all it needs of a model, so it is
unit-tested with a fake scorer; the ASGI fast path and the tests drive the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson

from mlcycle.errors import InvalidRequest, MlcycleError
from mlcycle.rules.records import MISSING, RequestValidator
from mlcycle.spec import DatasetSpec


class Scorer(Protocol):
    def proba(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Validated input columns -> probabilities, one column per class (n x K)."""
        ...

    def one(self, row: dict[str, Any]) -> list[float] | None:
        """One validated record (`RequestValidator.plain_row`) -> its K probabilities in
        plain Python, or None when the scorer has no such path (then `proba`)."""
        ...


class Servable(Protocol):
    """What the core needs of a loaded model."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def spec(self) -> DatasetSpec: ...
    @property
    def validator(self) -> RequestValidator: ...
    @property
    def scorer(self) -> Scorer: ...
    @property
    def class_labels(self) -> list[str]: ...
    @property
    def positive(self) -> int | None: ...


class Reply:
    """A response before encoding: status, JSON body, extra headers."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}

    def encoded(self) -> bytes:
        return orjson.dumps(self.body, option=orjson.OPT_SERIALIZE_NUMPY)

    def raw_headers(self, payload: bytes) -> list[tuple[bytes, bytes]]:
        raw = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        return raw + [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]


class LogPart:
    """What the prediction log needs of a scored request, kept as the request left it:
    the log's writer thread turns it into the stored entry (`body`), off the request's
    path, for a whole batch of requests at a time."""

    __slots__ = ("columns", "feed", "ids", "labels", "logged", "names", "one", "rounded", "rows")

    def __init__(
        self,
        rows: int,
        ids: list[Any],
        feed: dict[str, np.ndarray],
        labels: list[str],
        rounded: list[float],
        columns: list[list[float]],
        names: list[str],
        one: dict[str, Any] | None = None,
        logged: dict[str, list[Any]] | None = None,
    ) -> None:
        """`columns`: the rounded probabilities, one list a class; `one`: a single
        record's inputs by name (`plain_row`), in place of `feed`; `logged`: features
        stored as they are (`Parsed.logged`)."""
        self.rows, self.ids, self.feed, self.labels = rows, ids, feed, labels
        self.rounded, self.columns, self.names, self.one = rounded, columns, names, one
        self.logged = logged

    def body(self) -> dict[str, Any]:
        """The entry's model part: inputs as one canonical list a feature (whatever the
        request's shape), labels, probabilities, and one list a class."""
        return {
            "rows": self.rows,
            "ids": self.ids,
            "features": (
                canonical_row(self.one)
                if self.one is not None
                else canonical_columns(self.feed, self.logged)
            ),
            "labels": self.labels,
            "probabilities": self.rounded,
            "class_probabilities": dict(zip(self.names, self.columns, strict=True)),
        }


@dataclass
class Outcome:
    """A scored request: the reply, what the log needs (None when nothing was scored)
    and the number of predictions per class (for metrics)."""

    reply: Reply
    log: LogPart | None = None
    counts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Parsed:
    feed: dict[str, np.ndarray]
    ids: list[Any]
    rows: int
    shape: str  # single | records | columns
    logged: dict[str, list[Any]] = field(default_factory=dict)
    """Features whose decoded lists the log can store as they are (canonical values,
    null where missing): no second pass over their arrays."""


@dataclass(frozen=True)
class ParsedOne:
    """One record that passed the plain checks, as its model inputs by name: scored
    without arrays when the scorer can (`Scorer.one`)."""

    row: dict[str, Any]
    id: Any


def refusal(err: MlcycleError, headers: dict[str, str] | None = None) -> Reply:
    """The API's one mapping from an error to its answer: the error's HTTP status
    (`mlcycle.errors`), its message as the detail (a list of field errors for
    InvalidRequest)."""
    detail = err.errors if isinstance(err, InvalidRequest) else str(err)
    return Reply(err.http_status, {"detail": detail}, headers)


def invalid(msg: str, loc: list[Any] | None = None, kind: str = "value_error") -> Reply:
    return refusal(InvalidRequest([{"loc": loc or ["body"], "msg": msg, "type": kind}]))


def parse(payload: Any, model: Servable, max_batch: int) -> Parsed | ParsedOne | Reply:
    """A decoded body -> validated model inputs, or the 422 to answer."""
    if not isinstance(payload, dict):
        return invalid("expected a JSON object", kind="model_attributes_type")
    validator = model.validator
    id_column = model.spec.id_column
    if "records" not in payload and "columns" not in payload:
        row = validator.plain_row(payload)
        if row is not None:
            return ParsedOne(row, payload.get(id_column))
        feed = validator.validate([payload], single=True)
        return Parsed(feed, [payload.get(id_column)], 1, "single")
    if len(payload) != 1:
        return invalid('a batch is {"records": [...]} or {"columns": {...}} and nothing else')
    if "records" in payload:
        records = payload["records"]
        if not isinstance(records, list) or not records:
            return invalid("records must be a non-empty list", ["body", "records"])
        if len(records) > max_batch:  # the schema's maxItems
            return invalid(
                f"batch of {len(records)} records exceeds the limit of {max_batch}",
                ["body", "records"],
                "too_long",
            )
        feed = validator.validate(records, single=False)
        return Parsed(feed, [r.get(id_column) for r in records], len(records), "records")
    columns = payload["columns"]
    if not isinstance(columns, dict) or not columns:
        return invalid("columns must be a non-empty object of lists", ["body", "columns"])
    first = next(iter(columns.values()))
    n = len(first) if isinstance(first, list) else 0
    if n == 0:
        return invalid("columns must hold non-empty lists", ["body", "columns"])
    if n > max_batch:
        return invalid(
            f"batch of {n} rows exceeds the limit of {max_batch}", ["body", "columns"], "too_long"
        )
    feed = validator.validate_columns(columns, n)
    return Parsed(feed, columns.get(id_column) or [None] * n, n, "columns")


TYPED_BYTES = 16 * 1024
"""Record batches larger than this are decoded into typed rows (`decode_records`)."""


def typed_records(body: bytes, model: Servable, max_batch: int) -> Parsed | None:
    """A large `{"records": [...]}` batch without dicts, or None (then `parse`)."""
    if len(body) < TYPED_BYTES or b'"records"' not in body[:64]:
        return None
    columns = model.validator.decode_records(body)
    if columns is None:
        return None
    ids = columns[model.spec.id_column]
    n = len(ids)
    if n > max_batch:
        return None  # `parse` words the 422
    feed = model.validator.validate_decoded(columns, n)
    return Parsed(feed, ids, n, "records", model.validator.canonical_lists(columns))


def score(body: bytes, model: Servable, max_batch: int, log: bool = True) -> Outcome:
    """The whole core: body bytes -> Outcome (200 with predictions, or a 422); the log
    entry is built only when `log` (the prediction log is on)."""
    try:
        parsed: Parsed | ParsedOne | Reply | None = typed_records(body, model, max_batch)
        if parsed is None:
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as err:
                return Outcome(invalid(f"invalid JSON: {err}", kind="json_invalid"))
            parsed = parse(payload, model, max_batch)
        if isinstance(parsed, Reply):
            return Outcome(parsed)
        if isinstance(parsed, ParsedOne):
            one = getattr(model.scorer, "one", None)
            scores = one(parsed.row) if one is not None else None
            if scores is not None:
                if not all(map(math.isfinite, scores)):
                    return Outcome(unscorable([0]))
                return answer_one(parsed, scores, model, log)
            feed = model.validator.row_feed([parsed.row])
            parsed = Parsed(feed, [parsed.id], 1, "single")
        probs = model.scorer.proba(parsed.feed)
    except InvalidRequest as err:
        return Outcome(refusal(err))
    except RecursionError:  # any value nested too deeply for a checker, at any depth
        return Outcome(invalid("a value is nested too deeply", kind="json_invalid"))
    finite = np.isfinite(probs).all(axis=1)
    if not finite.all():  # defensive: never answer a NaN score
        return Outcome(unscorable(np.flatnonzero(~finite)[:50].tolist()))
    return answer(parsed, probs, model, log)


def unscorable(rows: list[int]) -> Reply:
    return refusal(
        InvalidRequest(
            [
                {
                    "loc": ["body", "records", i],
                    "msg": "the model cannot score this record",
                    "type": "value_error",
                }
                for i in rows
            ]
        )
    )


def answer_one(parsed: ParsedOne, scores: list[float], model: Servable, log: bool) -> Outcome:
    """`answer` for one record scored in plain Python: the same reply, entry and counts
    (rounded as numpy rounds: scaled, to the nearest even, scaled back)."""
    names = model.class_labels
    best = max(range(len(scores)), key=scores.__getitem__)  # the first of equal tops
    table = [round(p * 1e6) / 1e6 for p in scores]
    positive = model.positive
    probability = table[best if positive is None else positive]
    label = names[best]
    probabilities = dict(zip(names, table, strict=True))
    ids = [parsed.id]
    body = {
        "model": {"name": model.name, "version": model.version},
        "predictions": [
            {
                "id": parsed.id,
                "label": label,
                "probability": probability,
                "probabilities": probabilities,
            }
        ],
    }
    columns = [[p] for p in table]
    entry = LogPart(1, ids, {}, [label], [probability], columns, names, parsed.row) if log else None
    counts = [0] * len(names)
    counts[best] = 1
    return Outcome(Reply(200, body, {"x-model-version": model.version}), entry, counts)


def answer(parsed: Parsed, probs: np.ndarray, model: Servable, log: bool = True) -> Outcome:
    """Probabilities -> predictions in the request's shape, the log entry and counts."""
    names = model.class_labels
    best = probs.argmax(axis=1)
    labels = np.asarray(names, dtype=object)[best].tolist()
    table = np.round(probs, 6)
    columns = table.T.tolist()  # one list of rounded probabilities a class
    positive = model.positive
    if positive is not None:
        rounded = columns[positive]
    else:  # the top class's probability (rounding keeps the order)
        rounded = np.take_along_axis(table, best[:, None], axis=1).ravel().tolist()
    ids = parsed.ids
    if parsed.shape == "columns":
        predictions: Any = {
            "id": ids,
            "label": labels,
            "probability": rounded,
            "probabilities": dict(zip(names, columns, strict=True)),
        }
    elif len(names) == 2:  # the common case, built without a zip per record
        a, b = names
        predictions = [
            {"id": i, "label": lab, "probability": p, "probabilities": {a: x, b: y}}
            for i, lab, p, x, y in zip(ids, labels, rounded, *columns, strict=True)
        ]
    else:
        predictions = [
            {
                "id": i,
                "label": lab,
                "probability": p,
                "probabilities": dict(zip(names, row, strict=True)),
            }
            for i, lab, p, row in zip(ids, labels, rounded, zip(*columns, strict=True), strict=True)
        ]
    body = {"model": {"name": model.name, "version": model.version}, "predictions": predictions}
    entry = (
        LogPart(parsed.rows, ids, parsed.feed, labels, rounded, columns, names, None, parsed.logged)
        if log
        else None
    )
    counts = np.bincount(best, minlength=len(names)).tolist()
    return Outcome(Reply(200, body, {"x-model-version": model.version}), entry, counts)


def canonical_row(row: dict[str, Any]) -> dict[str, list[Any]]:
    """`canonical_columns` for one record's inputs by name (`plain_row`)."""
    return {name: [None if v != v or v == MISSING else v] for name, v in row.items()}


def canonical_columns(
    feed: dict[str, np.ndarray], logged: dict[str, list[Any]] | None = None
) -> dict[str, list[Any]]:
    """The validated model inputs as the prediction log stores them: one list per
    feature, canonical values, null where missing (whatever the request body's shape).
    Lists in `logged` are such already and are taken as they are."""
    if logged:
        rest = canonical_columns({k: v for k, v in feed.items() if k not in logged})
        return {name: logged[name] if name in logged else rest[name] for name in feed}
    out: dict[str, list[Any]] = {}
    if len(next(iter(feed.values()), ())) == 1:  # one record: no array calls
        for name, column in feed.items():
            v = column.item()
            out[name] = [None if v != v or v == MISSING else v]
        return out
    for name, column in feed.items():  # masks in C: no Python loop a value
        flat = column.ravel()
        if flat.dtype.kind == "f":
            values = flat.astype(np.float64)
            missing = np.isnan(values)
            cells: np.ndarray = values.astype(object) if missing.any() else values
        else:
            cells = flat
            missing = flat == MISSING
            if missing.any():
                cells = flat.copy()
        if cells.dtype == object and missing.any():
            cells[missing] = None
        out[name] = cells.tolist()
    return out
