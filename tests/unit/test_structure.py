"""The codebase's own rules: where errors, environment reads and column rules live, how
long a function may be, what training may import, and the two typed hand-offs."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import pytest

import mlcycle
from mlcycle import errors
from mlcycle.bundle import ServingMeta, read_meta, write_bundle
from mlcycle.monitor.report import MonitorReport

SRC = Path(mlcycle.__file__).parent
MODULES = sorted(SRC.rglob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def test_no_function_is_over_80_lines() -> None:
    long = [
        f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
        for path in MODULES
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > 80
    ]
    assert long == []


def test_settings_is_the_only_reader_of_the_environment() -> None:
    readers = []
    for path in MODULES:
        if path == SRC / "config.py":
            continue
        for node in ast.walk(_tree(path)):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                readers.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert readers == []


def test_training_imports_nothing_from_serving() -> None:
    found = []
    for path in (SRC / "train").rglob("*.py"):
        for node in ast.walk(_tree(path)):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            found += [f"{path.name}: {n}" for n in names if n.startswith("mlcycle.serve")]
    assert found == []


def _all_modules() -> list[str]:
    names = [mlcycle.__name__]
    for info in pkgutil.walk_packages(mlcycle.__path__, prefix="mlcycle."):
        if info.name.endswith("__main__") or info.name == "mlcycle.train.pyfunc_model":
            continue  # runs the CLI / registers an MLflow model when imported
        names.append(info.name)
    return names


def test_every_error_a_user_can_act_on_lives_in_errors_with_its_codes() -> None:
    elsewhere = []
    for name in _all_modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, errors.MlcycleError)
                and obj.__module__ != errors.__name__
            ):
                elsewhere.append(f"{obj.__module__}.{obj.__name__}")
    assert elsewhere == []
    for obj in vars(errors).values():
        if inspect.isclass(obj) and issubclass(obj, errors.MlcycleError):
            assert obj.exit_code in (1, 2), obj
            assert 400 <= obj.http_status < 600, obj
            assert obj.__name__ in (errors.__doc__ or "") or obj is errors.MlcycleError, obj


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.BodyTooLarge("body larger than 10 bytes"), 413),
        (errors.NotAuthenticated("missing or invalid API key"), 401),
        (errors.NoModelLoaded("no model loaded yet"), 503),
        (errors.NoReport("no monitoring report yet"), 404),
        (errors.StoreUnavailable("store down"), 503),
    ],
)
def test_the_api_answers_each_error_with_its_status(
    error: errors.MlcycleError, status: int
) -> None:
    from mlcycle.serve.core import refusal

    reply = refusal(error, {"x-extra": "1"})
    assert (reply.status, reply.body, reply.headers) == (
        status,
        {"detail": str(error)},
        {"x-extra": "1"},
    )


def test_an_invalid_request_is_answered_with_its_field_errors() -> None:
    from mlcycle.serve.core import refusal

    fields = [{"loc": ["body", "Gender"], "msg": "not one of", "type": "enum"}]
    reply = refusal(errors.InvalidRequest(fields))
    assert (reply.status, reply.body) == (422, {"detail": fields})


def test_the_cli_exits_with_the_errors_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mlcycle.cli import app
    from mlcycle.config import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLCYCLE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    result = CliRunner().invoke(app, ["etl", "--spec", str(bad), "--json"])
    get_settings.cache_clear()
    assert result.exit_code == errors.SpecError.exit_code == 2
    assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "failed"


def test_the_bundle_reads_back_what_it_wrote(tmp_path: Path) -> None:
    meta = ServingMeta(
        runtime="onnx",
        numeric=["x"],
        categorical=["c"],
        classes=[0, 1],
        labels={"N": 0, "Y": 1},
        positive="Y",
        spec={"name": "t"},
    )
    write_bundle(tmp_path, meta, graph=b"graph", linear=None, example={"records": []})
    back = read_meta(tmp_path)
    assert back == meta
    assert (back.class_labels, back.positive_index) == (["N", "Y"], 1)
    assert back.servable_problem(has_graph=True) is None
    assert "no ONNX graph" in (back.servable_problem(has_graph=False) or "")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "example.json",
        "model.onnx",
        "serving.json",
    ]


def test_a_stored_report_reads_back_as_the_document_it_was() -> None:
    drift = {
        "psi": 0.3,
        "status": "drift",
        "missing": {"reference": 0.0, "current": 0.1},
        "test": {"name": "chi2", "statistic": 9.0, "p_value": 0.001},
        "unseen": {"share": 0.2, "values": {"Z": 3}},
        "future_key": [1, 2],
    }
    doc = {
        "_id": "abc",
        "model_name": "m",
        "model_version": 3,
        "window": {"rows": 10, "requests": 2},
        "features": {"c": drift},
        "score": {**drift, "unseen": None},
        "verdict": "drift",
        "reasons": ["c drifted"],
    }
    report = MonitorReport.of(doc)
    assert report.model_version == "3" and report.features["c"].unseen is not None
    assert [name for name, _ in report.drift_rows()] == ["c", "(model score)"]
    again = report.document()
    assert again["features"] == doc["features"] and again["_id"] == "abc"
    assert set(again) == set(doc)
