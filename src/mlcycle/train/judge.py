"""Every decision between two versions, measured one way (`mlcycle.train.holdout`).

The training gate, `mlcycle promote`, `monitor --retrain` and the challenger policy all
call `judge`: both models score the same evaluation set (the rows both held out), the
majority-class baseline is fitted on the rows outside the candidate's hold-out, and the
verdict carries the evaluation set's row count and hash. A rival that cannot be scored
on those rows is never replaced by numbers measured elsewhere: the gate refuses and says
so (`--force --reason` stays the way past it).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlcycle import registry
from mlcycle.errors import TrainingError
from mlcycle.gate import Decision, GateConfig, should_promote
from mlcycle.spec import DatasetSpec
from mlcycle.train import fairness, holdout
from mlcycle.train.evaluation import evaluate, positive_class
from mlcycle.train.snapshot import Snapshot

logger = logging.getLogger(__name__)

HOLDOUT_TAG = registry.TAG + "holdout"


@dataclass
class Contender:
    """One side of a comparison: the model, or why it cannot be scored."""

    label: str
    """`candidate` for an unregistered fit, else `vN`."""
    version: str | None
    model: Any
    fraction: float | None
    """Its hold-out fraction; None when it predates the stable hold-out."""
    contract: str | None
    runtime_problem: str | None = None
    load_error: str | None = None


@dataclass
class Verdict:
    decision: Decision
    evaluation: dict[str, Any]
    candidate: dict[str, float]
    champion: dict[str, float] | None
    baseline: dict[str, float]
    notes: list[str] = field(default_factory=list)
    fairness: dict[str, Any] | None = None
    """Both models' disparities on the evaluation rows (`candidate`, `champion`), when
    the spec has sensitive columns, two labels and a champion was scored."""

    def record(self) -> dict[str, Any]:
        """What the decision record and the run's evaluation keep."""
        return {
            "set": self.evaluation,
            "candidate": self.candidate,
            "champion": self.champion,
            "baseline": self.baseline,
            "notes": self.notes,
            "fairness": self.fairness,
        }


def registered(client: Any, info: registry.VersionInfo) -> Contender:
    """A registered version as a contender, its pipeline loaded from MLflow."""
    from mlcycle.train.mlflow_model import load_pipeline

    started = time.perf_counter()
    runtime = info.tags.get(registry.RUNTIME_TAG)
    contender = Contender(
        f"v{info.version}",
        info.version,
        None,
        holdout.fraction_of(info.tags, HOLDOUT_TAG),
        info.tags.get(registry.CONTRACT_TAG),
        None if runtime == "onnx" else f"runtime {runtime or 'unknown'}",
    )
    logger.info("loading %s v%s from MLflow ...", info.name, info.version)
    try:
        contender.model = load_pipeline(f"models:/{info.name}/{info.version}")
    except Exception as err:  # a broken or foreign model: said in the verdict
        contender.load_error = f"{type(err).__name__}: {str(err)[:300]}"
    logger.info("loaded %s v%s in %.1f s", info.name, info.version, time.perf_counter() - started)
    return contender


def _contract_change(candidate: Contender, champion: Contender) -> str | None:
    if candidate.contract and candidate.contract == champion.contract:
        return None
    if not champion.contract:
        return f"champion {champion.label} records no contract"
    return (
        f"contract {(candidate.contract or 'none')[:12]} vs champion {champion.label}'s "
        f"{champion.contract[:12]}"
    )


