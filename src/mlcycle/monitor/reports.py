"""Reading monitoring reports back (the API's gauges and dashboard, the CLI's history).

Only the store is needed here: the serving install imports this module, not the
statistics behind the reports.
"""

from __future__ import annotations

from typing import Any

from mlcycle.store.base import Store, monitoring_collection

HISTORY = 30


def latest_reports(
    store: Store, dataset: str, model_name: str | None = None, limit: int = HISTORY
) -> list[dict[str, Any]]:
    """The newest `limit` monitoring reports (of `model_name` if given), newest first."""
    match = {"model_name": model_name} if model_name else None
    for docs in store.scan(monitoring_collection(dataset), match=match, chunk=limit):
        return docs[:limit]
    return []
