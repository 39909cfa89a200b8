"""`init` and `demo-data`: a project's files and a synthetic table to try it on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlcycle.cli.base import DatasetOpt, SpecOpt, app, console, settings, spec_of, stage


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Project folder (default: here).")] = Path(),
) -> None:
    """Scaffold a project: mlcycle.yaml, datasets/loan.yaml, configs/train.yaml, .env, data/raw/.

    Existing files are kept. Edit the spec for your own table (docs/spec.md lists every
    key), put files in data/raw, then run `mlcycle etl`.

    Example: mlcycle init && mlcycle demo-data && mlcycle etl && mlcycle train
    """
    from mlcycle.project import scaffold

    for path, made in scaffold(folder):
        console.print(f"{'created' if made else 'kept   '} {path}", highlight=False)
    console.print(
        "next: put CSV/JSON/JSONL/Parquet files in data/raw (or `mlcycle demo-data`), "
        "then `mlcycle etl && mlcycle train && mlcycle serve`",
        highlight=False,
    )


@app.command("demo-data")
def demo_data(
    rows: Annotated[int, typer.Option("--rows", min=1, help="Rows to generate.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 42,
    out: Annotated[
        Path | None, typer.Option("--out", help="CSV file or folder (default: raw dir).")
    ] = None,
    spec_path: SpecOpt = None,
    dataset: DatasetOpt = None,
    if_empty: Annotated[
        bool,
        typer.Option("--if-empty", help="Only if the raw folder holds no data file at all."),
    ] = False,
) -> None:
    """Write a seeded synthetic table for the dataset spec, for offline demos.

    Example: mlcycle demo-data --rows 5000
    """
    from mlcycle.datagen import write_demo
    from mlcycle.etl.extract import data_files

    config = settings()
    target = out or config.raw_path
    if if_empty and target.is_dir() and (existing := data_files(target)):
        console.print(
            f"{target} already holds {len(existing)} data file(s): no demo rows written",
            highlight=False,
        )
        return
    with stage():
        spec = spec_of(config, spec_path, dataset)
    path = write_demo(spec, target, rows, seed)
    console.print(f"wrote {rows} synthetic {spec.name} rows to {path}", highlight=False)
