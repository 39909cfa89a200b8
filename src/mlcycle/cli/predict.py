"""`predict`: batch scoring of a file, a folder or the stored table."""

from __future__ import annotations

from typing import Annotated

import typer

from mlcycle.cli.base import (
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
)


@app.command()
def predict(
    source: Annotated[
        str,
        typer.Option(
            "--source", help="A CSV, JSON, JSONL or Parquet file, a folder of them, or `store`."
        ),
    ],
    out: Annotated[
        str,
        typer.Option("--out", help="A .parquet or .csv file to write, or `store`."),
    ],
    version: Annotated[
        str | None, typer.Option("--version", help="A version number (default: the champion).")
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain", help="Add the base and each feature's contribution (linear models)."
        ),
    ] = False,
    spec_path: SpecOpt = None,
    dataset: DatasetOpt = None,
    engine_kind: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a file, a folder or the stored table with the champion (or --version), by
    the API's validation and scorer; bad rows go to the quarantine.

    Example: mlcycle predict --source data/new.csv --out scores.parquet (--engine dask:
    the files' parts scored on the cluster's workers)
    """
    from mlcycle.serve.batch import run_batch, scores_collection

    config = settings()
    with stage(as_json), opened_store(config) as store:
        spec = spec_of(config, spec_path, dataset)
        with engine(config, engine_kind, scheduler) as runner:
            summary = run_batch(config, spec, store, source, out, version, explain, runner)
    if as_json:
        emit_json(summary.as_dict())
        return
    where = f"the store ({scores_collection(spec.name)})" if out == "store" else out
    console.print(
        f"scored {summary.scored:,} of {summary.rows:,} rows with {summary.model_name} "
        f"v{summary.model_version} into {where} in {summary.seconds:.1f} s"
        + (
            f"; {summary.rejected:,} rejected to the quarantine (batch {summary.batch_id})"
            if summary.rejected
            else ""
        )
    )
