"""`mlcycle promote`: judge a registered version against the champion on the same rows,
then move an alias (`champion`, or `challenger` for a shadow) with the decision recorded.

A champion is moved only when the gate passes, or with `--force --reason`. A challenger
is never answered with, so it needs no pass: it is set with the same comparison recorded
(the evidence its later promotion, or removal, is weighed against).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mlcycle import decisions, registry
from mlcycle.errors import BadInput, GateRefused, MlcycleError, Unservable
from mlcycle.logging_setup import step
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store
from mlcycle.train.config import TrainConfig
from mlcycle.train.judge import Verdict, judge, registered
from mlcycle.train.snapshot import load_snapshot

logger = logging.getLogger(__name__)

ALIASES = (registry.CHAMPION, registry.CHALLENGER)


@dataclass
class Judged:
    """A version judged against the champion (`verdict` None: it is the champion)."""

    name: str
    alias: str
    target: registry.VersionInfo
    champion: registry.VersionInfo | None
    holder: registry.VersionInfo | None
    """Who holds `alias` now (the champion, or the current challenger)."""
    verdict: Verdict | None

    @property
    def unchanged(self) -> bool:
        return self.holder is not None and self.holder.version == self.target.version


def judge_version(
    client: Any, store: Store, spec: DatasetSpec, cfg: TrainConfig, version: str, alias: str
) -> Judged:
    """Load `version` and the champion and score both on the store's evaluation rows."""
    if alias not in ALIASES:
        raise BadInput(f"--as must be one of {', '.join(ALIASES)}, not {alias!r}")
    name = spec.registered_model
    target = registry.get_version(client, name, version=version)
    champion = registry.champion(client, name)
    holder = champion if alias == registry.CHAMPION else registry.holder(client, name, alias)
    judged = Judged(name, alias, target, champion, holder, None)
    if judged.unchanged:
        return judged
    if alias == registry.CHALLENGER and champion and champion.version == target.version:
        raise BadInput(f"{name} v{version} is the champion: a challenger is another version")
    logger.info("checking that %s v%s can be served", name, version)
    if (why := registry.unservable(client, name, target.version)) is not None:
        raise Unservable(f"{name} v{version} cannot be made {alias}: {why}")
    with step(logger, f"reading the evaluation rows of {spec.name} from the {store.name} store"):
        snapshot = load_snapshot(store, spec)
    rival = registered(client, champion) if champion is not None else None
    judged.verdict = judge(
        snapshot, spec, cfg.gate, registered(client, target), rival, cfg.test_size
    )
    return judged


def apply(
    client: Any,
    judged: Judged,
    metric: str,
    force: bool,
    reason: str | None,
    by: str = "promote",
    live: dict[str, Any] | None = None,
) -> decisions.Event:
    """Record the decision on `judged` and move the alias (or raise GateRefused); `by`
    names the command or policy, `live` the paired comparison on traffic it rests on."""
    verdict = judged.verdict
    assert verdict is not None
    reason = reason.strip() if reason else None
    before = judged.holder.version if judged.holder else None
    evaluation = {**verdict.record(), "metric": metric, **({"live": live} if live else {})}
    passed = verdict.decision.promote
    if judged.alias == registry.CHALLENGER:
        why = f"shadow beside the champion; the gate says: {verdict.decision.reason}"
        event = _event(
            "promote", judged, before, "promote --as challenger", reason, why, evaluation
        )
    elif not passed and not force:
        decisions.record(
            client,
            judged.name,
            decisions.Event(
                action="refuse",
                before=before,
                after=before,
                candidate=judged.target.version,
                by=by,
                reason=verdict.decision.reason,
                evaluation=evaluation,
            ),
        )
        raise GateRefused(
            f"the gate refuses v{judged.target.version} ({verdict.decision.reason}); "
            "use --force --reason '...' to promote it anyway"
        )
    elif not passed:
        why = f"over the gate: {verdict.decision.reason}"
        event = _event("force", judged, before, f"{by} --force", reason, why, evaluation)
    else:
        event = _event("promote", judged, before, by, reason, verdict.decision.reason, evaluation)
    registry.set_champion(
        client,
        judged.name,
        judged.target.version,
        before,
        forced_reason=reason if event.action == "force" else None,
        event=event,
        alias=judged.alias,
    )
    if judged.alias == registry.CHAMPION:
        registry.retire_challenger(client, judged.name, judged.target.version, event.by)
    return event


def _event(
    action: decisions.Action,
    judged: Judged,
    before: str | None,
    by: str,
    reason: str | None,
    why: str,
    evaluation: dict[str, Any],
) -> decisions.Event:
    said = f"{reason} ({why})" if reason else why
    return decisions.Event(
        action=action,
        alias=judged.alias,
        before=before,
        after=judged.target.version,
        candidate=judged.target.version,
        by=by,
        reason=said,
        evaluation=evaluation,
    )


