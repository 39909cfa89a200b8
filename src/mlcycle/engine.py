"""Where ETL and training run: here (`local`, the default) or on a Dask cluster (`dask`).

The engine is an interface with two implementations, so another distributed engine (a
Spark one with the MongoDB Spark connector, for teams that already run Spark) could be
added beside Dask without touching the stages. `dask` connects to the scheduler at
`MLCYCLE_DASK_SCHEDULER` (`tcp://host:8786`), or, unset, starts a local cluster of
`MLCYCLE_DASK_WORKERS` worker processes for the run.

Workers need mlcycle installed (the pipeline image) and, for MongoDB, `MONGO_URI` in
their own environment: credentials never travel inside tasks.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from mlcycle.errors import MlcycleError

logger = logging.getLogger(__name__)

EngineKind = Literal["local", "dask"]


@dataclass
class Engine:
    kind: EngineKind = "local"
    client: Any = None
    """A `distributed.Client` for the dask engine."""

    @property
    def distributed(self) -> bool:
        return self.client is not None

    @property
    def n_jobs(self) -> int:
        """joblib's n_jobs for cross-validation and the grid search: all the cluster's
        workers on Dask, one process locally (today's behaviour)."""
        return -1 if self.distributed else 1

    def parallel(self) -> contextlib.AbstractContextManager[Any]:
        """joblib runs its tasks on the Dask cluster inside this block."""
        if not self.distributed:
            return contextlib.nullcontext()
        import joblib

        return joblib.parallel_backend("dask", wait_for_workers_timeout=60)

    def describe(self) -> str:
        if not self.distributed:
            return "local"
        info = self.client.scheduler_info()
        return f"dask ({len(info.get('workers', {}))} workers at {self.client.scheduler.address})"


LOCAL = Engine()


@contextlib.contextmanager
def open_engine(
    kind: EngineKind, scheduler: str | None = None, workers: int = 2
) -> Iterator[Engine]:
    if kind == "local":
        yield LOCAL
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise MlcycleError(
            "the dask engine needs Dask: pip install 'mlcycle[dask]' (the project "
            "virtualenv made by `make install` has it)"
        ) from err
    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="20s")
        else:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            )
            client = Client(cluster)
    except OSError as err:
        raise MlcycleError(
            f"cannot reach the Dask scheduler at {scheduler or 'a local cluster'}: {err}"
        ) from err
    engine = Engine("dask", client)
    logger.info("engine: %s", engine.describe())
    try:
        yield engine
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


__all__ = ["LOCAL", "Engine", "EngineKind", "open_engine"]
