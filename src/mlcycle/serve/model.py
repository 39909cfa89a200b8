"""Loading the model behind an alias, caching it on disk, and swapping it atomically.

`ModelManager.current` is one immutable `LoadedModel`; a reload builds the new one beside
it and replaces the reference in one assignment, so a request in flight keeps the model
it started with and no request sees half a swap. The last good model's files stay under
the serving cache, so the service starts and serves while the tracking server is down.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlcycle.config import Settings, redact_uri
from mlcycle.errors import MlcycleError, ModelNotFound
from mlcycle.serve.schemas import RequestValidator
from mlcycle.spec import DatasetSpec, parse_spec

logger = logging.getLogger(__name__)


class Scorer(Protocol):
    def positive_proba(self, feed: dict[str, np.ndarray]) -> np.ndarray: ...


class OnnxScorer:
    """onnxruntime on one thread per request: no scikit-learn or pandas at serving time."""

    def __init__(self, path: Path, positive_index: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._index = positive_index

    def positive_proba(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        probs = self._session.run(["probabilities"], feed)[0]
        return np.asarray(probs[:, self._index], dtype=np.float64)


class SklearnScorer:
    """Fallback when the ONNX export did not match scikit-learn (e.g. tree ensembles)."""

    def __init__(
        self,
        model_uri: str,
        numeric: list[str],
        categorical: list[str],
        missing: str,
        positive_index: int,
    ) -> None:
        import mlflow

        self._model = mlflow.sklearn.load_model(model_uri)
        self._numeric, self._categorical, self._missing = numeric, categorical, missing
        self._index = positive_index

    def positive_proba(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame({c: feed[c].ravel().astype(np.float64) for c in self._numeric})
        for c in self._categorical:
            col = pd.Series(feed[c].ravel(), dtype=object)
            frame[c] = col.where(col != self._missing, np.nan)
        return np.asarray(self._model.predict_proba(frame)[:, self._index], dtype=np.float64)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    alias: str
    run_id: str
    source: str  # "registry" or "cache"
    runtime: str
    meta: dict[str, Any]
    spec: DatasetSpec
    validator: RequestValidator
    scorer: Scorer
    positive_label: str
    negative_label: str
    loaded_at: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "source": self.source,
            "runtime": self.runtime,
            "training_data_hash": self.meta.get("data_hash"),
            "onnx_max_abs_diff": self.meta.get("onnx_max_abs_diff"),
            "signature": {"numeric": self.meta["numeric"], "categorical": self.meta["categorical"]},
            "loaded_at": self.loaded_at,
        }


def _load_folder(
    folder: Path, name: str, version: str, alias: str, run_id: str, source: str
) -> LoadedModel:
    meta = json.loads((folder / "serving.json").read_text())
    spec = parse_spec(meta["spec"], str(folder / "serving.json"))
    classes = [int(c) for c in meta["classes"]]
    labels: dict[str, int] = meta["labels"]
    positive = meta["positive"]
    index = classes.index(labels[positive])
    negative = next(k for k, v in labels.items() if k != positive)
    scorer: Scorer
    if meta["runtime"] == "onnx" and (folder / "model.onnx").exists():
        scorer = OnnxScorer(folder / "model.onnx", index)
        runtime = "onnx"
    else:
        scorer = SklearnScorer(
            f"runs:/{run_id}/model", meta["numeric"], meta["categorical"], meta["missing"], index
        )
        runtime = "sklearn"
    return LoadedModel(
        name=name,
        version=version,
        alias=alias,
        run_id=run_id,
        source=source,
        runtime=runtime,
        meta=meta,
        spec=spec,
        validator=RequestValidator(spec, meta["numeric"], meta["categorical"]),
        scorer=scorer,
        positive_label=positive,
        negative_label=negative,
    )


class ModelManager:
    """Follows `models:/<name>@<alias>`; loads new versions beside the old and swaps."""

    def __init__(self, settings: Settings, name: str, alias: str | None = None) -> None:
        self.settings = settings
        self.name = name
        self.alias = alias or settings.model_alias
        self.cache = settings.serving_cache / name
        self.current: LoadedModel | None = None
        self.tracking_reachable: bool | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _client(self) -> Any:
        from mlcycle import registry

        # fail fast instead of MLflow's long default retry schedule
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        return registry.connect(self.settings, retries=1)

    def refresh(self) -> bool:
        """Load the alias's version if it differs from the current one; True if swapped."""
        with self._lock:
            try:
                client = self._client()
                mv = client.get_model_version_by_alias(self.name, self.alias)
                self.tracking_reachable = True
            except MlcycleError as err:
                self.tracking_reachable = False
                self.last_error = str(err)
                return False
            except Exception as err:  # MLflow raises its own types for a missing alias
                self.tracking_reachable = True
                self.last_error = f"{self.name}@{self.alias}: {err}"[:300]
                return False
            version = str(mv.version)
            current = self.current
            if current is not None and current.version == version and current.source == "registry":
                return False
            try:
                loaded = self._fetch(version, str(mv.run_id))
            except Exception as err:
                self.last_error = f"could not load {self.name} v{version}: {err}"[:300]
                logger.error("%s", self.last_error)
                return False
            self.current = loaded  # the atomic swap
            self.last_error = None
            logger.info("serving %s v%s (%s)", self.name, version, loaded.runtime)
            return True

    def _fetch(self, version: str, run_id: str) -> LoadedModel:
        import mlflow

        target = self.cache / version
        if not (target / "serving.json").exists():
            tmp = self.cache / f".{version}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path="serving",
                dst_path=str(tmp),
                tracking_uri=self.settings.tracking_uri,
            )
            shutil.rmtree(target, ignore_errors=True)
            (tmp / "serving").rename(target)
            shutil.rmtree(tmp, ignore_errors=True)
        loaded = _load_folder(target, self.name, version, self.alias, run_id, "registry")
        (self.cache / "last_good.json").write_text(
            json.dumps({"version": version, "run_id": run_id})
        )
        return loaded

    def load_cached(self) -> bool:
        """Serve the last good model from disk (tracking server down at start)."""
        pointer = self.cache / "last_good.json"
        if not pointer.exists():
            return False
        info = json.loads(pointer.read_text())
        try:
            self.current = _load_folder(
                self.cache / info["version"],
                self.name,
                info["version"],
                self.alias,
                info["run_id"],
                "cache",
            )
        except Exception as err:
            self.last_error = f"cached model unusable: {err}"[:300]
            return False
        logger.warning(
            "tracking server %s unreachable: serving cached %s v%s",
            redact_uri(self.settings.tracking_uri),
            self.name,
            info["version"],
        )
        return True

    def start(self) -> None:
        if not self.refresh() and self.current is None:
            self.load_cached()
        if self.current is None:
            logger.warning("no model yet (%s); /health/ready answers 503", self.last_error)
        if self.settings.reload_interval > 0:
            self._thread = threading.Thread(target=self._poll, name="model-poll", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.reload_interval):
            try:
                self.refresh()
            except Exception:  # the poller must never die
                logger.exception("model poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def require(self) -> LoadedModel:
        model = self.current
        if model is None:
            raise ModelNotFound(f"no model loaded for {self.name}@{self.alias}")
        return model
