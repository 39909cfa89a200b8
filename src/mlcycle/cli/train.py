"""`preprocess`, `train`, `promote` and `rollback`: the model's life in the registry."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from mlcycle.cli import render
from mlcycle.cli.base import (
    ConfigOpt,
    DatasetOpt,
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
from mlcycle.errors import BadInput

logger = logging.getLogger(__name__)


@app.command()
def preprocess(
    spec_path: SpecOpt = None, dataset: DatasetOpt = None, as_json: JsonOpt = False
) -> None:
    """Pull the newest labelled snapshot from the store and print its profile.

    Example: mlcycle preprocess --json
    """
    from mlcycle.train.snapshot import load_snapshot, profile

    config = settings()
    with stage(as_json), opened_store(config) as store:
        spec = spec_of(config, spec_path, dataset)
        report = profile(load_snapshot(store, spec), spec)
    if as_json:
        emit_json(report)
    else:
        render.data_profile(spec.name, report)


@app.command()
def train(
    spec_path: SpecOpt = None,
    dataset: DatasetOpt = None,
    config_path: ConfigOpt = None,
    engine_kind: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    again: Annotated[
        bool,
        typer.Option(
            "--again",
            help="Train and register even when a version with the same data, spec, config "
            "and code exists (it is skipped otherwise).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train on the newest data, log to MLflow, register, and promote if the gate passes.

    The gate compares the candidate with the champion on the same hold-out rows. A model
    that exists already (same rows, spec, config, code) is not trained again: the
    command says which version it is and exits 0.

    Example: mlcycle train --config configs/train.yaml (--engine dask on a cluster)
    """
    from contextlib import nullcontext

    from mlcycle.train.train import run_train

    config = settings()
    with stage(as_json), opened_store(config) as store:
        spec = spec_of(config, spec_path, dataset)
        cfg = train_config_of(config, config_path, spec_path, dataset)
        busy = nullcontext() if as_json else console.status("training", spinner="dots")
        with engine(config, engine_kind, scheduler) as runner, busy:
            result = run_train(config, spec, cfg, store, runner, again=again)
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
        str | None, typer.Option("--reason", help="Why: recorded with the decision.")
    ] = None,
    alias: Annotated[
        str,
        typer.Option(
            "--as",
            help="The alias to move: champion, or challenger (scored in shadow, never answers).",
        ),
    ] = "champion",
    spec_path: SpecOpt = None,
    dataset: DatasetOpt = None,
    config_path: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point the champion alias at VERSION, after judging it against the champion.

    Both are re-scored on the same evaluation rows of the store (the rows both held out);
    the comparison is shown and recorded with the decision (`mlcycle history`). With
    `--as challenger` the version is scored in shadow by the server beside the champion.

    Example: mlcycle promote 3   (mlcycle promote 4 --force --reason "hotfix, see #12")
    """
    from mlcycle import registry
    from mlcycle.train.promote import apply, judge_version

    config = settings()
    with stage(as_json), opened_store(config) as store:
        if force and not (reason and reason.strip()):
            raise BadInput("--force needs --reason: it is recorded with the decision")
        if not version.isdigit():
            raise BadInput(
                f"VERSION is a version number (`mlcycle models` lists them), not {version!r}"
            )
        spec = spec_of(config, spec_path, dataset)
        cfg = train_config_of(config, config_path, spec_path, dataset)
        client = registry.connect(config, create=False)
        judged = judge_version(client, store, spec, cfg, version, alias)
        name, target = judged.name, judged.target.version
        if judged.verdict is None:
            _say(
                as_json,
                {alias: target, "changed": False},
                f"{name} v{target} is already the {alias}",
            )
            return
        if not as_json:
            record = judged.verdict.record()
            rival = judged.champion.version if judged.champion else None
            console.print(
                render.comparison(
                    f"{name} v{target} against the champion", f"v{target}", rival, record
                )
            )
            render.evaluation_line(record)
            word = "pass" if judged.verdict.decision.promote else "refuse"
            console.print(f"gate: {word}: {judged.verdict.decision.reason}", highlight=False)
        event = apply(client, judged, cfg.gate.metric, force, reason)
    previous = judged.holder.version if judged.holder else None
    _say(
        as_json,
        {
            alias: target,
            "previous": previous,
            "changed": True,
            "forced": event.action == "force",
            "decision": event.model_dump(exclude_none=True),
        },
        f"{alias}: {name} v{target} (was {'v' + previous if previous else 'none'})",
    )


@app.command()
def rollback(
    to: Annotated[
        str | None,
        typer.Option("--to", help="The version to go back to (default: the previous champion)."),
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why: recorded with the decision.")
    ] = None,
    spec_path: SpecOpt = None,
    dataset: DatasetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point the champion alias back at the previous served champion, or at --to N.

    Example: mlcycle rollback   (mlcycle rollback --to 3 --reason "v5 declines too many")
    """
    from mlcycle import registry

    config = settings()
    with stage(as_json):
        spec = spec_of(config, spec_path, dataset)
        client = registry.connect(config, create=False)
        old, new = registry.rollback(
            client, spec.registered_model, to=to, reason=reason.strip() if reason else None
        )
    _say(
        as_json,
        {"champion": new, "previous": old, "changed": True},
        f"champion: {spec.registered_model} v{new} (rolled back from v{old})",
    )


def _say(as_json: bool, data: dict[str, object], line: str) -> None:
    if as_json:
        emit_json(data)
    else:
        console.print(line, highlight=False)
