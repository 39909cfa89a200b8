"""`models` and `history`: what the registry holds and every decision that moved it."""

from __future__ import annotations

from dataclasses import asdict

from mlcycle.cli import render
from mlcycle.cli.base import DatasetOpt, JsonOpt, SpecOpt, app, emit_json, settings, spec_of, stage


@app.command()
def models(spec_path: SpecOpt = None, dataset: DatasetOpt = None, as_json: JsonOpt = False) -> None:
    """Every version of the dataset's model: run, data, evaluation, verdict, aliases.

    Example: mlcycle models --json
    """
    from mlcycle import registry

    config = settings()
    with stage(as_json):
        spec = spec_of(config, spec_path, dataset)
        rows = registry.versions(registry.connect(config, create=False), spec.registered_model)
    if as_json:
        emit_json({"model": spec.registered_model, "versions": [asdict(r) for r in rows]})
    else:
        render.versions(spec.registered_model, rows)


@app.command()
def history(
    spec_path: SpecOpt = None, dataset: DatasetOpt = None, as_json: JsonOpt = False
) -> None:
    """Every decision on the dataset's model, oldest first: alias changes (from, to, when,
    by which command or policy, why, on which evaluation rows), refusals, skipped retrains.

    Kept in MLflow as tags of the registered model (`mlcycle.history.*`).

    Example: mlcycle history --json
    """
    from mlcycle import decisions, registry

    config = settings()
    with stage(as_json):
        spec = spec_of(config, spec_path, dataset)
        client = registry.connect(config, create=False)
        if not registry.model_exists(client, spec.registered_model):
            from mlcycle.errors import ModelNotFound

            raise ModelNotFound(
                f"no registered model {spec.registered_model!r}: run `mlcycle train` first"
            )
        events = decisions.history(client, spec.registered_model)
    if as_json:
        emit_json(
            {
                "model": spec.registered_model,
                "events": [e.model_dump(exclude_none=True) for e in events],
            }
        )
    else:
        render.history(spec.registered_model, events)
