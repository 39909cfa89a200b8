"""The monitoring report: one type, written by `mlcycle.monitor.run` (as the stored
document) and read by everything that shows it: the CLI, the API's /metrics gauges and
the dashboard. Only pydantic is needed here, so the serving install can read reports.

The document's shape is the model's; keys a newer version adds are kept (`extra`), and
`document()` gives back exactly the keys that were set, as stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class Test(_Part):
    name: str
    statistic: float | None = None
    p_value: float


class Shares(_Part):
    reference: float
    current: float


class Unseen(_Part):
    share: float
    values: dict[str, int] = Field(default_factory=dict)


class Means(_Part):
    reference: float | None = None
    current: float | None = None


class Drift(_Part):
    """One feature's (or the model score's) comparison with its training profile."""

    psi: float
    status: str
    """ok, watch or drift."""
    why: str | None = None
    """The status in words: the PSI against its threshold and the test's p against alpha."""
    missing: Shares
    reference: list[float] = Field(default_factory=list)
    current: list[float] = Field(default_factory=list)
    rows: int = 0
    kind: str | None = None
    """numeric or categorical."""
    test: Test
    bins: list[str] = Field(default_factory=list)
    mean: Means | None = None
    unseen: Unseen | None = None
    """Categorical features: values training never saw."""
    summary: dict[str, dict[str, Any]] | None = None
    """`reference` and `current` summary statistics: rows, missing share, mean, std,
    min, quartiles, max (numeric); rows, distinct values, the top value and its share
    (categorical)."""


class ReportWindow(_Part):
    since: datetime | None = None
    last: int | None = None
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    rows: int
    requests: int | None = None
    malformed: int | None = None


class Performance(_Part):
    """Realized quality on the predictions whose label has arrived."""

    matured: int
    positives: int | None = None
    accuracy: float
    accuracy_ci: list[float]
    f1: float | None = None
    f1_ci: list[float] | None = None
    roc_auc: float | None = None
    roc_auc_ci: list[float] | None = None
    calibration: dict[str, Any] | None = None
    validation: dict[str, float | None] = Field(default_factory=dict)
    periods: list[dict[str, Any]] | None = None
    """Per period of `period_days`, oldest first: start, end, matured, accuracy, ROC AUC."""
    trend: dict[str, Any] | None = None
    """The metric's least-squares change per period over the periods with enough rows."""
    confusion: dict[str, Any] | None = None
    """`labels` (in order) and `counts`: true label -> predicted label -> rows."""
    per_class: dict[str, dict[str, Any]] | None = None
    """Per label: precision, recall, F1, support (true rows) and predicted rows."""


class MonitorReport(_Part):
    """A window of the prediction log against the model's training profile."""

    id: str | None = Field(default=None, alias="_id")
    ts: datetime | None = None
    dataset: str | None = None
    model_name: str
    model_version: str
    run_id: str | None = None
    training_data_hash: str | None = None
    training_rows: int | None = None
    window: ReportWindow
    thresholds: dict[str, Any] = Field(default_factory=dict)
    features: dict[str, Drift]
    score: Drift
    labels: dict[str, Shares] = Field(default_factory=dict)
    performance: Performance | None = None
    fairness: dict[str, Any] | None = None
    """Per sensitive column: each group's selection rate and its change from training,
    realized TPR, FPR and accuracy on matured rows, and the disparities
    (`mlcycle.monitor.fairness`)."""
    verdict: str
    """ok, watch, drift, degraded, insufficient or no_data."""
    reasons: list[str] = Field(default_factory=list)
    flagged: list[str] = Field(default_factory=list)
    retrain: dict[str, Any] | None = None
    challenger: dict[str, Any] | None = None
    """The shadow challenger against the champion on the same requests (paired)."""
    rollback: dict[str, Any] | None = None
    """What the rollback policy did (`monitor.rollback`), with the comparison."""
    seconds: float | None = None

    model_config = ConfigDict(
        extra="allow", populate_by_name=True, protected_namespaces=(), coerce_numbers_to_str=True
    )

    @classmethod
    def of(cls, report: MonitorReport | dict[str, Any]) -> MonitorReport:
        """A report from its stored document (or the report itself)."""
        return report if isinstance(report, MonitorReport) else cls.model_validate(report)

    def document(self) -> dict[str, Any]:
        """The stored form: the keys that were set, nested values as plain data."""
        return self.model_dump(by_alias=True, exclude_unset=True)

    def drift_rows(self) -> Iterator[tuple[str, Drift]]:
        """Every feature's comparison, then the model score's."""
        yield from self.features.items()
        yield "(model score)", self.score
