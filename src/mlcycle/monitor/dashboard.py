"""The monitoring dashboard: one self-contained HTML page (inline CSS and SVG, no script,
no CDN), rendered from a `MonitorReport` and the reports before it.

Every text that comes from data (feature names, categories, labels) is escaped: a
category value is user input.
"""

from __future__ import annotations

import math
from datetime import datetime
from html import escape
from typing import Any

from mlcycle.monitor.report import Drift, MonitorReport, Performance
from mlcycle.monitor.stats import UNSEEN_BIN
from mlcycle.store.base import as_datetime

COLOURS = {"ok": "#2e7d32", "watch": "#ef8f00", "drift": "#c62828"}
REF, CUR = "#8da9c4", "#e4572e"


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _when(value: Any) -> str:
    if value in (None, ""):
        return "—"
    try:
        return as_datetime(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError):
        return _e(value)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def psi_chart(report: MonitorReport) -> str:
    """Horizontal PSI bars per feature and for the score, with the two thresholds."""
    th = report.thresholds
    parts = list(report.drift_rows())
    # a drifted feature's PSI can be 5 or more: cap the axis so the thresholds stay apart
    top = max(th["psi_act"] * 1.6, min(max(v.psi for _, v in parts), 1.0) * 1.05)
    width, left, bar, gap = 760, 170, 16, 6
    plot = width - left - 60
    height = 30 + len(parts) * (bar + gap) + 20

    def x(v: float) -> float:
        return left + plot * min(v, top) / top

    out = [
        f'<svg class="chart psi" role="img" aria-label="PSI per feature" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for i, (name, v) in enumerate(parts):
        y = 20 + i * (bar + gap)
        colour = COLOURS[v.status]
        out.append(
            f'<text x="{left - 8}" y="{y + bar - 4}" text-anchor="end" class="lbl">{_e(name)}</text>'
            f'<rect class="bar" data-feature="{_e(name)}" data-status="{v.status}" x="{left}" '
            f'y="{y}" width="{max(x(v.psi) - left, 1):.1f}" height="{bar}" fill="{colour}">'
            f"<title>{_e(name)}: PSI {v.psi:.4f} ({v.status})</title></rect>"
            f'<text x="{x(v.psi) + 4:.1f}" y="{y + bar - 4}" class="val">{v.psi:.3f}'
            f"{' ▶' if v.psi > top else ''}</text>"
        )
    bottom = 20 + len(parts) * (bar + gap)
    for key, label in (("psi_watch", "watch"), ("psi_act", "drift")):
        tx = x(th[key])
        out.append(
            f'<line class="threshold" x1="{tx:.1f}" x2="{tx:.1f}" y1="12" y2="{bottom}" '
            f'stroke="{COLOURS["watch" if label == "watch" else "drift"]}" stroke-dasharray="4 3"/>'
            f'<text x="{tx:.1f}" y="10" text-anchor="{"end" if label == "watch" else "start"}" '
            f'class="val">{label} {th[key]:g}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _drawn_bins(feat: Drift) -> list[tuple[str, float, float]]:
    """(bin, reference share, current share) to draw: an "(unseen)" bin only when some
    row fell in it (training has none by definition)."""
    return [
        (str(label), ref, cur)
        for label, ref, cur in zip(feat.bins, feat.reference, feat.current, strict=False)
        if not (label == UNSEEN_BIN and ref == 0 and cur == 0)
    ]


def _tick(label: str, x: float, y: float) -> str:
    """A bin's label under its bars: a numeric range on two lines ("a –", "b"), whole;
    a long category cut with its full text in the tooltip."""
    if " – " in label:
        low, high = label.split(" – ", 1)
        return (
            f'<text class="tick" x="{x:.1f}" y="{y}" transform="rotate(35 {x:.1f} {y})">'
            f'<title>{_e(label)}</title><tspan x="{x:.1f}">{_e(low)} –</tspan>'
            f'<tspan x="{x:.1f}" dy="11">{_e(high)}</tspan></text>'
        )
    short = label if len(label) <= 14 else label[:13] + "…"
    return (
        f'<text class="tick" x="{x:.1f}" y="{y}" transform="rotate(35 {x:.1f} {y})">'
        f"<title>{_e(label)}</title>{_e(short)}</text>"
    )


def distribution_chart(name: str, feat: Drift) -> str:
    """Reference and current shares per bin, side by side."""
    drawn = _drawn_bins(feat)
    width, height, pad_b, pad_l = 420, 210, 68, 34
    plot_w, plot_h = width - pad_l - 40, height - pad_b - 14
    top = max([*(r for _, r, _ in drawn), *(c for _, _, c in drawn), 0.01])
    slot = plot_w / max(len(drawn), 1)
    bw = max(slot * 0.38, 1.0)
    out = [
        f'<svg class="chart dist" data-feature="{_e(name)}" role="img" '
        f'aria-label="{_e(name)} distribution" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
        f'<text x="{pad_l}" y="10" class="val">share (max {top:.0%})</text>'
    ]
    for i, (label, ref, cur) in enumerate(drawn):
        x0 = pad_l + i * slot + slot * 0.1
        for j, (value, colour, kind) in enumerate(((ref, REF, "reference"), (cur, CUR, "current"))):
            h = plot_h * value / top
            out.append(
                f'<rect class="bar {kind}" x="{x0 + j * bw:.1f}" y="{14 + plot_h - h:.1f}" '
                f'width="{bw:.1f}" height="{max(h, 0.5):.1f}" fill="{colour}">'
                f"<title>{_e(label)}: {kind} {value:.1%}</title></rect>"
            )
        out.append(_tick(label, x0 + bw, height - pad_b + 14))
    out.append(
        f'<line x1="{pad_l}" x2="{width - 8}" y1="{14 + plot_h}" y2="{14 + plot_h}" stroke="#999"/>'
        "</svg>"
    )
    return "".join(out)


def timeline_chart(history: list[MonitorReport]) -> str:
    """Realized accuracy and ROC AUC per report over time, validation AUC dashed."""
    points: list[tuple[datetime, Performance]] = [
        (as_datetime(r.ts), r.performance)
        for r in reversed(history)
        if r.performance is not None and r.ts is not None
    ]
    if not points:
        return (
            '<p class="note">No matured predictions yet: realized performance appears once '
            "labelled rows for predicted ids are loaded by `mlcycle etl`.</p>"
        )
    if len(points) == 1:
        when, perf = points[0]
        return (
            f'<p class="note timeline-one">One report with matured labels so far '
            f"({_when(when)}): accuracy {_num(perf.accuracy)}, ROC AUC {_num(perf.roc_auc)}. "
            "The chart over time starts with the second.</p>"
        )
    width, height, pad = 640, 220, 40
    t0 = points[0][0].timestamp()
    span = max(points[-1][0].timestamp() - t0, 1.0)

    def xy(t: datetime, v: float) -> tuple[float, float]:
        return (
            pad + (width - 2 * pad) * (t.timestamp() - t0) / span,
            height - pad - (height - 2 * pad) * v,
        )

    out = [
        f'<svg class="chart timeline" role="img" aria-label="realized metrics over time" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for v in (0.0, 0.5, 1.0):
        _, y = xy(points[0][0], v)
        out.append(
            f'<line x1="{pad}" x2="{width - pad}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{pad - 6}" y="{y + 4:.1f}" text-anchor="end" class="val">{v:.1f}</text>'
        )
    valid = points[-1][1].validation.get("roc_auc")
    if valid is not None:
        _, y = xy(points[0][0], valid)
        out.append(
            f'<line class="validation" x1="{pad}" x2="{width - pad}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{REF}" stroke-dasharray="5 4"/><text x="{width - pad}" y="{y - 4:.1f}" '
            f'text-anchor="end" class="val">validation AUC {valid:.3f}</text>'
        )
    for key, colour in (("accuracy", "#1565c0"), ("roc_auc", CUR)):
        coords = [xy(t, getattr(p, key)) for t, p in points if getattr(p, key) is not None]
        if not coords:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out += [
            f'<circle class="point {key}" cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>'
            for x, y in coords
        ]
    out.append(
        f'<text x="{pad}" y="{height - 10}" class="val">{_when(points[0][0])}</text>'
        f'<text x="{width - pad}" y="{height - 10}" text-anchor="end" class="val">'
        f"{_when(points[-1][0])}</text>"
        f'<text x="{pad}" y="14" class="val"><tspan fill="#1565c0">● accuracy</tspan> '
        f'<tspan fill="{CUR}">● ROC AUC</tspan></text></svg>'
    )
    return "".join(out)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1320px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
th{background:#f6f6f6}.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:18px}.card{border:1px solid #e3e3e3;border-radius:6px;padding:10px 12px}
.card h3{font-size:15px;margin:0 0 4px}.lbl,.tick{font-size:11px;fill:#333}.val{font-size:11px;fill:#555}
.note{color:#666}.legend span{display:inline-block;width:11px;height:11px;margin:0 4px 0 12px;vertical-align:-1px}
"""


def _lineage(report: MonitorReport) -> str:
    win = report.window
    rows = [
        ("model", f"{_e(report.model_name)} v{_e(report.model_version)}"),
        ("MLflow run", _e(report.run_id)),
        ("training data hash", f"<code>{_e(report.training_data_hash)}</code>"),
        ("training rows", _e(report.training_rows)),
        ("window", f"{_when(win.first_ts)} → {_when(win.last_ts)}"),
        (
            "predictions",
            f"{win.rows:,} in {win.requests or 0:,} requests"
            + (f" (since {_when(win.since)})" if win.since else "")
            + (f" (newest {win.last:,})" if win.last else ""),
        ),
        ("report", _when(report.ts)),
    ]
    return "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)


def _drift_table(report: MonitorReport) -> str:
    rows = []
    for name, f in report.drift_rows():
        extra = ""
        if f.unseen is not None and f.unseen.values:
            extra = "unseen: " + ", ".join(f"{_e(k)} ({v})" for k, v in f.unseen.values.items())
        statistic = "—" if f.test.statistic is None else f"{f.test.statistic:.4f}"
        rows.append(
            f'<tr><td>{_e(name)}</td><td><span class="badge" style="background:{COLOURS[f.status]}"'
            f' title="{_e(f.why or "")}">{f.status}</span></td><td class="num">{f.psi:.4f}</td>'
            f'<td>{f.test.name}</td><td class="num">{statistic}</td>'
            f'<td class="num">{f.test.p_value:.3g}</td>'
            f'<td class="num">{f.missing.reference:.1%} → {f.missing.current:.1%}</td>'
            f'<td>{extra}</td><td class="why">{_e(f.why or "")}</td></tr>'
        )
    return "".join(rows)


SUMMARY_KEYS = {
    "numeric": ("rows", "missing", "mean", "std", "min", "p25", "median", "p75", "max"),
    "categorical": ("rows", "distinct", "top", "top_share"),
}


def summary_table(f: Drift) -> str:
    """A feature's summary statistics, training against the window, side by side."""
    if not f.summary:
        return ""
    ref, cur = f.summary.get("reference", {}), f.summary.get("current", {})

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "—"
        if key in ("missing", "top_share"):
            return f"{value:.1%}"
        if isinstance(value, str):
            return _e(value)
        if key in ("rows", "distinct"):
            return f"{int(value):,}"
        return f"{value:.4g}"

    keys = SUMMARY_KEYS.get(f.kind or "numeric", SUMMARY_KEYS["numeric"])
    rows = "".join(
        f'<tr><td>{k.replace("_", " ")}</td><td class="num">{cell(k, ref.get(k))}</td>'
        f'<td class="num">{cell(k, cur.get(k))}</td></tr>'
        for k in keys
    )
    return (
        f'<table class="summary"><tr><th></th><th>training</th><th>window</th></tr>{rows}</table>'
    )


def _cards(report: MonitorReport) -> str:
    return "".join(
        f'<div class="card"><h3>{_e(name)} <span class="badge" '
        f'style="background:{COLOURS[f.status]}">PSI {f.psi:.3f}</span></h3>'
        f"{distribution_chart(name, f)}{summary_table(f)}</div>"
        for name, f in report.drift_rows()
    )


def _labels(report: MonitorReport) -> str:
    return "".join(
        f'<tr><td>{_e(k)}</td><td class="num">{v.reference:.1%}</td>'
        f'<td class="num">{v.current:.1%}</td></tr>'
        for k, v in report.labels.items()
    )


def _performance(perf: Performance | None) -> str:
    if perf is None:
        return '<p class="note">No prediction in this window has a label yet.</p>'

    def ci(key: str) -> str:
        lo_hi = getattr(perf, f"{key}_ci")
        return f"{lo_hi[0]:.3f} – {lo_hi[1]:.3f}" if lo_hi else "—"

    calibration = perf.calibration or {}
    return (
        f"<p>{perf.matured:,} matured predictions"
        + (f" ({perf.positives:,} positive)" if perf.positives is not None else "")
        + ".</p>"
        "<table><tr><th>metric</th><th>realized</th><th>95 % interval</th><th>validation</th></tr>"
        + "".join(
            f'<tr><td>{k}</td><td class="num">{_num(getattr(perf, k))}</td>'
            f'<td class="num">{ci(k)}</td><td class="num">{_num(perf.validation.get(k))}</td></tr>'
            for k in ("accuracy", "f1", "roc_auc")
        )
        + f'<tr><td>calibration error (ECE)</td><td class="num">{_num(calibration.get("ece"))}</td>'
        f'<td></td><td></td></tr><tr><td>Brier score</td><td class="num">'
        f"{_num(calibration.get('brier'))}</td><td></td><td></td></tr></table>" + _classes(perf)
    )


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def _fairness(found: dict[str, Any] | None) -> str:
    """Per sensitive column: each group's selection rate against training and, on
    matured rows, TPR, FPR and accuracy; the disparities between the groups."""
    if not found:
        return (
            '<p class="note">No sensitive column in the spec (or more than two labels): '
            "nothing is measured by group.</p>"
        )

    def ci(g: dict[str, Any], key: str) -> str:
        lo_hi = g.get(f"{key}_ci")
        return f'<span class="legend">{lo_hi[0]:.3f}–{lo_hi[1]:.3f}</span>' if lo_hi else ""

    out = []
    for column, part in found.items():
        rows = "".join(
            f'<tr><td>{_e(group)}</td><td class="num">{g.get("rows", 0):,}</td>'
            f'<td class="num">{_num(g.get("selection_rate"))} {ci(g, "selection_rate")}</td>'
            f'<td class="num">{_num(g.get("training_selection_rate"))}</td>'
            f'<td class="num">{_signed(g.get("change"))}</td><td class="num">{g.get("matured", 0):,}</td>'
            + "".join(
                f'<td class="num">{_num(g.get(k))} {ci(g, k)}</td>'
                for k in ("tpr", "fpr", "accuracy")
            )
            + "</tr>"
            for group, g in (part.get("groups") or {}).items()
        )
        out.append(
            f"<h3>{_e(column)}</h3><p>demographic parity difference "
            f"{_num(part.get('demographic_parity_difference'))}, ratio "
            f"{_num(part.get('demographic_parity_ratio'))}; equalized-odds difference "
            f"{_num(part.get('equalized_odds_difference'))} (matured rows)</p>"
            "<table><tr><th>group</th><th>rows</th><th>selection rate</th><th>training</th>"
            "<th>change</th><th>matured</th><th>TPR</th><th>FPR</th><th>accuracy</th></tr>"
            f"{rows}</table>"
        )
    return "".join(out)


def _classes(perf: Performance) -> str:
    """The confusion matrix (true label by predicted label) and each label's precision,
    recall, F1 and support."""
    if not perf.confusion or not perf.per_class:
        return ""
    labels = [str(x) for x in perf.confusion["labels"]]
    head = "".join(f"<th>predicted {_e(x)}</th>" for x in labels)
    counts = perf.confusion["counts"]
    matrix = "".join(
        f"<tr><th>true {_e(t)}</th>"
        + "".join(f'<td class="num">{int(counts[t][p]):,}</td>' for p in labels)
        + "</tr>"
        for t in labels
    )
    per_class = "".join(
        f"<tr><td>{_e(x)}</td>"
        + "".join(
            f'<td class="num">{_num(perf.per_class[x].get(k))}</td>'
            for k in ("precision", "recall", "f1")
        )
        + f'<td class="num">{perf.per_class[x].get("support", 0):,}</td></tr>'
        for x in labels
        if x in perf.per_class
    )
    return (
        f'<table class="confusion"><tr><th></th>{head}</tr>{matrix}</table>'
        '<table class="per-class"><tr><th>label</th><th>precision</th><th>recall</th>'
        f"<th>F1</th><th>support</th></tr>{per_class}</table>"
    )


def _retraining(report: MonitorReport) -> str:
    retrain = report.retrain or {}
    if retrain.get("error"):
        outcome = f" → retraining failed: {_e(retrain['error'])}"
    elif retrain.get("skipped"):
        outcome = f" → nothing trained: {_e(retrain['skipped'])}"
    elif retrain.get("triggered"):
        outcome = (
            f" → training run {_e(retrain.get('run_id'))}, version {_e(retrain.get('version'))}, "
            f"{'promoted' if retrain.get('promoted') else 'not promoted'} ({_e(retrain.get('gate'))})"
        )
    else:
        outcome = ""
    return f"<p>Policy: {_e(retrain.get('reason') or 'not triggered')}{outcome}</p>"


def _verdict_colour(verdict: str) -> str:
    colours = {"drift": COLOURS["drift"], "degraded": COLOURS["drift"], "watch": COLOURS["watch"]}
    return colours.get(verdict, COLOURS["ok"] if verdict == "ok" else "#777")


def render(
    report: MonitorReport | dict[str, Any],
    history: list[MonitorReport] | list[dict[str, Any]] | None = None,
) -> str:
    """The page for `report`; `history` (newest first, `report` included or not) feeds
    the realized-metrics timeline."""
    report = MonitorReport.of(report)
    past = [MonitorReport.of(h) for h in history or [report]]
    if all(h.id != report.id for h in past):
        past = [report, *past]
    th = report.thresholds
    title = f"{_e(report.model_name)} v{_e(report.model_version)}"
    reasons = "; ".join(_e(r) for r in report.reasons)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mlcycle monitoring: {title}</title>
<style>{CSS}</style></head>
<body>
<h1>{title}
<span class="badge" id="verdict" style="background:{_verdict_colour(report.verdict)}">{_e(report.verdict)}</span></h1>
<p class="note">{reasons or "no feature drifted"}</p>
<h2>Lineage</h2><table>{_lineage(report)}</table>
<h2>Drift per feature (PSI)</h2>
<p class="legend">thresholds: watch {th["psi_watch"]:g}, drift {th["psi_act"]:g};
a flag also needs p &lt; {th["alpha"]:g}
<span style="background:{COLOURS["ok"]}"></span>ok<span style="background:{COLOURS["watch"]}"></span>watch<span style="background:{COLOURS["drift"]}"></span>drift</p>
{psi_chart(report)}
<table><tr><th>feature</th><th>status</th><th>PSI</th><th>test</th><th>statistic</th><th>p-value</th><th>missing</th><th></th><th>why</th></tr>
{_drift_table(report)}</table>
<h2>Distributions <span class="legend"><span style="background:{REF}"></span>reference (training)<span style="background:{CUR}"></span>current window</span></h2>
<div class="grid">{_cards(report)}</div>
<h2>Predicted labels</h2>
<table><tr><th>label</th><th>training</th><th>window</th></tr>{_labels(report)}</table>
<h2>Realized performance</h2>{_performance(report.performance)}
<h3>Over time</h3>{timeline_chart(past)}
<h2>Fairness</h2>{_fairness(report.fairness)}
<h2>Retraining</h2>{_retraining(report)}
</body></html>
"""
