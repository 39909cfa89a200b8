"""One writer per dataset: a lease document in the store, renewed by a heartbeat.

A second ETL of the same dataset waits for the lease or stops with a clear message; a
process that dies leaves its lease to expire, and the next run takes it over and marks
the dead run's batch as failed with what it wrote. Training refuses to read while a live
lease is held, so it never trains on half a load.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from mlcycle.config import LOCK_LEASE
from mlcycle.errors import DatasetBusy, MlcycleError
from mlcycle.store.base import Document, Store

logger = logging.getLogger(__name__)


def describe_holder(holder: Document) -> str:
    left = max(0.0, float(holder.get("expires_at", 0)) - time.time())
    return (
        f"batch {holder.get('owner')} (pid {holder.get('pid')} on {holder.get('host')}, "
        f"lease renewed for {left:.0f} s more)"
    )


def live_holder(store: Store, dataset: str) -> Document | None:
    """The live lease holder of `dataset`, if any."""
    held = store.read_lock(dataset)
    if held is not None and float(held.get("expires_at", 0)) > time.time():
        return held
    return None


_OWNED: set[str] = set()
"""Lease owners of this process that are still running."""


def _holder_is_gone(holder: Document) -> bool:
    """True when the holder ran on this host and its process no longer runs (or it was
    this process, and that run is over). Other hosts' holders expire with their lease."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = int(holder.get("pid") or 0)
    if pid == os.getpid():
        return str(holder.get("owner")) not in _OWNED
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class Lease:
    """`with Lease(store, dataset, owner):` holds the dataset for `owner` and renews it
    every third of the lease from a daemon thread."""

    def __init__(
        self,
        store: Store,
        dataset: str,
        owner: str,
        lease_seconds: float = LOCK_LEASE,
        wait_seconds: float = 0.0,
        on_takeover: Callable[[Document], None] | None = None,
    ) -> None:
        self.store, self.dataset, self.owner = store, dataset, owner
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.on_takeover = on_takeover or (lambda held: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def __enter__(self) -> Lease:
        info: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.now(UTC),
        }
        deadline = time.monotonic() + self.wait_seconds
        dead: Document | None = None
        while True:
            taken, other = self.store.try_lock(self.dataset, self.owner, self.lease_seconds, info)
            if taken:
                other = other or dead
                break
            if other is not None and _holder_is_gone(other):
                # its process is known dead (this host): free the lease now, not at expiry
                self.store.release_lock(self.dataset, str(other.get("owner")))
                dead = other
                continue
            if other is not None and time.monotonic() >= deadline:
                raise DatasetBusy(
                    f"dataset {self.dataset!r} is being loaded by {describe_holder(other)}: "
                    "one writer at a time. Rerun when it has finished (MLCYCLE_LOCK_WAIT "
                    "makes a run wait for it)"
                )
            time.sleep(min(1.0, max(0.05, self.lease_seconds / 10)))
        if other is not None:
            logger.warning(
                "took over the lease of %s: %s stopped renewing it", self.dataset, other["owner"]
            )
            self.on_takeover(other)
        _OWNED.add(self.owner)
        self._thread = threading.Thread(target=self._beat, name="lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                if not self.store.renew_lock(self.dataset, self.owner, self.lease_seconds):
                    self.lost = True
                    logger.error("lost the lease of %s", self.dataset)
                    return
            except MlcycleError as err:  # the store is down: the run will fail on its own
                logger.warning("could not renew the lease of %s: %s", self.dataset, err)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        _OWNED.discard(self.owner)
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.store.release_lock(self.dataset, self.owner)
        except MlcycleError as problem:  # it expires by itself
            logger.warning("could not release the lease of %s: %s", self.dataset, problem)
