"""`preprocess`, `train`, `promote` and `rollback`: the model's life in the registry."""

from __future__ import annotations

from typing import Annotated

import typer

from mlcycle.cli import render
from mlcycle.cli.base import (
    ConfigOpt,
    EngineOpt,
    JsonOpt,
    SchedulerOpt,
    SpecOpt,
    app,
    console,
    emit_json,
    engine,
    opened_store,
    settings,
    spec_of,
    stage,
    train_config_of,
)
from mlcycle.errors import BadInput, MlcycleError


@app.command()
def preprocess(spec_path: SpecOpt = None, as_json: JsonOpt = False) -> None:
    """Pull the newest labelled snapshot from the store and print its profile.

    Example: mlcycle preprocess --json
    """
    from mlcycle.train.snapshot import load_snapshot, profile

    config = settings()
    with stage(as_json), opened_store(config) as store:
        spec = spec_of(config, spec_path)
        report = profile(load_snapshot(store, spec), spec)
    if as_json:
        emit_json(report)
    else:
        render.data_profile(spec.name, report)


@app.command()
def train(
    spec_path: SpecOpt = None,
    config_path: ConfigOpt = None,
    engine_kind: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train on the newest data, log to MLflow, register, and promote if the gate passes.

    Example: mlcycle train --config configs/train.yaml (--engine dask on a cluster)
    """
    from contextlib import nullcontext

    from mlcycle.train.train import run_train

    config = settings()
    with stage(as_json), opened_store(config) as store:
        spec = spec_of(config, spec_path)
        cfg = train_config_of(config, config_path)
        busy = nullcontext() if as_json else console.status("training", spinner="dots")
        with engine(config, engine_kind, scheduler) as runner, busy:
            result = run_train(config, spec, cfg, store, runner)
    if as_json:
        emit_json(result.to_dict())
    else:
        render.train_result(result)


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Model version to make champion.")],
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if the gate refuses (needs --reason).")
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why --force: recorded on the version.")
    ] = None,
    spec_path: SpecOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Point the champion alias at VERSION, after showing the gate's checks.

    Example: mlcycle promote 3   (mlcycle promote 4 --force --reason "hotfix, see #12")
    """
    from mlcycle import registry

    config = settings()
    with stage():
        if force and not (reason and reason.strip()):
            raise BadInput("--force needs --reason: it is recorded on the version")
        spec = spec_of(config, spec_path)
        client = registry.connect(config)
        cfg = train_config_of(config, config_path)
        name = spec.registered_model
        target = registry.get_version(client, name, version=version)
        current = registry.champion(client, name)
        decision = registry.promotion_check(target, current, cfg.gate)
        console.print(
            f"gate (logged metrics): {'pass' if decision.promote else 'refuse'}: {decision.reason}",
            highlight=False,
        )
        if current is not None and current.version == target.version:
            console.print(f"{name} v{version} is already the champion")
            return
        if not decision.promote and not force:
            raise MlcycleError(
                "the gate refuses this version; use --force --reason '...' to promote it anyway"
            )
        registry.set_champion(
            client,
            name,
            target.version,
            current.version if current else None,
            forced_reason=reason.strip() if force and reason else None,
        )
    console.print(
        f"champion: {name} v{target.version} (was {'v' + current.version if current else 'none'})"
    )


@app.command()
def rollback(spec_path: SpecOpt = None) -> None:
    """Point the champion alias back at the version it replaced.

    Example: mlcycle rollback
    """
    from mlcycle import registry

    config = settings()
    with stage():
        spec = spec_of(config, spec_path)
        old, new = registry.rollback(registry.connect(config), spec.registered_model)
    console.print(f"champion: {spec.registered_model} v{new} (rolled back from v{old})")
