"""The pure prediction core with a fake scorer: body shapes, errors, multiclass answers,
counts and the log entry, without a model file, a server or a store."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
import pytest

from mlcycle.rules.records import MISSING, InvalidRequest, RequestValidator
from mlcycle.serve.core import Outcome, score
from mlcycle.spec import DatasetSpec, parse_spec

SPEC = parse_spec(
    {
        "name": "shapes",
        "id_column": "id",
        "target": {"column": "kind", "labels": {"a": 0, "b": 1, "c": 2}},
        "columns": {
            "id": {"type": "string", "nullable": False},
            "size": {"type": "float", "min": 0},
            "colour": {"type": "category", "values": ["red", "blue"]},
            "kind": {"type": "category", "values": ["a", "b", "c"]},
        },
    }
)


class FakeScorer:
    """Class c's score grows with size around c (a softmax), so answers are predictable."""

    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []

    def proba(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        self.calls.append(feed)
        size = np.nan_to_num(feed["size"].ravel().astype(np.float64), nan=1.0)
        logits = -((size[:, None] - np.array([0.0, 1.0, 2.0])[None, :]) ** 2)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class FakeModel:
    spec: DatasetSpec
    validator: RequestValidator
    scorer: FakeScorer
    class_labels: list[str]
    positive: int | None
    name: str = "shapes-model"
    version: str = "7"


@pytest.fixture
def model() -> FakeModel:
    return FakeModel(
        SPEC, RequestValidator(SPEC, ["size"], ["colour"]), FakeScorer(), ["a", "b", "c"], None
    )


def _score(model: FakeModel, body: object, max_batch: int = 100) -> Outcome:
    return score(orjson.dumps(body), model, max_batch)


def test_one_record_gets_the_top_label_and_every_probability(model: FakeModel) -> None:
    out = _score(model, {"id": "x1", "size": 2.0, "colour": "red"})
    assert out.reply.status == 200
    (pred,) = out.reply.body["predictions"]
    assert pred["id"] == "x1" and pred["label"] == "c"
    assert set(pred["probabilities"]) == {"a", "b", "c"}
    assert pred["probability"] == pred["probabilities"]["c"] == max(pred["probabilities"].values())
    assert abs(sum(pred["probabilities"].values()) - 1) < 1e-5
    assert out.counts == [0, 0, 1]
    assert out.reply.body["model"] == {"name": "shapes-model", "version": "7"}


def test_three_shapes_answer_alike_and_log_one_shape(model: FakeModel) -> None:
    rows = [{"id": "r1", "size": 0.1, "colour": "blue"}, {"id": "r2", "size": None, "colour": None}]
    records = _score(model, {"records": rows})
    columns = _score(model, {"columns": {k: [r[k] for r in rows] for k in rows[0]}})
    assert [p["label"] for p in records.reply.body["predictions"]] == ["a", "b"]
    assert columns.reply.body["predictions"]["label"] == ["a", "b"]
    assert columns.reply.body["predictions"]["probabilities"]["b"] == [
        p["probabilities"]["b"] for p in records.reply.body["predictions"]
    ]
    assert records.log is not None and columns.log is not None
    entry = records.log.body()
    assert entry == columns.log.body()
    assert entry["features"] == {"size": [0.1, None], "colour": ["blue", None]}
    assert entry["ids"] == ["r1", "r2"] and entry["rows"] == 2


def test_binary_probability_is_the_positive_labels(model: FakeModel) -> None:
    model.class_labels, model.positive = ["a", "b", "c"], 0  # positive: column 0
    pred = _score(model, {"size": 2.0})
    assert (
        pred.reply.body["predictions"][0]["probability"]
        == pred.reply.body["predictions"][0]["probabilities"]["a"]
    )


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ([1, 2], ["body"], "model_attributes_type"),
        ({"records": []}, ["body", "records"], "value_error"),
        ({"records": [{}], "x": 1}, ["body"], "value_error"),
        ({"records": [{}] * 101}, ["body", "records"], "too_long"),
        ({"columns": {"size": []}}, ["body", "columns"], "value_error"),
        ({"size": -1}, ["body", "size"], "greater_than_equal"),
        ({"colour": "green"}, ["body", "colour"], "enum"),
        ({"kind": "a"}, ["body", "kind"], "extra_forbidden"),
        ({"records": [{"size": "big"}]}, ["body", "records", 0, "size"], "float_type"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(
    model: FakeModel, body: object, loc: list[object], kind: str
) -> None:
    out = _score(model, body)
    assert out.reply.status == 422
    assert out.log is None and out.counts == []
    detail = out.reply.body["detail"][0]
    assert detail["loc"] == loc and detail["type"] == kind
    assert model.scorer.calls == []  # nothing invalid reaches the model


def test_not_json_and_a_scorer_giving_nan(model: FakeModel) -> None:
    assert score(b"{not json", model, 10).reply.status == 422

    class NanScorer(FakeScorer):
        def proba(self, feed: dict[str, np.ndarray]) -> np.ndarray:
            out = super().proba(feed)
            out[1] = np.nan
            return out

    model.scorer = NanScorer()
    out = _score(model, {"records": [{"size": 1.0}, {"size": 2.0}]})
    assert out.reply.status == 422
    assert out.reply.body["detail"][0]["loc"] == ["body", "records", 1]


def test_no_log_entry_is_built_when_the_log_is_off(model: FakeModel) -> None:
    out = score(orjson.dumps({"records": [{"size": 1.0}]}), model, 10, log=False)
    assert out.reply.status == 200 and out.log is None and out.counts == [0, 1, 0]


def _big_batch(n: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {"id": f"r{i}", "size": (i % 7) / 2, "colour": ["red", "blue"][i % 2]} for i in range(n)
    ]
    rows[3] = {"id": "r3", "colour": "blue"}  # size left out: null
    rows[4] = {"id": "r4", "size": None, "colour": "red"}
    return rows


def test_a_large_record_batch_decoded_into_typed_rows_answers_as_the_dict_path(
    model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlcycle.serve import core

    body = {"records": _big_batch(2_000)}
    assert len(orjson.dumps(body)) > core.TYPED_BYTES
    typed = _score(model, body, max_batch=5_000)
    decoded = model.validator.decode_records(orjson.dumps(body))
    assert decoded is not None and decoded["size"][3] is None
    monkeypatch.setattr(core, "TYPED_BYTES", 10**9)  # the dict path only
    plain = _score(model, body, max_batch=5_000)
    assert typed.reply.status == plain.reply.status == 200
    assert typed.reply.body == plain.reply.body
    assert typed.log is not None and plain.log is not None
    assert typed.log.body() == plain.log.body()


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        (lambda rows: rows[10].update(weight=3), ["body", "records", 10, "weight"]),
        (lambda rows: rows.__setitem__(11, ["r11", 1.0]), ["body", "records", 11]),
        (lambda rows: rows[12].update(size=-1), ["body", "records", 12, "size"]),
        (lambda rows: rows[13].update(colour="green"), ["body", "records", 13, "colour"]),
    ],
)
def test_a_large_batch_with_a_bad_record_is_422_naming_it(
    model: FakeModel, change: object, loc: list[object]
) -> None:
    rows = _big_batch(2_000)
    change(rows)  # type: ignore[operator]
    out = _score(model, {"records": rows}, max_batch=5_000)
    assert out.reply.status == 422
    assert out.reply.body["detail"][0]["loc"] == loc


def test_a_large_batch_over_the_row_limit_or_with_more_keys_is_refused(model: FakeModel) -> None:
    rows = _big_batch(2_000)
    over = _score(model, {"records": rows}, max_batch=1_000)
    assert over.reply.status == 422 and over.reply.body["detail"][0]["type"] == "too_long"
    extra = _score(model, {"records": rows, "more": 1}, max_batch=5_000)
    assert extra.reply.status == 422 and "nothing else" in extra.reply.body["detail"][0]["msg"]


def test_a_large_batch_with_other_spellings_answers_as_the_canonical_one(
    model: FakeModel,
) -> None:
    """The typed decoding takes categories in their canonical spelling only; a batch with
    another spelling goes the dict path, which folds it, and answers alike."""
    canonical = _big_batch(2_000)
    spelled = [dict(r) for r in canonical]
    spelled[7]["colour"] = " RED "  # red, spelled as a person might
    canonical[7]["colour"] = "red"
    assert model.validator.decode_records(orjson.dumps({"records": spelled})) is None
    assert model.validator.decode_records(orjson.dumps({"records": canonical})) is not None
    a = _score(model, {"records": canonical}, max_batch=5_000)
    b = _score(model, {"records": spelled}, max_batch=5_000)
    assert a.reply.status == b.reply.status == 200
    assert a.reply.body == b.reply.body


def test_the_log_stores_canonical_values_and_null_for_missing_ones() -> None:
    from mlcycle.serve.core import canonical_columns

    feed = {
        "size": np.array([[1.5], [np.nan], [2.0]]),
        "full": np.array([[1.0], [2.0], [3.0]]),
        "small": np.array([[0.5], [np.nan], [0.25]], dtype=np.float32),
        "colour": np.array([["red"], [MISSING], ["blue"]], dtype=object),
        "shape": np.array([["a"], ["b"], ["c"]], dtype=object),
    }
    out = canonical_columns(feed)
    assert out == {
        "size": [1.5, None, 2.0],
        "full": [1.0, 2.0, 3.0],
        "small": [0.5, None, 0.25],
        "colour": ["red", None, "blue"],
        "shape": ["a", "b", "c"],
    }
    assert all(type(v) is float for v in out["full"] + [out["size"][0], out["small"][2]])
    assert feed["colour"][1, 0] == MISSING  # the request's own arrays are left alone
    one = canonical_columns({k: v[1:2] for k, v in feed.items()})
    assert one == {"size": [None], "full": [2.0], "small": [None], "colour": [None], "shape": ["b"]}


class PlainScorer(FakeScorer):
    """FakeScorer with the plain-Python path for one record (`Scorer.one`)."""

    def __init__(self) -> None:
        super().__init__()
        self.ones: list[dict[str, object]] = []

    def one(self, row: dict[str, object]) -> list[float] | None:
        self.ones.append(row)
        return [float(p) for p in self.proba({"size": np.array([[row["size"]]])})[0]]


@pytest.mark.parametrize(
    "record",
    [
        {"id": "x1", "size": 2.0, "colour": "red"},
        {"id": "x2", "size": None, "colour": None},
        {"size": 0.4},
        {"id": "x3", "size": 1, "colour": "blue"},
    ],
)
def test_one_record_in_plain_python_answers_and_logs_as_the_array_path(
    model: FakeModel, record: dict[str, object]
) -> None:
    from mlcycle.serve.service import Pending

    arrays = _score(model, record)
    model.scorer = PlainScorer()
    plain = _score(model, record)
    assert model.scorer.ones and not model.scorer.calls[1:]  # scored through `one`
    assert plain.reply.status == arrays.reply.status == 200
    assert plain.reply.body == arrays.reply.body and plain.counts == arrays.counts
    assert plain.log is not None and arrays.log is not None
    docs = [Pending(1, "r", "m", "7", 0.1, o.log).document() for o in (plain, arrays)]
    docs[1]["_id"] = docs[0]["_id"]
    assert docs[0] == docs[1]


def test_one_record_not_plainly_valid_takes_the_checks_that_word_errors(
    model: FakeModel,
) -> None:
    model.scorer = PlainScorer()
    out = _score(model, {"size": "2.5", "colour": " RED "})  # text number, other spelling
    assert out.reply.status == 200 and model.scorer.ones == []
    assert out.reply.body["predictions"][0]["label"] == "c"
    bad = _score(model, {"size": -1.0})
    assert bad.reply.status == 422 and model.scorer.ones == []


def test_one_record_given_a_nan_score_is_422(model: FakeModel) -> None:
    class NanOne(PlainScorer):
        def one(self, row: dict[str, object]) -> list[float] | None:
            return [float("nan"), 0.5, 0.5]

    model.scorer = NanOne()
    out = _score(model, {"size": 1.0})
    assert out.reply.status == 422 and out.log is None
    assert out.reply.body["detail"][0]["loc"] == ["body", "records", 0]


def _binary_spec(name: str, id_pattern: str, columns: dict[str, object]) -> DatasetSpec:
    """A spec with an id of `id_pattern`, a yes/no target `y` and `columns`."""
    return parse_spec(
        {
            "name": name,
            "id_column": "id",
            "target": {"column": "y", "labels": {"no": 0, "yes": 1}, "positive": "yes"},
            "columns": {
                "id": {"type": "string", "nullable": False, "pattern": id_pattern},
                "y": {"type": "category", "values": ["no", "yes"]},
                **columns,
            },
        }
    )


RICH = _binary_spec(
    "rich",
    r"^[A-Z]{2}\d+$",
    {
        "size": {"type": "float", "min": 0, "max": 100},
        "count": {"type": "integer", "min": 0, "nullable": False},
        "level": {"type": "integer", "values": [1, 2, 3]},
        "colour": {"type": "category", "values": ["red", "blue"], "nullable": False},
        "shade": {"type": "category", "values": ["dark", "light"]},
        "flag": {"type": "boolean"},
    },
)


def _rich_batch(n: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"AB{i}",
            "size": (i % 9) * 1.5 if i % 5 else None,
            "count": i % 4,
            "level": [1, 2, 3, None][i % 4],
            "colour": ["red", "blue"][i % 2],
            "shade": ["dark", "light", None][i % 3],
            "flag": [True, False, None][i % 3],
        }
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "change",
    [
        None,
        {"size": -0.5},  # below the bound
        {"size": 1e300},  # beyond the bound
        {"count": 2.5},  # not whole
        {"count": 3.0},  # whole, written as a float
        {"count": None},  # required
        {"level": 4},  # not listed
        {"colour": None},  # not nullable
        {"colour": "Blue"},  # another spelling
        {"shade": "grey"},
        {"shade": "NA"},  # a null word
        {"flag": "yes"},
        {"id": "ab1"},  # not the pattern
        {"id": "AB1\n"},
        {"id": 17},
        {"size": "12.5"},  # a number as text
        {"size": True},
    ],
)
def test_the_typed_decoding_of_a_large_batch_agrees_with_the_dict_path(
    change: dict[str, object] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlcycle.serve import core

    numeric, categorical = ["size", "count", "level"], ["colour", "shade", "flag"]
    model = FakeModel(
        RICH, RequestValidator(RICH, numeric, categorical), FakeScorer(), ["a", "b", "c"], None
    )
    rows = _rich_batch(1_500)
    rows[3].pop("shade")  # left out: null
    if change is not None:
        rows[700].update(change)
    body = orjson.dumps({"records": rows})
    assert len(body) > core.TYPED_BYTES
    typed = score(body, model, 5_000)
    monkeypatch.setattr(core, "TYPED_BYTES", 10**9)  # the dict path only
    plain = score(body, model, 5_000)
    assert typed.reply.status == plain.reply.status
    assert typed.reply.body == plain.reply.body
    if change is None:
        assert model.validator.decode_records(body) is not None  # typed indeed
        assert typed.reply.status == 200
        assert typed.log is not None and plain.log is not None
        assert typed.log.body() == plain.log.body()
    else:
        assert typed.reply.status in (200, 422)
        if typed.reply.status == 422:
            assert typed.reply.body["detail"][0]["loc"][:3] == ["body", "records", 700]


def test_an_id_pattern_with_leading_flags_still_decodes_typed_batches() -> None:
    spec = _binary_spec("flags", r"(?i)^ab\d+$", {"size": {"type": "float"}})
    validator = RequestValidator(spec, ["size"], [])
    rows = [{"id": f"Ab{i}", "size": float(i)} for i in range(2_000)]
    columns = validator.decode_records(orjson.dumps({"records": rows}))
    assert columns is not None
    feed = validator.validate_decoded(columns, len(rows))
    assert feed["size"][5, 0] == 5.0
    bad = [*rows, {"id": "zz", "size": 1.0}]
    columns = validator.decode_records(orjson.dumps({"records": bad}))
    assert columns is not None  # the pattern is left to the checks, which refuse it
    with pytest.raises(InvalidRequest):
        validator.validate_decoded(columns, len(bad))


def test_a_large_batch_runs_with_the_collector_paused_and_restored() -> None:
    import gc

    from mlcycle.serve.asgi import collector_paused

    assert gc.isenabled()
    assert collector_paused(gc.isenabled) is False
    assert gc.isenabled()

    def boom() -> None:
        raise RuntimeError("scoring failed")

    with pytest.raises(RuntimeError):
        collector_paused(boom)
    assert gc.isenabled()  # restored after a failure too
    gc.disable()
    try:
        collector_paused(gc.isenabled)
        assert not gc.isenabled()  # paused by someone else: left paused
    finally:
        gc.enable()


def test_the_service_has_the_log_step_aside_while_a_large_batch_is_scored(
    model: FakeModel,
) -> None:
    """Large bodies are scored inside the log's `busy` (its writer holds back); small
    ones are not; both are logged."""
    import contextlib

    from mlcycle.serve.security import KeyRing
    from mlcycle.serve.service import LARGE_BATCH_BYTES, PredictService

    class Log:
        def __init__(self) -> None:
            self.depth = 0
            self.scored_busy: list[bool] = []
            self.rows: list[int] = []

        @contextlib.contextmanager
        def busy(self):  # type: ignore[no-untyped-def]
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1

        def submit(self, docs, nbytes: int = 0, collection: str | None = None) -> None:  # type: ignore[no-untyped-def]
            self.rows += [d.part.rows for d in docs]

    log = Log()

    class Watching(FakeScorer):
        def proba(self, feed: dict[str, np.ndarray]) -> np.ndarray:
            log.scored_busy.append(log.depth > 0)
            return super().proba(feed)

    model.scorer = Watching()
    service = PredictService(KeyRing([]), lambda: model, 10**8, 10**6, log=lambda: log)  # type: ignore[arg-type]
    headers = {"content-type": "application/json"}
    small = orjson.dumps({"records": [{"id": "a", "size": 1.0, "colour": "red"}] * 40})
    n = LARGE_BATCH_BYTES // 30
    large = orjson.dumps({"records": [{"id": "a", "size": 1.0, "colour": "red"}] * n})
    assert len(small) < LARGE_BATCH_BYTES < len(large)
    assert service.handle(small, headers).status == 200
    assert service.handle(large, headers).status == 200
    assert log.scored_busy == [False, True]
    assert log.rows == [40, n] and log.depth == 0


def test_the_shadow_scores_queued_singles_in_one_call_and_answers_each_as_score_does(
    model: FakeModel,
) -> None:
    from mlcycle.serve.shadow import score_many

    bodies = [
        orjson.dumps({"id": "s1", "size": 0.2, "colour": "red"}),
        orjson.dumps({"records": [{"id": "b1", "size": 1.5, "colour": "blue"}]}),
        b"{not json",
        orjson.dumps({"id": "s2", "size": -4, "colour": "red"}),  # below min: 422
        orjson.dumps({"id": "s3", "size": None, "colour": "blue"}),
        orjson.dumps({"id": "s4", "size": 2.4, "colour": "red"}),
    ]
    alone = [score(b, model, 100) for b in bodies]
    model.scorer.calls.clear()
    together = score_many(bodies, model, 100)
    # the three plain singles share one call; the batch body is scored on its own
    assert sorted(len(next(iter(c.values()))) for c in model.scorer.calls) == [1, 3]
    assert [o.reply.status for o in together] == [o.reply.status for o in alone]
    assert [o.reply.status for o in together] == [200, 200, 422, 422, 200, 200]
    for a, t in zip(alone, together, strict=True):
        assert t.reply.body == a.reply.body
        assert t.counts == a.counts
        assert (t.log is None) == (a.log is None)
        if a.log is not None and t.log is not None:
            assert t.log.body() == a.log.body()


def test_a_model_without_an_exact_explanation_is_a_422_naming_why(model: FakeModel) -> None:
    from mlcycle.serve.explain import explain

    out = explain(orjson.dumps({"id": "x", "size": 1.0, "colour": "red"}), model, 100)
    assert not isinstance(out, dict) and out.status == 422
    (error,) = out.body["detail"]
    assert error["loc"] == ["query", "explain"] and "linear model" in error["msg"]


def test_rows_the_etl_rules_passed_feed_the_model_as_the_api_validator_feeds_it() -> None:
    """Batch scoring's array path (`checked_feed`, from the ETL's typed valid rows) gives
    the very inputs `validate_columns` gives for the same rows sent as JSON values,
    missing values, other spellings and booleans included; a category the rules refuse
    is still refused."""
    import pandas as pd

    from mlcycle.rules.frames import validate_chunk
    from mlcycle.serve.batch import _typed_columns

    numeric, categorical = ["size", "count", "level"], ["colour", "shade", "flag"]
    model = FakeModel(
        RICH, RequestValidator(RICH, numeric, categorical), FakeScorer(), ["a", "b", "c"], None
    )
    rows = _rich_batch(300)
    rows[7]["colour"] = " BLUE "  # another spelling, made canonical by the ETL's rules
    rows[8]["flag"] = "yes"
    raw = pd.DataFrame(
        [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows], dtype=str
    )
    valid = validate_chunk(raw, RICH).valid
    assert len(valid) == len(rows)
    got = model.validator.checked_feed(*_typed_columns(valid, model), len(valid))  # type: ignore[arg-type]
    columns = {k: [r.get(k) for r in rows] for k in rows[0]}
    want = model.validator.validate_columns(columns, len(rows))
    assert got.keys() == want.keys()
    for name in numeric:
        np.testing.assert_array_equal(got[name], want[name])
    for name in categorical:
        assert got[name].ravel().tolist() == want[name].ravel().tolist(), name
    with pytest.raises(InvalidRequest):
        model.validator.checked_feed({}, {"colour": (np.zeros(2, np.int64), ["green"])}, 2)
