"""How the commands print what the stages return: every table and summary line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from mlcycle.cli.base import console
from mlcycle.config import redact_text
from mlcycle.store.base import as_datetime

if TYPE_CHECKING:
    from mlcycle.decisions import Event
    from mlcycle.doctor import Check
    from mlcycle.etl.pipeline import EtlSummary
    from mlcycle.monitor.report import MonitorReport
    from mlcycle.registry import VersionRow
    from mlcycle.train.train import TrainResult


def etl_summary(s: EtlSummary) -> None:
    table = Table(title=f"ETL batch {s.batch_id} ({s.store} store)", show_header=True)
    for col in ("file", "rows", "valid", "rejected", "dropped"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for f in s.files:
        table.add_row(
            Path(f.path).name, f"{f.rows:,}", f"{f.valid:,}", f"{f.rejected:,}", f"{f.dropped:,}"
        )
    console.print(table)
    console.print(
        f"read {s.rows_read:,} · valid {s.valid:,} · rejected {s.rejected:,} "
        f"({s.rejected_share:.1%}) · inserted {s.inserted:,} · updated {s.updated:,} · "
        f"unchanged {s.unchanged:,} · {s.seconds:.2f}s",
        highlight=False,
    )
    if s.rejected:
        console.print(f"rejected rows are in the quarantine collection '{s.dataset}_quarantine'")


def stream_summary(summary: Any) -> None:
    console.print(
        f"stream {summary.batch_id}: read {summary.rows_read:,} · valid {summary.valid:,} · "
        f"rejected {summary.rejected:,} · inserted {summary.inserted:,} · "
        f"updated {summary.updated:,} · unchanged {summary.unchanged:,}",
        highlight=False,
    )


def data_profile(name: str, report: dict[str, Any]) -> None:
    table = Table(
        title=f"{name}: {report['rows']:,} labelled rows (data {report['data_hash'][:12]})"
    )
    table.add_column("column")
    table.add_column("missing", justify="right")
    for col, share in report["missing_share"].items():
        table.add_row(col, f"{share:.1%}")
    console.print(table)
    balance = ", ".join(f"{k}: {v:,}" for k, v in report["class_balance"].items())
    console.print(f"class balance: {balance} · ETL batches: {len(report['etl_batches'])}")


def train_result(result: TrainResult) -> None:
    if result.skipped:
        console.print(f"nothing trained: {result.skipped}", highlight=False)
        console.print(f"champion: v{result.champion_after or ' none'}", highlight=False)
        return
    judged = result.evaluation or {}
    console.print(
        comparison(
            f"{result.model_name} v{result.version} on {result.rows:,} rows",
            "candidate",
            result.champion_before["version"] if result.champion_before else None,
            judged,
        )
    )
    evaluation_line(judged)
    cv = result.cv
    if cv:
        console.print(
            f"{result.params.get('cv_folds')}-fold CV on the training part: "
            f"accuracy {cv['cv_accuracy_mean']:.3f} ± {cv['cv_accuracy_std']:.3f}, "
            f"ROC AUC {cv['cv_roc_auc_mean']:.3f} ± {cv['cv_roc_auc_std']:.3f}",
            highlight=False,
        )
    if result.fitted_on:
        console.print(f"fitted by {result.fitted_on} (no CV: the hold-out is the evaluation)")
    verdict = "[green]promoted[/]" if result.decision["promote"] else "[yellow]not promoted[/]"
    if result.decision.get("alias") == "challenger":
        verdict = "[green]passed[/], set as [bold]challenger[/] (scored in shadow)"
    console.print(f"gate: {verdict}: {result.decision['reason']}")
    where = result.run_url or f"run {result.run_id} (view with: {result.run_view})"
    console.print(f"candidate v{result.version}: {where}", highlight=False)
    console.print(f"champion: v{result.champion_after or ' none'}", highlight=False)


def evaluation_line(judged: dict[str, Any]) -> None:
    """Which rows a comparison rests on, and any caveat."""
    rows = judged.get("set", {})
    console.print(
        f"evaluated on {rows.get('rows', 0):,} hold-out rows (set {str(rows.get('hash'))[:12]}, "
        f"{rows.get('holdout')}) that neither model learned from",
        highlight=False,
    )
    for note in judged.get("notes", []):
        console.print(f"note: {note}", highlight=False)


def comparison(title: str, label: str, champion: str | None, judged: dict[str, Any]) -> Table:
    """Both models' metrics on one evaluation set, beside the majority-class baseline."""
    table = Table(title=title)
    rival = judged.get("champion") or {}
    for col in (
        "metric",
        label,
        "baseline (majority)",
        f"champion v{champion}" if champion else "champion",
    ):
        table.add_column(col, justify="right")
    for metric, value in (judged.get("candidate") or {}).items():
        other = rival.get(metric)
        table.add_row(
            metric,
            f"{value:.4f}",
            f"{judged['baseline'][metric]:.4f}",
            "—" if other is None else f"{other:.4f}",
        )
    return table


def monitor_report(report: MonitorReport, html: Path | None = None) -> None:
    table = Table(
        title=f"{report.model_name} v{report.model_version}: {report.window.rows:,} "
        f"predictions ({report.verdict})"
    )
    for col in ("feature", "status", "PSI", "test", "p-value", "missing ref → now", "unseen"):
        table.add_column(col, justify="left" if col in ("feature", "status", "test") else "right")
    colour = {"ok": "green", "watch": "yellow", "drift": "red"}
    for name, f in report.drift_rows():
        table.add_row(
            name,
            f"[{colour[f.status]}]{f.status}[/]",
            f"{f.psi:.3f}",
            f.test.name,
            f"{f.test.p_value:.2g}",
            f"{f.missing.reference:.1%} → {f.missing.current:.1%}",
            f"{f.unseen.share:.1%}" if f.unseen is not None else "",
        )
    console.print(table)
    _performance(report)
    for reason in report.reasons:
        console.print(f"  {reason}", highlight=False)
    _retrain(report)
    if report.rollback:
        console.print(
            f"rollback policy: {report.rollback['action']}: {report.rollback['reason']}",
            highlight=False,
        )
    _challenger(report)
    console.print(f"verdict: {report.verdict}", highlight=False)
    if html is not None:
        console.print(f"dashboard: {html}", highlight=False)


