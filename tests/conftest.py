from __future__ import annotations

import inspect
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlcycle.config import Settings, get_settings
from mlcycle.spec import DatasetSpec, load_spec
from mlcycle.store.base import Store
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.train.snapshot import Snapshot
from tests.data import (
    CONFIG_PATH,
    REAL_LOAN_DIR,
    SPEC_PATH,
    real_loan_available,
    write_loan_files,
)
from tests.servers import FerretDB, KafkaBroker, start_ferretdb, start_kafka

# Commands installed beside this interpreter (mlflow, st, hadolint, yamllint ...) are
# found without activating the virtualenv, as `make test` runs it.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


# What a test needs beside Python, as markers (`pytest -m "not server"` is every test that
# needs none: `make test-local`; `make test-unit` also leaves out integration, e2e and
# slow tests). A need comes from a shared fixture the test uses, or from
# a server it (or one of its fixtures) starts itself; `server` marks any need.
NEEDS = {
    "ferretdb": ("start_ferretdb(", "FerretDB("),
    "mlflow_server": ("MlflowServer(",),
    "kafka": ("start_kafka(", "KafkaBroker("),
    "dask": ("DaskCluster(",),
    "uvicorn": ("UvicornServer(",),
    "browser": ("tests.browser import",),
    "lint_tools": (),  # marked by the modules that run the validators
}
SHARED = {"ferretdb": "ferretdb", "kafka": "kafka", "mlflow_server": "mlflow_server"}
_SOURCES: dict[object, str] = {}


def _source(obj: object) -> str:
    if obj not in _SOURCES:
        try:
            _SOURCES[obj] = inspect.getsource(obj)  # type: ignore[arg-type]
        except (OSError, TypeError):
            _SOURCES[obj] = ""
    return _SOURCES[obj]


def needs(item: pytest.Item) -> set[str]:
    found = {SHARED[name] for name in getattr(item, "fixturenames", ()) if name in SHARED}
    found |= {m.name for m in item.iter_markers() if m.name in NEEDS}
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "mongodb" in callspec.params.values():
        found.add("ferretdb")  # the `store` fixture's MongoDB side
    code = [_source(getattr(item, "function", None))]
    info = getattr(item, "_fixtureinfo", None)
    for defs in info.name2fixturedefs.values() if info else ():
        code += [_source(d.func) for d in defs if "site-packages" not in str(d.baseid)]
    for need, starters in NEEDS.items():
        if any(s in text for text in code for s in starters):
            found.add(need)
    return found


KINDS = {"integration": "integration", "e2e": "e2e"}
"""A test's folder is its kind, as a marker too (`-m` and folders always agree)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        found = needs(item)
        for need in sorted(found):
            item.add_marker(need)
        if found:
            item.add_marker("server")
        folder = Path(str(item.fspath)).parent.name
        if folder in KINDS and not item.get_closest_marker(KINDS[folder]):
            item.add_marker(KINDS[folder])


@pytest.fixture(scope="session")
def spec() -> DatasetSpec:
    return load_spec(SPEC_PATH)


@pytest.fixture(scope="session")
def synthetic_loan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_loan_files(load_spec(SPEC_PATH), tmp_path_factory.mktemp("loan"))


@pytest.fixture(scope="session")
def synthetic_snapshot(
    spec: DatasetSpec, synthetic_loan_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Snapshot:
    """The synthetic train.csv through the ETL into an embedded store, read back as
    training reads it."""
    from mlcycle.etl.pipeline import run_etl
    from mlcycle.train.snapshot import load_snapshot

    store = EmbeddedStore(tmp_path_factory.mktemp("snapshot") / "s.sqlite3")
    run_etl(spec, synthetic_loan_dir / "train.csv", store)
    return load_snapshot(store, spec)


# The real CSVs are an extra data set where they exist, never a reason to skip.
LOAN_SOURCES = ["synthetic", *(["real"] if real_loan_available() else [])]


@pytest.fixture(scope="session", params=LOAN_SOURCES)
def loan_dir(request: pytest.FixtureRequest) -> Path:
    """A folder with a labelled train.csv and an unlabelled test.csv of loan rows."""
    if request.param == "real":
        return REAL_LOAN_DIR
    return Path(request.getfixturevalue("synthetic_loan_dir"))


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test gets its own data dir and no ambient store/tracking configuration."""
    for var in ("MONGO_URI", "MLCYCLE_MONGO_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLCYCLE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLCYCLE_SPEC", str(SPEC_PATH))
    monkeypatch.setenv("MLCYCLE_TRAIN_CONFIG", str(CONFIG_PATH))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDB]:
    server = start_ferretdb(tmp_path_factory.mktemp("ferretdb"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = start_kafka(tmp_path_factory.mktemp("kafka"))
    yield broker
    broker.stop()


def _mongo_store(server: FerretDB) -> Store:
    from mlcycle.store.mongo import MongoStore

    return MongoStore(server.uri, f"t{uuid.uuid4().hex[:12]}", timeout_ms=3000, retries=2)


@pytest.fixture(params=["embedded", pytest.param("mongodb", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every Store backend: the contract suite and ETL tests run against each."""
    if request.param == "embedded":
        backend: Store = EmbeddedStore(tmp_path / "store.sqlite3")
    else:
        backend = _mongo_store(request.getfixturevalue("ferretdb"))
    yield backend
    backend.close()


@pytest.fixture
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real `mlflow server` (SQLite backend store, local artifacts) on 127.0.0.1."""
    from tests.servers import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture
def loan_store(spec: DatasetSpec, loan_dir: Path, tmp_path: Path) -> Iterator[Store]:
    """An embedded store holding the loan table of `loan_dir` (labelled + unlabelled rows):
    the one the settings name, so the CLI's commands see it too."""
    from mlcycle.etl.pipeline import run_etl

    path = get_settings().embedded_store_path
    path.parent.mkdir(parents=True, exist_ok=True)
    store = EmbeddedStore(path)
    run_etl(spec, loan_dir, store)
    yield store
    store.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, ferretdb: FerretDB) -> Iterator[object]:
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1, one set per test
    module, the workers' MongoDB being the session's FerretDB."""
    from tests.servers import DaskCluster, worker_env

    tmp = tmp_path_factory.mktemp("dask")
    running = DaskCluster(tmp, worker_env(tmp, ferretdb.uri)).start()
    yield running
    running.stop()
