"""A model card with every version (`model_card.md` and `model_card.html`): what the
model is for and not for, what it learned from, how it did against the baseline and the
champion on which rows, how it treats each group of the sensitive columns, what the gate
decided and why, and its limits. Written from the spec, the config and the run's own
numbers; logged with the run (and inside the serving bundle, so the server answers
`GET /model/card` for the version it serves).

The spec may say `intended_use` and `limitations` (free text); otherwise the card says
what the project knows and marks the rest as for the owner to write.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from mlcycle.spec import DatasetSpec

CARD_MD = "model_card.md"
CARD_HTML = "model_card.html"
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")


def _num(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_num(c) for c in row) + " |" for row in rows]
    return out


def _fairness(fairness: dict[str, Any], spec: DatasetSpec) -> list[str]:
    if not spec.sensitive:
        return ["The spec names no `sensitive` column: nothing was measured by group."]
    if not fairness:
        return ["Measured for two labels only: this target has more."]
    out = []
    for column, part in fairness.items():
        used = "a model input" if column in spec.feature_columns else "not a model input"
        out += [
            f"**{column}** ({used}): demographic parity difference "
            f"{_num(part.get('demographic_parity_difference'))}, ratio "
            f"{_num(part.get('demographic_parity_ratio'))}; equalized-odds difference "
            f"{_num(part.get('equalized_odds_difference'))}.",
            "",
        ]
        rows = [
            [g, m["count"], m["selection_rate"], m["tpr"], m["fpr"], m["accuracy"], m["roc_auc"]]
            for g, m in part["groups"].items()
        ]
        out += _table(
            ["group", "rows", "selection rate", "TPR", "FPR", "accuracy", "ROC AUC"], rows
        )
        out.append("")
    return out


def _evaluation(result: dict[str, Any], champion: dict[str, Any]) -> list[str]:
    """The metrics table (model, baseline, champion) and the CV line."""
    lines: list[str] = []
    intervals = result.get("intervals") or {}
    head = ["metric", "model", "95 % interval", "baseline"] + (["champion"] if champion else [])
    table_rows = [
        [
            m,
            result["metrics"].get(m),
            " – ".join(f"{v:.4f}" for v in intervals[m]) if m in intervals else "—",
            result["baseline"].get(m),
        ]
        + ([champion.get(m)] if champion else [])
        for m in METRICS
        if m in result["metrics"]
    ]
    lines += _table(head, table_rows)
    cv = result.get("cv") or {}
    if cv:
        lines += [
            "",
            "Cross-validation on the training part: "
            + ", ".join(f"{k} {v:.4f}" for k, v in sorted(cv.items())),
        ]
    return lines


def render_card(
    spec: DatasetSpec, kind: str, params: dict[str, Any], result: dict[str, Any]
) -> str:
    """The card in Markdown. `result`: rows, data_hash, batches, metrics, baseline, cv,
    evaluation (the decision's evidence), decision, fairness, run_id."""
    assert spec.target is not None
    evaluation = result.get("evaluation") or {}
    rows_set = evaluation.get("set") or {}
    champion = evaluation.get("champion") or {}
    lines = [
        f"# Model card: {spec.registered_model}",
        "",
        f"Run `{result.get('run_id')}`, trained {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "## Model",
        "",
        f"- Kind: `{kind}`; parameters: `{params}`",
        f"- Predicts `{spec.target.column}` ({', '.join(spec.target.label_order)})"
        + (f", positive label `{spec.target.positive}`" if spec.target.positive else ""),
        f"- Inputs: {', '.join(spec.feature_columns)}",
        "",
        "## Intended use",
        "",
        spec.intended_use
        or "Not stated in the spec (`intended_use`): the model's owner should say who may "
        "use it, for which decisions, and which uses are out of scope.",
        "",
        "## Training data",
        "",
        f"- Dataset `{spec.name}`: {result.get('rows')} labelled rows, data hash "
        f"`{str(result.get('data_hash'))[:16]}`, ETL batches {', '.join(result.get('batches') or []) or '—'}",
        *_data_lines(result),
        "",
        "## Evaluation",
        "",
        f"On {rows_set.get('rows', '?')} hold-out rows (set `{str(rows_set.get('hash', ''))[:12]}`) "
        "that the model did not learn from, against the majority-class baseline"
        + (" and the champion" if champion else "")
        + ":",
        "",
    ]
    lines += _evaluation(result, champion)
    decision = result.get("decision") or {}
    lines += [
        "",
        "## Fairness",
        "",
        *_fairness(result.get("fairness") or {}, spec),
        "",
        "## Decision",
        "",
        f"{'Promoted' if decision.get('promote') else 'Not promoted'}: {decision.get('reason', '—')}",
        "",
        *_out_of_scope(spec),
        "## Limitations",
        "",
        spec.limitations
        or "Not stated in the spec (`limitations`). What the project knows: the numbers "
        "above are measured on rows from the same store as the training rows, and hold "
        "only while new applicants resemble them (the monitor watches for drift); "
        "fairness is measured on the groups present in the evaluation rows, with the "
        "intervals in `evaluation/fairness.json`.",
        "",
        "## How it decides",
        "",
        *_importance(result.get("importance") or {}),
        "",
        *_rules(
            result.get("rules") or [],
            result["metrics"].get("accuracy"),
            (result.get("intervals") or {}).get("accuracy"),
        ),
        "",
    ]
    return "\n".join(lines)


def _data_lines(result: dict[str, Any]) -> list[str]:
    """When the rows were loaded, and how many carry each label."""
    out = []
    loaded = result.get("loaded")
    if loaded:
        out.append(f"- Loaded by the ETL between {loaded[0][:19]} and {loaded[1][:19]} (UTC)")
    labels = result.get("labels") or {}
    total = sum(labels.values())
    if total:
        out.append(
            "- Label balance: "
            + ", ".join(f"`{k}` {v} ({v / total:.1%})" for k, v in labels.items())
        )
    return out


def _out_of_scope(spec: DatasetSpec) -> list[str]:
    if not spec.out_of_scope:
        return []
    return ["## Out-of-scope uses", "", *(f"- {use}" for use in spec.out_of_scope), ""]


def _importance(importance: dict[str, float]) -> list[str]:
    if not importance:
        return ["This version has no explainer: no feature importance."]
    return [
        "Global feature importance: each feature's mean absolute contribution to the raw "
        "score on the hold-out rows (the numbers `POST /predict?explain=true` gives):",
        "",
        *_table(["feature", "mean abs contribution"], [[k, v] for k, v in importance.items()]),
    ]


RULES_SHOWN = 3


def _rules(
    rules: list[dict[str, Any]], accuracy: float | None, interval: list[float] | None
) -> list[str]:
    """The best one-feature rules against the model, on the same hold-out rows."""
    if not rules:
        return []
    best = rules[0]
    gap = None if accuracy is None else accuracy - best["accuracy"]
    within = ""
    if interval and best["accuracy"] > interval[1]:
        within = " That is above the model's 95 % interval: the rule does better on these rows."
    elif interval and best["accuracy"] < interval[0]:
        within = " That is below the model's 95 % interval: the model does better on these rows."
    elif interval:
        within = (
            " That is within the model's 95 % interval: on these rows the model is not "
            "shown to do better than the rule."
        )
    return [
        "One-feature rules (each fitted on the training part, scored on the same hold-out "
        f"rows): the best, on `{best['feature']}`, reaches accuracy {_num(best['accuracy'])}"
        + (f", the model {_num(accuracy)} ({gap:+.4f})." if gap is not None else ".")
        + within,
        "",
        *_table(
            ["feature", "rule", "accuracy"],
            [[r["feature"], f"`{r['rule'][:120]}`", r["accuracy"]] for r in rules[:RULES_SHOWN]],
        ),
    ]


def card_html(markdown: str) -> str:
    """The card as one self-contained HTML page (no script, no CDN; text escaped)."""
    body = []
    table: list[str] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                tag = "th" if not table else "td"
                table.append(
                    "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"
                )
            continue
        if table:
            body.append("<table>" + "".join(table) + "</table>")
            table = []
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem}"
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Model card</title>'
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