def scores(
    who: Contender, es: holdout.EvaluationSet, spec: DatasetSpec, classes: list[int]
) -> dict[str, float]:
    """`who`'s metrics on the evaluation set; a model that cannot read the spec's rows
    (trained on another spec) is a clear error, not a traceback."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            return evaluate(who.model, es.X, es.y, positive_class(spec), classes)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise TrainingError(
            f"{who.label} cannot score the rows of spec {spec.name!r} "
            f"({type(err).__name__}: {str(err)[:200]}): judge it with the spec it was "
            "trained on (--spec)"
        ) from err


def judge(
    snapshot: Snapshot,
    spec: DatasetSpec,
    gate: GateConfig,
    candidate: Contender,
    champion: Contender | None,
    default_fraction: float = 0.2,
) -> Verdict:
    """The gate's verdict on `candidate` against `champion`, both scored on the same rows
    (a version from before the stable hold-out is judged on the champion's hold-out, or
    on `default_fraction`'s, with a note)."""
    from sklearn.dummy import DummyClassifier

    started = time.perf_counter()
    notes: list[str] = []
    own = candidate.fraction
    if own is None:
        own = champion.fraction if champion and champion.fraction else default_fraction
        notes.append(
            f"{candidate.label} predates the stable hold-out: it may have learned from "
            "some of these rows"
        )
    fraction = own
    if champion is not None:
        if champion.fraction is None:
            notes.append(
                f"champion {champion.label} predates the stable hold-out: it may have "
                "learned from some of these rows"
            )
        else:
            fraction = min(own, champion.fraction)
    es = snapshot.evaluation_set(fraction)
    classes = [int(c) for c in np.unique(snapshot.y)]
    if len(np.unique(es.y)) < 2:
        raise TrainingError(
            f"the evaluation set ({es.rows} hold-out rows) holds one class only: the two "
            "models cannot be compared on it; load more labelled rows"
        )
    outside = snapshot.positions >= own
    dummy = DummyClassifier(strategy="most_frequent").fit(snapshot.X[outside], snapshot.y[outside])
    baseline = scores(Contender("baseline", None, dummy, own, None), es, spec, classes)
    if candidate.model is None:
        raise TrainingError(f"{candidate.label} cannot be scored: {candidate.load_error}")
    mine = scores(candidate, es, spec, classes)
    theirs, change, incomparable = None, None, None
    if champion is not None:
        change = _contract_change(candidate, champion)
        if change is None and champion.model is None:
            incomparable = f"champion {champion.label} cannot be loaded: {champion.load_error}"
        elif change is None:
            theirs = scores(champion, es, spec, classes)
    decision = should_promote(
        mine,
        baseline,
        theirs,
        gate,
        contract_change=change,
        runtime_problem=candidate.runtime_problem,
        incomparable=incomparable,
    )
    compared = None
    if theirs is not None and champion is not None:
        compared = _fairness_compared(snapshot, spec, es, candidate, champion)
    if compared and decision.promote and gate.fairness_tolerance:
        worse = fairness.worse_than(
            compared["candidate"],
            compared["champion"],
            {str(k): v for k, v in gate.fairness_tolerance.items()},
        )
        if worse:
            decision = Decision(False, "fairness worse than the champion's: " + "; ".join(worse))
    logger.info(
        "judged %s against %s on %d evaluation rows in %.1f s",
        candidate.label,
        champion.label if champion else "the baseline",
        es.rows,
        time.perf_counter() - started,
    )
    return Verdict(decision, es.describe(), mine, theirs, baseline, notes, compared)


def _fairness_compared(
    snapshot: Snapshot,
    spec: DatasetSpec,
    es: holdout.EvaluationSet,
    candidate: Contender,
    champion: Contender,
) -> dict[str, Any] | None:
    """Both models' fairness on the evaluation rows (sensitive columns, two labels)."""
    target = spec.target
    if snapshot.sensitive is None or target is None or not target.binary:
        return None
    positive = target.labels[str(target.positive)]
    groups = snapshot.sensitive.loc[es.X.index].reset_index(drop=True)
    truth = np.asarray(es.y) == positive
    found: dict[str, Any] = {"rows": es.rows}
    for who in (candidate, champion):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            proba = who.model.predict_proba(es.X)
        classes = list(who.model.classes_)
        pred = np.asarray(classes)[proba.argmax(axis=1)] == positive
        score = proba[:, classes.index(positive)]
        side = "candidate" if who is candidate else "champion"
        found[side] = fairness.assess(groups, truth, pred, score)
    return found
