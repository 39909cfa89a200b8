"""MLflow with authentication: a real `mlflow server --app-name basic-auth` configured by
deploy/k8s/base/mlflow/basic_auth.ini; `mlcycle mlflow-users` makes the application users; only
the training user registers and promotes, the read-only user serves and cannot promote,
nobody gets in without a password."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlcycle.datagen import write_demo
from mlcycle.spec import DatasetSpec
from tests.data import LOAN_RECORD
from tests.servers import REPO, MlflowServer, UvicornServer
from tests.servers import mlcycle as cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN = secrets.token_urlsafe(16)
TRAIN = secrets.token_urlsafe(16)
READ = secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("mlflow-auth")
    ini = (REPO / "deploy" / "k8s" / "base" / "mlflow" / "basic_auth.ini").read_text()
    assert "sqlite:////data/mlflow/basic_auth.db" in ini
    config = root / "basic_auth.ini"
    config.write_text(ini.replace("sqlite:////data/mlflow/", f"sqlite:///{root}/"))
    server = MlflowServer(
        root / "server",
        args=("--app-name", "basic-auth"),
        env={
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        },
    ).start()
    yield server
    server.stop()


def _env(
    server: MlflowServer, root: Path, user: str | None, password: str | None
) -> dict[str, str]:
    env = {
        **os.environ,
        "MLCYCLE_DATA_DIR": str(root / "data"),
        "MLFLOW_TRACKING_URI": server.uri,
        "MONGO_URI": "",
        "MLCYCLE_MLFLOW_TRAIN_PASSWORD": TRAIN,
        "MLCYCLE_MLFLOW_READ_PASSWORD": READ,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    env.pop("MLFLOW_TRACKING_USERNAME", None)
    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    if user is not None and password is not None:
        env |= {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
    return env


def test_each_user_can_do_only_what_its_role_needs(
    auth_server: MlflowServer, spec: DatasetSpec, tmp_path: Path
) -> None:
    admin = _env(auth_server, tmp_path, "admin", ADMIN)
    made = cli(admin, tmp_path, "mlflow-users")
    assert made.returncode == 0, made.stderr[-2000:]
    assert "created MLflow user mlcycle-train" in made.stdout
    again = cli(admin, tmp_path, "mlflow-users")  # idempotent: passwords reset, no error
    assert again.returncode == 0 and "updated MLflow user mlcycle-read" in again.stdout
    assert (
        cli(_env(auth_server, tmp_path, "mlcycle-read", READ), tmp_path, "mlflow-users").returncode
        == 2
    )

    write_demo(spec, tmp_path / "data" / "raw", 400, seed=3)
    assert cli(admin, tmp_path, "etl").returncode == 0

    anonymous = cli(_env(auth_server, tmp_path, None, None), tmp_path, "train")
    assert anonymous.returncode != 0 and "Traceback" not in anonymous.stderr
    wrong = cli(_env(auth_server, tmp_path, "mlcycle-train", "not-the-password"), tmp_path, "train")
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr

    trainer = _env(auth_server, tmp_path, "mlcycle-train", TRAIN)
    trained = cli(trainer, tmp_path, "train")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "champion: v1" in trained.stdout
    second = cli(trainer, tmp_path, "train", "--again")  # same data: v2 passes the gate's tolerance
    assert second.returncode == 0 and "champion: v2" in second.stdout, second.stdout

    reader = _env(auth_server, tmp_path, "mlcycle-read", READ)
    refused = cli(reader, tmp_path, "promote", "1", "--force", "--reason", "not allowed")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "refused" in refused.stderr and "PERMISSION_DENIED" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert cli(reader, tmp_path, "rollback").returncode == 2
    assert cli(trainer, tmp_path, "rollback").returncode == 0  # the training user may

    # the read-only user is enough to serve
    server = UvicornServer(reader, tmp_path / "serve", cwd=tmp_path).start()
    try:
        answer = httpx.post(f"{server.url}/predict", json=LOAN_RECORD, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == {"name": spec.registered_model, "version": "1"}
    finally:
        server.stop()
    # and the password never reaches a log line
    logs = "".join(p.read_text() for p in (tmp_path / "serve").glob("*.log"))
    assert READ not in logs and READ not in trained.stderr + refused.stderr
