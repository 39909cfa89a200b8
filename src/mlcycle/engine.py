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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlcycle.config import PART_BYTES
from mlcycle.errors import MlcycleError

if TYPE_CHECKING:
    import pyarrow as pa

    from mlcycle.etl.pipeline import EtlSummary
    from mlcycle.etl.sources import FileSource
    from mlcycle.spec import DatasetSpec
    from mlcycle.store.base import Store

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

    def run_etl(
        self,
        spec: DatasetSpec,
        source: Path | FileSource,
        store: Store,
        *,
        part_bytes: int = PART_BYTES,
        **options: Any,
    ) -> EtlSummary:
        """The ETL stage on this engine: `mlcycle.etl.pipeline.run_etl` here, one task a
        file part (`part_bytes` each) on Dask; the same options and the same result."""
        if not self.distributed:
            from mlcycle.etl.pipeline import run_etl

            return run_etl(spec, source, store, **options)
        from mlcycle.etl.distributed import run_etl_dask

        return run_etl_dask(spec, source, store, self.client, part_bytes=part_bytes, **options)

    def read_columns(
        self, store: Store, dataset: str, schema: pa.Schema, require: str | None
    ) -> pa.Table:
        """The stored rows training reads, as typed Arrow columns: by the store here, by
        the workers in parallel `_id` ranges on Dask (MongoDB)."""
        if not self.distributed:
            return store.read_columns(dataset, schema, require=require)
        from mlcycle.etl.distributed import read_columns_dask

        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        return read_columns_dask(store, self.client, dataset, schema, require, parts=2 * workers)

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
    if not logger.isEnabledFor(logging.DEBUG):  # Dask's own chatter (a worker joined, a
        logging.getLogger("distributed").setLevel(logging.WARNING)  # comm closed): warnings up
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
