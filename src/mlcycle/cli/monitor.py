"""`monitor`: a window of the prediction log against the model's training profile."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlcycle.cli import render
from mlcycle.cli.base import (
    ConfigOpt,
    DatasetOpt,
    JsonOpt,
    SpecOpt,
    app,
    console,
    emit_json,
    opened_store,
    settings,
    spec_of,
    stage,
    train_config_of,
)

if TYPE_CHECKING:
    from mlcycle.config import Settings
    from mlcycle.spec import DatasetSpec
    from mlcycle.store.base import Store
    from mlcycle.train.config import TrainConfig


def parse_since(text: str) -> datetime:
    """`30m`, `24h`, `7d` (that long ago) or an ISO-8601 time (UTC when no offset)."""
    from datetime import UTC, timedelta

    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    raw = text.strip()
    if raw[:-1].replace(".", "", 1).isdigit() and raw[-1:].lower() in units:
        try:
            return datetime.now(UTC) - timedelta(**{units[raw[-1].lower()]: float(raw[:-1])})
        except OverflowError:  # further back than a datetime goes: the whole log
            return datetime(1970, 1, 1, tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as err:
        raise typer.BadParameter(
            f"{text!r} is neither a duration like 24h / 7d nor an ISO-8601 time"
        ) from err
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def monitor(
    since: Annotated[
        str | None,
        typer.Option("--since", help="Window start: 24h, 7d, 30m or an ISO-8601 time."),
    ] = None,
    last: Annotated[
        int | None,
        typer.Option(
            "--last",
            min=1,
            help="Only the newest N predictions (default 10,000 when --since is not given).",
        ),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="Model version (default: the newest one logged)."),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the dashboard to this file.")
    ] = None,
    retrain: Annotated[
        bool,
        typer.Option("--retrain", help="Run `train` when the config's retrain policy fires."),
    ] = False,
    spec_path: SpecOpt = None,
    dataset: DatasetOpt = None,
    config_path: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a window of the prediction log with the model's training profile.

    Per feature: PSI, KS or chi-square, missing share, unseen categories; the score
    distribution; realized accuracy, F1, ROC AUC once labels arrive. Writes one report
    to `<dataset>_monitoring`. Exit codes: 0 ok (or watch, or too little traffic),
    3 drift, 4 realized performance below the policy; 1 error, 2 bad input.

    Example: mlcycle monitor --since 24h --html monitoring.html
    """
    from mlcycle.monitor.dashboard import render as dashboard
    from mlcycle.monitor.reports import latest_reports
    from mlcycle.monitor.run import newest_version, run_monitor

    config = settings()
    start = parse_since(since) if since else None
    with stage(as_json), opened_store(config) as store:
        spec = spec_of(config, spec_path, dataset)
        cfg = train_config_of(config, config_path, spec_path, dataset)
        logged = version or newest_version(store, spec, spec.registered_model)
        result = (
            None
            if logged is None
            else run_monitor(
                config,
                spec,
                cfg.monitor,
                store,
                version=version,
                since=start,
                last=last,
                retrain=retrain,
                **_policies(config, store, spec, cfg),
            )
        )
        if html is not None and result is not None:
            history = latest_reports(store, spec.name, spec.registered_model)
            html.parent.mkdir(parents=True, exist_ok=True)
            html.write_text(dashboard(result.typed, history), encoding="utf-8")
    if result is None:
        return _no_predictions(spec, as_json)
    if as_json:
        emit_json(result.typed.document())
    else:
        render.monitor_report(result.typed, html)
    raise typer.Exit(result.exit_code)


def _policies(config: Settings, store: Store, spec: DatasetSpec, cfg: TrainConfig) -> dict:
    """What `monitor --retrain` may do: train, act on the challenger, roll back."""
    from mlcycle.train.train import run_train

    return {
        "train": lambda: run_train(
            config, spec, cfg, store, by="monitor --retrain", new_data_only=True
        ),
        "challenger_policy": lambda comparison: _challenger_policy(
            config, store, spec, cfg, comparison
        ),
        "rollback_policy": lambda matured, why: _rollback_policy(
            config, store, spec, cfg, matured, why
        ),
    }


def _challenger_policy(
    config: Settings, store: Store, spec: DatasetSpec, cfg: TrainConfig, comparison: dict
) -> dict | None:
    """`monitor.challenger`'s promote/drop rules on a decided paired comparison."""
    from mlcycle import registry
    from mlcycle.train.promote import challenger_policy

    return challenger_policy(registry.connect(config, create=False), store, spec, cfg, comparison)


def _rollback_policy(
    config: Settings, store: Store, spec: DatasetSpec, cfg: TrainConfig, matured: set, why: str
) -> dict | None:
    """`monitor.rollback`: back to the previous champion when it is better on the rows."""
    from mlcycle import registry
    from mlcycle.train.promote import rollback_policy

    client = registry.connect(config, create=False)
    return rollback_policy(client, store, spec, cfg, matured, why)


def _no_predictions(spec: DatasetSpec, as_json: bool) -> None:
    """An empty prediction log is not a failure: there is nothing to monitor yet (exit 0)."""
    from mlcycle.store.base import predictions_collection

    where = predictions_collection(spec.name)
    message = (
        f"no predictions of {spec.registered_model} are logged in {where!r} yet: nothing "
        "to monitor (serve the model with the prediction log on and send it traffic)"
    )
    if as_json:
        emit_json({"status": "no_predictions", "verdict": None, "detail": message})
    else:
        console.print(message, highlight=False)
