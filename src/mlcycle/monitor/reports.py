"""Reading monitoring reports back (the API's gauges and dashboard, the CLI's history).

Only the store is needed here: the serving install imports this module, not the
statistics behind the reports.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from mlcycle.monitor.report import MonitorReport
from mlcycle.store.base import Store, monitoring_collection

logger = logging.getLogger(__name__)

HISTORY = 30


def latest_reports(
    store: Store, dataset: str, model_name: str | None = None, limit: int = HISTORY
) -> list[MonitorReport]:
    """The newest `limit` monitoring reports (of `model_name` if given), newest first; a
    stored document that is not a report is skipped (and logged)."""
    match = {"model_name": model_name} if model_name else None
    for docs in store.scan(monitoring_collection(dataset), match=match, chunk=limit):
        reports = []
        for doc in docs[:limit]:
            try:
                reports.append(MonitorReport.of(doc))
            except ValidationError as err:
                logger.warning("monitoring document %s is not a report: %s", doc.get("_id"), err)
        return reports
    return []
