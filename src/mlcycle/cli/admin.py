"""`doctor`, `hash-key` and `mlflow-users`: checks and credentials for operators."""

from __future__ import annotations

import sys

import typer

from mlcycle.cli import render
from mlcycle.cli.base import (
    DatasetOpt,
    JsonOpt,
    SpecOpt,
    app,
    chosen,
    console,
    emit_json,
    settings,
    stage,
)
from mlcycle.errors import BadInput


@app.command("mlflow-users")
def mlflow_users() -> None:
    """Create (or reset) the MLflow users of a tracking server with authentication.

    Run as the MLflow admin (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD). Makes
    the training user (MLCYCLE_MLFLOW_TRAIN_USER, default mlcycle-train, password
    MLCYCLE_MLFLOW_TRAIN_PASSWORD) and the read-only user for serving and monitoring
    (MLCYCLE_MLFLOW_READ_USER, default mlcycle-read, password
    MLCYCLE_MLFLOW_READ_PASSWORD). Idempotent: existing users get the given password.

    Example: mlcycle mlflow-users
    """
    from mlcycle import registry

    config = settings()
    with stage():
        users = {}
        for role, user, password in (
            ("TRAIN", config.mlflow_train_user, config.mlflow_train_password),
            ("READ", config.mlflow_read_user, config.mlflow_read_password),
        ):
            if password is None or not password.get_secret_value():
                raise BadInput(f"MLCYCLE_MLFLOW_{role}_PASSWORD is not set")
            users[user] = password.get_secret_value()
        if not config.tracking_uri.startswith(("http://", "https://")):
            raise BadInput("MLFLOW_TRACKING_URI must name a tracking server (http/https)")
        registry.probe(config.tracking_uri)
        for name, what in registry.ensure_users(config.tracking_uri, users):
            console.print(f"{what} MLflow user {name}", highlight=False)


@app.command("hash-key")
def hash_key_cmd() -> None:
    """Read an API key on stdin and print its SHA-256, for MLCYCLE_API_KEYS.

    Example: printf %s "$KEY" | mlcycle hash-key
    """
    from mlcycle.serve.security import hash_key

    key = sys.stdin.read().strip()
    with stage():
        if not key:
            raise BadInput(
                "no key on standard input: pipe the key in (echo -n KEY | mlcycle hash-key)"
            )
    print(hash_key(key))


@app.command()
def doctor(spec_path: SpecOpt = None, dataset: DatasetOpt = None, as_json: JsonOpt = False) -> None:
    """Check the project, settings, spec, store and MLflow; say what is wrong and how to
    fix it. Exit 0 when every check passes, else 1.

    Example: mlcycle doctor
    """
    from mlcycle.config import redact_text
    from mlcycle.doctor import run_checks

    config = chosen(settings(), spec_path, dataset)
    checks = run_checks(config)
    ok = all(c.ok for c in checks)
    if as_json:
        secrets = config.secrets()
        emit_json(
            {
                "ok": ok,
                "checks": [
                    {
                        "name": c.name,
                        "ok": c.ok,
                        "detail": redact_text(c.detail, secrets),
                        "fix": redact_text(c.fix, secrets),
                    }
                    for c in checks
                ],
            }
        )
    else:
        render.doctor_checks(checks, config.secrets())
    if not ok:
        raise typer.Exit(1)
