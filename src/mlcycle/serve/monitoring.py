"""The latest monitoring report, where operators look: gauges on /metrics and the
dashboard at GET /monitor.

Reports are read from the store at most once per `ttl` seconds (a scrape never waits on
the store more than that), and a store that cannot be read only hides the gauges.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mlcycle.monitor.report import MonitorReport
from mlcycle.monitor.reports import latest_reports
from mlcycle.store.base import Store, as_datetime

logger = logging.getLogger(__name__)

LEVEL = {"ok": 0, "watch": 1, "drift": 2}


class ReportFeed:
    """Newest reports of the served model, cached for `ttl` seconds."""

    def __init__(
        self, store: Callable[[], Store], served: Callable[[], tuple[str, str]], ttl: float = 30.0
    ) -> None:
        self._store = store
        self._served = served  # () -> (dataset, model name)
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._key: tuple[str, str] | None = None
        self._reports: list[MonitorReport] = []
        self.error: str | None = None

    def reports(self, fresh: bool = False) -> list[MonitorReport]:
        key = self._served()
        with self._lock:
            if fresh or key != self._key or time.monotonic() - self._at > self.ttl:
                try:
                    self._reports = latest_reports(self._store(), *key)
                    self.error = None
                except Exception as err:  # gauges are optional: never fail a scrape
                    if self.error is None:
                        logger.warning("monitoring reports unreadable: %s", err)
                    self.error = str(err)[:300]
                    self._reports = []
                self._key, self._at = key, time.monotonic()
            return self._reports

    def latest(self, fresh: bool = False) -> MonitorReport | None:
        reports = self.reports(fresh)
        return reports[0] if reports else None


class ReportCollector(Collector):
    """The newest report as Prometheus gauges (see deploy/prometheus/alerts.yaml)."""

    def __init__(self, feed: ReportFeed) -> None:
        self.feed = feed

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = self.feed.latest()
        if report is None:
            return
        info = GaugeMetricFamily(
            "mlcycle_monitor_info",
            "The newest monitoring report: model, version and verdict",
            labels=["model", "version", "verdict"],
        )
        info.add_metric([report.model_name, report.model_version, report.verdict], 1)
        yield info
        stamp = as_datetime(report.ts).timestamp() if report.ts is not None else time.time()
        yield GaugeMetricFamily(
            "mlcycle_monitor_report_timestamp_seconds", "When the newest report was made", stamp
        )
        yield GaugeMetricFamily(
            "mlcycle_monitor_report_age_seconds",
            "Seconds since the newest report was made",
            max(time.time() - stamp, 0.0),
        )
        yield GaugeMetricFamily(
            "mlcycle_monitor_drift_detected",
            "1 when the newest report's verdict is drift",
            1.0 if report.verdict == "drift" else 0.0,
        )
        yield GaugeMetricFamily(
            "mlcycle_monitor_window_rows",
            "Predictions in the newest report's window",
            float(report.window.rows),
        )
        psi = GaugeMetricFamily(
            "mlcycle_monitor_feature_psi",
            "PSI of each feature against training",
            labels=["feature"],
        )
        level = GaugeMetricFamily(
            "mlcycle_monitor_feature_drift",
            "Per feature: 0 ok, 1 watch, 2 drift",
            labels=["feature"],
        )
        for name, feat in report.features.items():
            psi.add_metric([name], feat.psi)
            level.add_metric([name], float(LEVEL[feat.status]))
        yield psi
        yield level
        yield GaugeMetricFamily(
            "mlcycle_monitor_score_psi",
            "PSI of the model's score against training",
            report.score.psi,
        )
        yield from fairness_gauges(report.fairness or {})
        perf = report.performance
        if perf is not None:
            yield GaugeMetricFamily(
                "mlcycle_monitor_matured_rows",
                "Predictions whose label has arrived",
                float(perf.matured),
            )
            for key in ("accuracy", "roc_auc"):
                realized = getattr(perf, key)
                if realized is not None:
                    yield GaugeMetricFamily(
                        f"mlcycle_monitor_realized_{key}",
                        f"Realized {key} on matured predictions",
                        float(realized),
                    )
                validation = perf.validation.get(key)
                if validation is not None:
                    yield GaugeMetricFamily(
                        f"mlcycle_monitor_validation_{key}",
                        f"The model's {key} on its hold-out at training",
                        float(validation),
                    )


REALIZED_BY_GROUP = ("tpr", "fpr", "accuracy")
DISPARITIES = (  # as `mlcycle.train.fairness` names them (no pandas in the server)
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
)


def fairness_gauges(found: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    """The report's fairness by group (see deploy/prometheus/alerts.yaml)."""
    if not found:
        return
    labels = ["column", "group"]
    rate = GaugeMetricFamily(
        "mlcycle_monitor_group_selection_rate",
        "Share of a group's predictions in the window given the positive label",
        labels=labels,
    )
    change = GaugeMetricFamily(
        "mlcycle_monitor_group_selection_rate_change",
        "A group's selection rate in the window minus the one at training (hold-out)",
        labels=labels,
    )
    realized = {
        key: GaugeMetricFamily(
            f"mlcycle_monitor_group_realized_{key}",
            f"A group's realized {key} on matured predictions",
            labels=labels,
        )
        for key in REALIZED_BY_GROUP
    }
    disparity = GaugeMetricFamily(
        "mlcycle_monitor_fairness_disparity",
        "Between a sensitive column's groups in the window: demographic parity "
        "difference and ratio (selection rates), equalized-odds difference (matured rows)",
        labels=["column", "disparity"],
    )
    for column, part in found.items():
        for group, g in (part.get("groups") or {}).items():
            if g.get("selection_rate") is not None:
                rate.add_metric([column, group], float(g["selection_rate"]))
            if g.get("change") is not None:
                change.add_metric([column, group], float(g["change"]))
            for key, gauge in realized.items():
                if g.get(key) is not None:
                    gauge.add_metric([column, group], float(g[key]))
        for key in DISPARITIES:
            if part.get(key) is not None:
                disparity.add_metric([column, key], float(part[key]))
    yield rate
    yield change
    yield from realized.values()
    yield disparity
