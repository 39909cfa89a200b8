"""`quarantine`: the rejected rows of a dataset, with where they came from and why."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from mlcycle.cli.base import (
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
)

LOCATION = ("file", "row", "line", "topic", "partition", "offset", "key")


def _where(doc: dict[str, Any]) -> str:
    if "file" in doc:
        return f"{doc['file']}:{doc.get('line', doc.get('row'))}"
    if "topic" in doc:
        return f"{doc['topic']}[{doc.get('partition')}]@{doc.get('offset')}"
    return "?"


def _matches(doc: dict[str, Any], reason: str | None) -> bool:
    if not reason:
        return True
    wanted = reason.lower()
    return any(wanted in str(e.get("reason", "")).lower() for e in doc.get("errors") or [doc])


@app.command()
def quarantine(
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Only rows with a problem whose reason contains this."),
    ] = None,
    batch: Annotated[str | None, typer.Option("--batch", help="Only this ETL batch.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Rows listed (0: all; counts cover all).")
    ] = 20,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Write the rows' records as a CSV of the spec's columns, to fix and feed "
            "back to `mlcycle etl`.",
        ),
    ] = None,
    spec_path: SpecOpt = None,
    dataset: DatasetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The rejected rows of the dataset: file and row (or topic and offset), column,
    value and reason, counted by reason.

    Example: mlcycle quarantine --reason "not one of" --export fix.csv
    """
    from mlcycle.store.base import quarantine_collection

    config = settings()
    with stage(as_json), opened_store(config) as store:
        spec = spec_of(config, spec_path, dataset)
        collection = quarantine_collection(spec.name)
        found = [
            d
            for d in store.find(collection, {"batch_id": batch} if batch else None)
            if _matches(d, reason)
        ]
    by_reason = Counter(str(e.get("reason", "")) for d in found for e in (d.get("errors") or [d]))
    shown = found if limit == 0 else found[:limit]
    if export is not None:
        columns = list(spec.columns)
        export.parent.mkdir(parents=True, exist_ok=True)
        with export.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, columns, extrasaction="ignore")
            writer.writeheader()
            for doc in found:
                writer.writerow({k: v for k, v in (doc.get("record") or {}).items()})
    rows = [
        {
            "where": _where(d),
            **{k: d[k] for k in LOCATION if k in d},
            "batch_id": d.get("batch_id"),
            "errors": d.get("errors")
            or [{"column": d.get("column"), "value": d.get("value"), "reason": d.get("reason")}],
        }
        for d in shown
    ]
    if as_json:
        emit_json(
            {
                "dataset": spec.name,
                "collection": collection,
                "total": len(found),
                "shown": len(rows),
                "by_reason": dict(by_reason.most_common()),
                "rows": rows,
                "export": str(export) if export else None,
            }
        )
        return
    _render(spec.name, collection, found, rows, by_reason, export)


def _render(
    name: str,
    collection: str,
    found: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    by_reason: Counter[str],
    export: Path | None,
) -> None:
    if not found:
        console.print(f"no quarantined rows of {name!r} ({collection!r})", highlight=False)
        return
    table = Table(title=f"{name}: {len(found):,} quarantined row(s), {len(rows)} shown")
    for col in ("where", "column", "value", "reason"):
        table.add_column(col)
    for row in rows:
        for i, err in enumerate(row["errors"]):
            table.add_row(
                Text(row["where"] if i == 0 else ""),
                Text(str(err.get("column"))),
                Text(str(err.get("value"))),
                Text(str(err.get("reason"))),
            )
    console.print(table)
    for said, count in by_reason.most_common(10):
        console.print(f"  {count:>7,}  {said}", highlight=False)
    if export is not None:
        console.print(f"records written to {export} (fix them, then `mlcycle etl`)")
