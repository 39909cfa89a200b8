"""`mlcycle doctor` (Make `check-env`): is this environment ready, and if not, why."""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mlcycle.config import Settings, redact_uri
from mlcycle.errors import MlcycleError
from mlcycle.spec import DatasetSpec, load_spec


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _check_project(settings: Settings) -> Check:
    project = settings.project
    if project is None:
        return Check("project", True, "none at or above here: the bundled loan example is used")
    return Check("project", True, f"{project.root} (found by its {project.found_by})")


def _check_spec(settings: Settings) -> tuple[Check, DatasetSpec | None]:
    try:
        choice = settings.spec_choice
        spec = load_spec(choice.path)
    except MlcycleError as err:
        return Check("dataset spec", False, str(err), "fix the spec (docs/spec.md)"), None
    return (
        Check(
            "dataset spec",
            True,
            f"{choice.path} ({choice.why}): {spec.name}, {len(spec.columns)} columns, "
            f"model {spec.registered_model}",
        ),
        spec,
    )


def _check_train_config(settings: Settings) -> Check:
    from mlcycle.train.config import load_train_config

    try:
        choice = settings.train_config_choice()
        cfg = load_train_config(choice.path)
    except MlcycleError as err:
        return Check("training config", False, str(err), "fix the training config")
    except ImportError:  # a serving-only install has no training stage
        return Check("training config", True, "not checked: training is not installed")
    return Check(
        "training config", True, f"{choice.path} ({choice.why}): {cfg.model.kind}, seed {cfg.seed}"
    )


def _check_raw(settings: Settings) -> Check:
    raw = settings.raw_path
    if not raw.exists():
        return Check(
            "raw data folder",
            False,
            f"{raw} does not exist",
            "run `mlcycle demo-data` or put CSV/JSON/JSONL/Parquet files there",
        )
    from mlcycle.etl.extract import data_files

    files = data_files(raw)
    return Check(
        "raw data folder",
        bool(files),
        f"{raw}: {len(files)} file(s)",
        "" if files else "run `mlcycle demo-data` to write a synthetic table",
    )


def _check_store(settings: Settings, spec: DatasetSpec | None) -> Check:
    """Reachable, and holding rows of the dataset; never creates the store."""
    from mlcycle.store import open_store

    mongo = settings.mongo_uri is not None and bool(settings.mongo_uri.get_secret_value())
    label = f"store ({'mongodb' if mongo else 'embedded'})"
    if not mongo and not settings.embedded_store_path.is_file():
        return Check(
            label, False, f"no store yet at {settings.embedded_store_path}", "run `mlcycle etl`"
        )
    where = (
        redact_uri(settings.mongo_uri.get_secret_value())
        if mongo and settings.mongo_uri is not None
        else str(settings.embedded_store_path)
    )
    store = open_store(settings)
    try:
        store.ping()
        rows = store.count(spec.name) if spec is not None else 0
    except MlcycleError as err:
        return Check(
            label, False, str(err), "start MongoDB or unset MONGO_URI to use the embedded store"
        )
    finally:
        store.close()
    if spec is not None and rows == 0:
        return Check(label, False, f"{where}: no {spec.name} rows yet", "run `mlcycle etl`")
    return Check(label, True, f"{where}: {rows:,} {spec.name if spec else ''} rows")


def _check_model(settings: Settings, spec: DatasetSpec | None) -> Check:
    """A champion to serve; reads the registry without creating a tracking store."""
    from mlcycle import registry

    if spec is None:
        return Check("champion model", False, "no spec", "fix the spec first")
    try:
        client = registry.connect(settings, retries=1, create=False)
        current = registry.champion(client, spec.registered_model)
    except MlcycleError as err:
        return Check("champion model", False, str(err), "run `mlcycle train`")
    except ImportError:
        return Check("champion model", False, "mlflow is not installed", "run `make install`")
    if current is None:
        return Check(
            "champion model",
            False,
            f"{spec.registered_model} has no champion",
            "run `mlcycle train` (or `mlcycle promote N`)",
        )
    return Check("champion model", True, f"{spec.registered_model} v{current.version}")


def _check_tracking(settings: Settings) -> Check:
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                ok = resp.status == 200
        except (urllib.error.URLError, OSError) as err:
            return Check(
                "MLflow tracking",
                False,
                f"{redact_uri(uri)}: {err}",
                "start `mlflow server` or unset MLFLOW_TRACKING_URI for the embedded one",
            )
        return Check("MLflow tracking", ok, f"server at {redact_uri(uri)}")
    path = Path(uri.removeprefix("sqlite:///"))
    folder = path.parent
    writable = folder.exists() or folder.parent.exists()
    return Check(
        "MLflow tracking",
        writable,
        f"embedded: {path}",
        "" if writable else f"create {folder} or set MLCYCLE_DATA_DIR",
    )


def _check_packages() -> list[Check]:
    groups = {
        "training deps": ("sklearn", "mlflow", "skl2onnx"),
        "serving deps": ("fastapi", "uvicorn", "onnxruntime"),
    }
    checks = []
    for label, modules in groups.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        checks.append(
            Check(
                label,
                not missing,
                "installed" if not missing else f"missing: {', '.join(missing)}",
                "" if not missing else "run `make install`",
            )
        )
    return checks


def run_checks(settings: Settings) -> list[Check]:
    """Every check, read-only: doctor creates no store, tracking database or folder."""
    spec_check, spec = _check_spec(settings)
    return [
        _check_project(settings),
        spec_check,
        _check_train_config(settings),
        _check_raw(settings),
        _check_store(settings, spec),
        _check_tracking(settings),
        _check_model(settings, spec),
        *_check_packages(),
    ]