def _performance(report: MonitorReport) -> None:
    perf = report.performance
    if perf is None:
        console.print("realized performance: no prediction in the window has a label yet")
        return
    val = perf.validation
    auc = "—" if perf.roc_auc is None else f"{perf.roc_auc:.3f}"
    low, high = perf.accuracy_ci
    console.print(
        f"realized on {perf.matured:,} matured predictions: accuracy "
        f"{perf.accuracy:.3f} [{low:.3f}, {high:.3f}] "
        f"(validation {val.get('accuracy') or float('nan'):.3f}), ROC AUC {auc} "
        f"(validation {val.get('roc_auc') or float('nan'):.3f})",
        highlight=False,
    )
    if perf.periods and len(perf.periods) > 1:
        days = report.thresholds.get("period_days")
        table = Table(title=f"realized per {days:g}-day period, oldest first")
        for col in ("from", "to", "matured", "accuracy", "ROC AUC"):
            table.add_column(col, justify="right")
        for p in perf.periods:
            table.add_row(
                str(as_datetime(p["start"]).date()),
                str(as_datetime(p["end"]).date()),
                f"{p['matured']:,}",
                f"{p['accuracy']:.3f}",
                "—" if p["roc_auc"] is None else f"{p['roc_auc']:.3f}",
            )
        console.print(table)
        if perf.trend:
            console.print(
                f"trend: {perf.trend['metric']} {perf.trend['per_period']:+.4f} a period "
                f"over {perf.trend['periods']} periods with enough matured rows",
                highlight=False,
            )


def _challenger(report: MonitorReport) -> None:
    found = report.challenger
    if not found:
        return
    console.print(
        f"challenger v{found['version']} ({found['alias']}) {found['verdict']}: "
        f"{found.get('reason', '')}",
        highlight=False,
    )
    action = found.get("action")
    if action:
        done = {"promote": "promoted to champion", "drop": "alias removed"}
        said = done.get(action["action"], f"{action['action']}: {action.get('reason', '')}")
        console.print(f"  challenger policy: {said}", highlight=False)


def _retrain(report: MonitorReport) -> None:
    retrain = report.retrain or {}
    if retrain.get("skipped"):
        console.print(
            f"retrain policy fires ({retrain['reason']}) but nothing was trained: "
            f"{retrain['skipped']}",
            highlight=False,
        )
    elif retrain.get("triggered"):
        if retrain.get("error"):
            console.print(f"retraining failed: {retrain['error']}", highlight=False)
        else:
            console.print(
                f"retrained: v{retrain['version']} "
                f"({'promoted' if retrain['promoted'] else 'not promoted'}: {retrain['gate']})",
                highlight=False,
            )
    elif retrain.get("reason"):
        console.print(f"retrain policy fires ({retrain['reason']}): rerun with --retrain")


def doctor_checks(checks: list[Check], secrets: tuple[str, ...]) -> None:
    table = Table(title="mlcycle doctor")
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col)
    for c in checks:
        table.add_row(
            c.name,
            "[green]ok[/]" if c.ok else "[red]FAIL[/]",
            Text(redact_text(c.detail, secrets)),
            Text(redact_text(c.fix, secrets)),
        )
    console.print(table)


def versions(name: str, rows: list[VersionRow]) -> None:
    table = Table(title=f"{name}: {len(rows)} version(s)")
    for col in ("version", "created", "rows", "data", "roc_auc", "accuracy", "gate", "aliases"):
        table.add_column(col, justify="right" if col in ("rows", "roc_auc", "accuracy") else "left")
    for r in rows:
        table.add_row(
            f"v{r.version}" + ("" if r.servable is not False else " (not servable)"),
            r.created[:16].replace("T", " "),
            "—" if r.rows is None else f"{r.rows:,}",
            (r.data_hash or "—")[:8],
            _number(r.metrics.get("roc_auc")),
            _number(r.metrics.get("accuracy")),
            r.gate or "—",
            ", ".join(r.aliases),
        )
    console.print(table)
    for r in rows:
        if r.reason:
            console.print(f"v{r.version}: {r.reason}", highlight=False)


def history(name: str, events: list[Event]) -> None:
    """One line per decision (a table is unreadable in a narrow terminal: reasons are long)."""
    if not events:
        console.print(f"{name}: no decision recorded yet", highlight=False)
        return
    console.print(f"{name}: {len(events)} decision(s), oldest first", highlight=False)
    for e in events:
        rows = (e.evaluation or {}).get("set") or {}
        move = (
            f"{e.alias} v{e.before or '-'} -> v{e.after or '-'}"
            if e.moved
            else f"{e.alias} stays v{e.after or '-'}"
        )
        about = f" (v{e.candidate})" if e.candidate and e.candidate != e.after else ""
        on = f" on {rows['rows']:,} rows #{str(rows.get('hash'))[:8]}" if rows.get("rows") else ""
        console.print(
            f"{e.at[:19].replace('T', ' ')}  {e.action:<8} {move}{about}  "
            f"by {e.by} ({e.user}){on}: {e.reason}",
            highlight=False,
            soft_wrap=True,
        )


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"
