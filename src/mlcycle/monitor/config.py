"""Monitoring thresholds and the retraining policy (the `monitor:` block of the
training config, so they are versioned and logged with the model they judge)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RetrainPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    psi: float | None = Field(
        default=0.25, gt=0.0, description="retrain when a drifted feature's PSI reaches this"
    )
    auc_drop: float | None = Field(
        default=0.05,
        gt=0.0,
        description="... or when realized ROC AUC is this much below the validation AUC",
    )
    min_matured: int = Field(
        default=100, ge=1, description="labelled predictions needed before AUC counts"
    )


class ChallengerPolicy(BaseModel):
    """What the monitor does with the challenger's paired comparison (`monitor.challenger`)."""

    model_config = ConfigDict(extra="forbid")

    min_paired: int = Field(
        default=200, ge=10, description="matured rows scored by both before a verdict"
    )
    promote_when_better: bool = Field(
        default=False,
        description="with --retrain: promote the challenger (through the gate) when it is "
        "better with confidence",
    )
    drop_when_worse: bool = Field(
        default=False,
        description="with --retrain: remove the challenger alias when it is worse with confidence",
    )


class RollbackPolicy(BaseModel):
    """What `monitor --retrain` does when the champion's realized performance falls below
    the retrain policy (`monitor.rollback`): off unless enabled."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False,
        description="roll back to the previous servable champion when it is better on the "
        "same matured rows",
    )
    min_matured: int = Field(
        default=200, ge=10, description="matured rows neither model learned from, at least"
    )
    margin: float = Field(
        default=0.0, description="the previous champion must be better by more than this"
    )


class MonitorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    psi_watch: float = Field(default=0.1, gt=0.0)
    psi_act: float = Field(default=0.25, gt=0.0)
    alpha: float = Field(
        default=0.01,
        gt=0.0,
        lt=1.0,
        description="a PSI flag also needs the KS/chi-square p-value below this, so "
        "sampling noise in a small window never raises an alert (p-values alone never do)",
    )
    min_rows: int = Field(default=100, ge=1, description="smaller windows get no verdict")
    bins: int = Field(default=10, ge=2, le=50, description="quantile bins per number")
    missing_change: float = Field(
        default=0.1, gt=0.0, le=1.0, description="watch a missing-share change this large"
    )
    period_days: float | None = Field(
        default=30.0,
        gt=0.0,
        description="realized performance also per period of this many days, counted back "
        "from the newest prediction: a drop in the newest period fires the retrain policy "
        "even when the whole window's average hides it (null: the whole window only)",
    )
    periods: int = Field(default=12, ge=1, le=120, description="how many periods back")
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy)
    challenger: ChallengerPolicy = Field(default_factory=ChallengerPolicy)
    rollback: RollbackPolicy = Field(default_factory=RollbackPolicy)

    @model_validator(mode="after")
    def _ordered(self) -> MonitorConfig:
        if self.psi_act < self.psi_watch:
            raise ValueError("psi_act must be at least psi_watch")
        return self