POLICY = "monitor challenger policy"


def challenger_policy(
    client: Any, store: Store, spec: DatasetSpec, cfg: TrainConfig, comparison: dict[str, Any]
) -> dict[str, Any] | None:
    """What `monitor.challenger` says to do with a decided paired comparison: promote the
    challenger through the gate when it is better with confidence, or remove its alias
    when it is worse; None when the policy says nothing."""
    policy = cfg.monitor.challenger
    version, verdict = comparison.get("version"), comparison.get("verdict")
    name = spec.registered_model
    holder = registry.holder(client, name, comparison.get("alias", registry.CHALLENGER))
    if version is None or holder is None or holder.version != version:
        return None  # the alias moved since these predictions were logged
    if verdict == "better" and policy.promote_when_better:
        judged = judge_version(client, store, spec, cfg, version, registry.CHAMPION)
        if judged.verdict is None:
            return None
        try:
            apply(client, judged, cfg.gate.metric, False, comparison["reason"], POLICY, comparison)
        except GateRefused as err:
            return {"action": "refused", "version": version, "reason": str(err)}
        return {"action": "promote", "version": version, "reason": comparison["reason"]}
    if verdict == "worse" and policy.drop_when_worse:
        registry.drop_alias(
            client,
            name,
            comparison.get("alias", registry.CHALLENGER),
            POLICY,
            comparison["reason"],
            comparison,
        )
        return {"action": "drop", "version": version, "reason": comparison["reason"]}
    return None


ROLLBACK_POLICY = "monitor rollback policy"


def rollback_policy(
    client: Any,
    store: Store,
    spec: DatasetSpec,
    cfg: TrainConfig,
    matured: set[str],
    why: str,
) -> dict[str, Any] | None:
    """`monitor.rollback`: the champion's realized performance fell below the policy
    (`why`); roll back to the previous servable champion when it is better on the same
    matured rows, the ones neither model learned from (both hold-outs), by more than the
    margin. None when the policy is off; else what it did, with the comparison."""
    import numpy as np

    from mlcycle.train import holdout
    from mlcycle.train.judge import scores

    policy = cfg.monitor.rollback
    if not policy.enabled:
        return None
    name = spec.registered_model
    current = registry.champion(client, name)
    if current is None:
        return None
    try:
        previous = registry.servable_predecessor(client, name, current)
    except MlcycleError as err:
        return {"action": "none", "reason": f"nothing to roll back to: {err}"}
    snapshot = load_snapshot(store, spec)
    sides = [
        registered(client, current),
        registered(client, registry.get_version(client, name, version=previous)),
    ]
    for side in sides:
        if side.model is None:
            return {"action": "none", "reason": f"{side.label} cannot be loaded: {side.load_error}"}
    fraction = min(side.fraction or cfg.test_size for side in sides)
    live = np.fromiter((i in matured for i in snapshot.ids), dtype=bool, count=len(snapshot.ids))
    mask = live & (snapshot.positions < fraction)
    rows = holdout.rows_set(snapshot.X, snapshot.y, snapshot.ids, snapshot.row_hashes, mask)
    if rows.rows < policy.min_matured or len(np.unique(rows.y)) < 2:
        return {
            "action": "none",
            "reason": f"{rows.rows} matured rows that neither v{current.version} nor "
            f"v{previous} learned from (policy: at least {policy.min_matured}, both classes)",
        }
    classes = [int(c) for c in np.unique(snapshot.y)]
    now, before = (scores(side, rows, spec, classes) for side in sides)
    metric = cfg.gate.metric
    evaluation = {
        "set": {**rows.describe(), "holdout": None, "matured": True},
        "metric": metric,
        "champion": now,
        "previous": before,
        "trigger": why,
    }
    unknown = [f"v{side.version}" for side in sides if side.fraction is None]
    if unknown:  # trained before the stable hold-out: which rows it held out is unknown
        evaluation["note"] = (
            f"{' and '.join(unknown)} predate the stable hold-out: the rows below the "
            f"configured test_size {cfg.test_size:g} were used, which they may have seen"
        )
    gain = before[metric] - now[metric]
    said = (
        f"{metric} {before[metric]:.4f} for v{previous} against {now[metric]:.4f} for "
        f"v{current.version} on {rows.rows} matured rows neither learned from"
    )
    if gain <= policy.margin:
        return {"action": "kept", "reason": f"{said} (margin {policy.margin:g})", **evaluation}
    old, new = registry.rollback(
        client,
        name,
        to=previous,
        reason=f"{why}; {said}",
        by=ROLLBACK_POLICY,
        evaluation=evaluation,
    )
    return {"action": "rollback", "from": old, "to": new, "reason": said, **evaluation}
