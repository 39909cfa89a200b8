"""The quality gate: a small, pure decision on whether a candidate becomes champion.

It lives beside the registry (not in the training stage) because both `train` and
`promote` ask it, and the serving stage must never import training code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GateMetric = Literal["roc_auc", "accuracy", "f1", "precision", "recall"]
Disparity = Literal[
    "demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference"
]


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: GateMetric = "roc_auc"
    tolerance: float = Field(default=0.01, ge=0.0)
    min_lift: float = Field(default=0.0, ge=0.0)
    on_pass: Literal["champion", "challenger"] = "champion"
    """Where a trained candidate that passes goes when a champion exists: `champion`, or
    `challenger` (scored in shadow beside the champion until proven on live traffic)."""
    fairness: dict[
        Disparity,
        float,
    ] = Field(default_factory=dict)
    """Bounds on each sensitive column's disparities on the evaluation rows (differences
    at most, the ratio at least); a candidate past one is refused. Empty: off."""
    fairness_tolerance: dict[
        Disparity,
        float,
    ] = Field(default_factory=dict)
    """How much worse than the champion's, on the same evaluation rows, a candidate's
    disparity may be (a difference up by at most, the ratio down by at most); a
    candidate past one is refused. Empty: off."""


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def should_promote(
    candidate: Mapping[str, float],
    baseline: Mapping[str, float],
    champion: Mapping[str, float] | None,
    gate: GateConfig,
    contract_change: str | None = None,
    runtime_problem: str | None = None,
    incomparable: str | None = None,
) -> Decision:
    """Promote only if the candidate beats the majority-class baseline by more than
    `min_lift` on the gate metric, the serving runtime can serve it (`runtime_problem`
    says why not), its feature contract equals the champion's (`contract_change` says how
    it differs), and it is not worse than the champion by more than `tolerance` (no
    champion yet: the checks before that decide). `incomparable` says why the champion
    could not be scored on the candidate's evaluation rows: no automatic promotion then."""
    metric = gate.metric
    cand = candidate.get(metric)
    if cand is None:
        return Decision(False, f"candidate has no {metric}")
    base = baseline.get(metric, float("-inf"))
    if not cand > base + gate.min_lift:
        return Decision(
            False,
            f"{metric} {cand:.4f} does not beat the majority-class baseline {base:.4f}"
            + (f" by more than {gate.min_lift:g}" if gate.min_lift else ""),
        )
    if runtime_problem:
        return Decision(False, f"the serving runtime cannot serve it: {runtime_problem}")
    if contract_change:
        return Decision(
            False,
            f"its feature contract differs from the champion's ({contract_change}): "
            "metrics on different contracts are not comparable; promote it by hand with "
            "--force --reason",
        )
    if incomparable:
        return Decision(
            False,
            f"it cannot be compared with the champion on the same rows ({incomparable}); "
            "promote it by hand with --force --reason",
        )
    if champion is None or champion.get(metric) is None:
        return Decision(True, f"{metric} {cand:.4f} beats the baseline {base:.4f}; no champion yet")
    champ = champion[metric]
    if cand < champ - gate.tolerance:
        return Decision(
            False,
            f"{metric} {cand:.4f} is worse than the champion's {champ:.4f} "
            f"by more than the tolerance {gate.tolerance:g}",
        )
    return Decision(
        True,
        f"{metric} {cand:.4f} beats the baseline {base:.4f} and is within {gate.tolerance:g} "
        f"of (or above) the champion's {champ:.4f}",
    )
