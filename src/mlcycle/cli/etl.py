"""`etl`: files -> validate -> quarantine / upsert, on the chosen engine."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mlcycle.cli import render
from mlcycle.cli.base import (
    DatasetOpt,
    EngineOpt,
    JsonOpt,
    SchedulerOpt,
    SpecOpt,
    app,
    emit_json,
    engine,
    opened_store,
    settings,
    spec_of,
    stage,
)


def progress_bar(shown: bool) -> tuple[Progress, Callable[[str, int, int | None], None]]:
    """A progress line on stderr (only on a terminal) and the callback that moves it."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not shown,
    )
    task = progress.add_task("validate", total=None)

    def on_progress(phase: str, done: int, total: int | None) -> None:
        progress.update(task, description=phase, completed=done, total=total)

    return progress, on_progress


@app.command()
def etl(
    source: Annotated[
        Path | None, typer.Option("--source", help="File or folder (default: data/raw).")
    ] = None,
    spec_path: SpecOpt = None,
    dataset: DatasetOpt = None,
    max_rejected: Annotated[
        float | None,
        typer.Option("--max-rejected", min=0.0, max=1.0, help="Fail above this rejected share."),
    ] = None,
    engine_kind: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Extract, validate and upsert raw files into the store; bad rows go to quarantine.

    Example: mlcycle etl --source ../shared/data/loan --json (--engine dask on a cluster)
    """
    config = settings()
    progress, on_progress = progress_bar(not as_json and sys.stderr.isatty())
    with stage(as_json), opened_store(config) as store:
        spec = spec_of(config, spec_path, dataset)
        with engine(config, engine_kind, scheduler) as runner, progress:
            summary = runner.run_etl(
                spec,
                source or config.raw_path,
                store,
                part_bytes=config.part_bytes,
                chunk_rows=config.chunk_rows,
                max_rejected_share=(
                    config.max_rejected_share if max_rejected is None else max_rejected
                ),
                progress=on_progress,
                lock_wait=config.lock_wait,
                lock_lease=config.lock_lease,
            )
    if as_json:
        emit_json(summary.to_dict())
    else:
        render.etl_summary(summary)
