"""The quality gate: a small, pure decision on whether a candidate becomes champion."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlcycle.train.config import GateConfig


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def should_promote(
    candidate: Mapping[str, float],
    baseline: Mapping[str, float],
    champion: Mapping[str, float] | None,
    gate: GateConfig,
) -> Decision:
    """Promote only if the candidate beats the majority-class baseline by more than
    `min_lift` on the gate metric, and is not worse than the champion by more than
    `tolerance` (no champion yet: the baseline check alone decides)."""
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
