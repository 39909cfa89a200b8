"""`mlcycle doctor` (Make `check-env`): is this environment ready, and if not, why."""

from __future__ import annotations

import importlib.util
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mlcycle.config import Settings, redact_uri
from mlcycle.errors import MlcycleError
from mlcycle.spec import load_spec


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _check_spec(settings: Settings) -> Check:
    try:
        spec = load_spec(settings.spec_path)
    except MlcycleError as err:
        return Check("dataset spec", False, str(err), "fix the spec or set MLCYCLE_SPEC")
    return Check("dataset spec", True, f"{settings.spec}: {spec.name}, {len(spec.columns)} columns")


def _check_raw(settings: Settings) -> Check:
    raw = settings.raw_path
    if not raw.exists():
        return Check(
            "raw data folder",
            False,
            f"{raw} does not exist",
            "run `mlcycle demo-data` or put CSV/JSON/JSONL/Parquet files there",
        )
    from mlcycle.etl.extract import SUPPORTED_SUFFIXES

    files = [p for p in raw.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES]
    return Check(
        "raw data folder",
        bool(files),
        f"{raw}: {len(files)} file(s)",
        "" if files else "run `mlcycle demo-data` to write a synthetic table",
    )


def _check_store(settings: Settings) -> Check:
    from mlcycle.store import open_store

    store = open_store(settings)
    where = (
        redact_uri(settings.mongo_uri.get_secret_value())
        if settings.mongo_uri is not None
        else str(settings.embedded_store_path)
    )
    try:
        store.ping()
    except MlcycleError as err:
        return Check(
            f"store ({store.name})",
            False,
            str(err),
            "start MongoDB or unset MONGO_URI to use the embedded store",
        )
    finally:
        store.close()
    return Check(f"store ({store.name})", True, f"reachable: {where}")


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
    return [
        _check_spec(settings),
        _check_raw(settings),
        _check_store(settings),
        _check_tracking(settings),
        *_check_packages(),
    ]
