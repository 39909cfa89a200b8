"""Loading the model behind an alias, caching it on disk, and swapping it atomically.

`ModelManager.current` is one immutable `LoadedModel`; a reload builds the new one beside
it and replaces the reference in one assignment, so a request in flight keeps the model
it started with and no request sees half a swap. The last good model's files stay under
the serving cache, so the service starts and serves while the tracking server is down.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcycle.bundle import (
    EXAMPLE_FILE,
    META_FILE,
    ServingMeta,
    graph_path,
    is_bundle,
    read_example,
    read_linear,
    read_meta,
    read_trees,
)
from mlcycle.bundle import FOLDER as BUNDLE_FOLDER
from mlcycle.config import Settings, fail_fast_mlflow, redact_uri
from mlcycle.errors import CandidateRejected, ContractChanged, TrackingUnavailable
from mlcycle.fold import LinearScorer
from mlcycle.rules.records import RequestValidator
from mlcycle.serve.core import Scorer
from mlcycle.spec import DatasetSpec, parse_spec
from mlcycle.tracking_http import RestTracking
from mlcycle.treeshap import TreeExplainer

logger = logging.getLogger(__name__)


class OnnxScorer:
    """onnxruntime on one thread per request: no scikit-learn or pandas at serving time.

    Missing numbers get the bundle's training medians before the graph (the graph has
    no imputer: onnxruntime has no float64 one); a graph that takes float32 (bundles
    of format 1) gets float32 and imputes itself."""

    def __init__(self, path: Path, fill: dict[str, float] | None = None) -> None:
        import onnxruntime as ort

        ort.disable_telemetry_events()  # no usage events from a serving process
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._types = {i.name: i.type for i in self._session.get_inputs()}
        self._fill = fill or {}
        self._plan = [
            (name, kind, np.array([[self._fill[name]]]) if name in self._fill else None)
            for name, kind in self._types.items()
        ]

    def proba(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        inputs: dict[str, np.ndarray] = {}
        for name, kind, fill in self._plan:
            values = feed.get(name)
            if values is None:
                continue
            if kind == "tensor(double)":
                if values.dtype != np.float64:
                    values = values.astype(np.float64)
                if fill is not None:
                    if len(values) == 1:  # one row: no vectorised calls for one value
                        if values[0, 0] != values[0, 0]:
                            values = fill
                    elif np.isnan(values).any():
                        values = np.where(np.isnan(values), fill, values)
            elif kind == "tensor(float)":
                values = values.astype(np.float32)
            inputs[name] = values
        probs = self._session.run(["probabilities"], inputs)[0]
        return np.asarray(probs, dtype=np.float64)

    def one(self, row: dict[str, Any]) -> list[float] | None:
        """No plain-Python path: a graph run needs arrays (`proba`)."""
        return None


class TreeScorer(OnnxScorer):
    """A tree model's graph, and its exact SHAP values from the bundle's `trees.npz`."""

    def __init__(self, path: Path, fill: dict[str, float] | None, tables: dict[str, Any]):
        super().__init__(path, fill)
        self._explainer = TreeExplainer(tables, fill)

    def explain(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self._explainer.explain(feed)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    alias: str
    run_id: str
    source: str  # "registry" or "cache"
    runtime: str
    meta: ServingMeta
    spec: DatasetSpec
    validator: RequestValidator
    scorer: Scorer
    class_labels: list[str]
    """The label of each probability column, in the scorer's column order."""
    positive: int | None
    """Binary: the positive label's column (its probability is `probability`)."""
    sha256: str = ""
    card: str | None = None
    """The version's model card (Markdown) from its bundle; None for older bundles."""
    scorer_name: str = "onnxruntime"
    """What scores requests: onnxruntime (the graph) or linear (the bundle's fold)."""
    loaded_at: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "source": self.source,
            "runtime": self.runtime,
            "scorer": self.scorer_name,
            "bundle_sha256": self.sha256,
            "training_data_hash": self.meta.data_hash,
            "onnx_max_abs_diff": self.meta.onnx_max_abs_diff,
            "signature": {"numeric": self.meta.numeric, "categorical": self.meta.categorical},
            "labels": self.class_labels,
            "positive_label": None if self.positive is None else self.class_labels[self.positive],
            "loaded_at": self.loaded_at,
        }


def _scorer(folder: Path, meta: ServingMeta, choice: str) -> tuple[Scorer, str]:
    """The bundle's linear fold when it has one (and `choice` allows), else its graph."""
    fold = read_linear(folder) if choice == "auto" else None
    if fold is not None:
        return LinearScorer(fold, meta.fill), "linear"
    trees = read_trees(folder)
    if trees is not None:
        return TreeScorer(graph_path(folder), meta.fill, trees), "onnxruntime"
    return OnnxScorer(graph_path(folder), meta.fill), "onnxruntime"


def _load_folder(
    folder: Path,
    name: str,
    version: str,
    alias: str,
    run_id: str,
    source: str,
    digest: str,
    choice: str = "auto",
) -> LoadedModel:
    meta = read_meta(folder)
    spec = parse_spec(meta.spec, str(folder / META_FILE))
    class_labels = meta.class_labels
    problem = meta.servable_problem(graph_path(folder).exists())
    if problem is not None:
        raise CandidateRejected(f"{problem}: the serving runtime serves ONNX only")
    scorer, scorer_name = _scorer(folder, meta, choice)
    return LoadedModel(
        name=name,
        version=version,
        alias=alias,
        run_id=run_id,
        source=source,
        runtime="onnx",
        meta=meta,
        spec=spec,
        validator=RequestValidator(spec, meta.numeric, meta.categorical),
        scorer=scorer,
        scorer_name=scorer_name,
        class_labels=class_labels,
        positive=meta.positive_index,
        sha256=digest,
        card=(folder / CARD_FILE).read_text() if (folder / CARD_FILE).is_file() else None,
    )


CARD_FILE = "model_card.md"
"""The bundle's model card (written by training, `mlcycle.train.card`)."""

REFERENCE_TOLERANCE = 1e-4
"""How far a candidate's scores of its reference batch may be from training's."""


def bundle_digest(folder: Path) -> str:
    """SHA-256 over the bundle's files (names and contents): what identifies the model."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


ONE_RECORD_CHECKS = 32
"""Reference records also scored one at a time at load (the path most requests take)."""


def self_check(model: LoadedModel, folder: Path) -> None:
    """Score the bundle's reference batch (training rows) and compare with the scores
    scikit-learn gave them at training time; raise CandidateRejected if it cannot."""
    data = read_example(folder)
    if data is None:
        raise CandidateRejected(f"its bundle has no reference batch ({EXAMPLE_FILE})")
    n = len(data["records"])
    try:
        feed = model.validator.validate(list(data["records"]), single=False)
        probs = np.asarray(model.scorer.proba(feed), dtype=np.float64)
    except Exception as err:  # any failure to score is the finding
        raise CandidateRejected(f"it cannot score its reference batch: {err}"[:300]) from err
    if probs.shape != (n, len(model.class_labels)) or not np.isfinite(probs).all():
        raise CandidateRejected("it gives no finite score per class on its reference batch")
    if "class_probabilities" in data:
        expected = np.asarray(data["class_probabilities"], dtype=np.float64).reshape(n, -1)
    else:  # format 1: the positive label's probabilities only
        assert model.positive is not None
        probs = probs[:, model.positive]
        expected = np.asarray(data["probabilities"], dtype=np.float64)
    if probs.shape != expected.shape:
        raise CandidateRejected("its reference batch does not match its classes")
    diff = float(np.max(np.abs(probs - expected))) if len(expected) else 0.0
    # one record at a time too, as most requests come (`Scorer.one`, when it has one)
    one = getattr(model.scorer, "one", None)
    for i, record in enumerate(data["records"][:ONE_RECORD_CHECKS]):
        row = model.validator.plain_row(record)
        try:
            scores = one(row) if one is not None and row is not None else None
        except Exception as err:
            raise CandidateRejected(f"it cannot score a reference record: {err}"[:300]) from err
        if scores is None:
            continue
        got = np.asarray(scores, dtype=np.float64)
        if expected.ndim == 1:
            got = got[model.positive]
        if got.shape != expected[i].shape or not np.isfinite(got).all():
            raise CandidateRejected("it gives no finite score per class for one record")
        diff = max(diff, float(np.max(np.abs(got - expected[i]))))
    if diff > REFERENCE_TOLERANCE:
        raise CandidateRejected(
            f"its scores of the reference batch differ from training's by {diff:.2e} "
            f"(> {REFERENCE_TOLERANCE:g})"
        )


class ModelManager:
    """Follows `models:/<name>@<alias>`; loads new versions beside the old and swaps.

    A candidate must pass `self_check` before the swap; the disk cache is keyed by the
    run id and verified by the bundle's SHA-256, so a moved or reset tracking store can
    never make the server serve one model while naming another. The server only reads
    the registry: it never creates a tracking store.
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        alias: str | None = None,
        on_swap: Callable[[LoadedModel], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
        shadow: bool = False,
    ) -> None:
        self.settings = settings
        self.name = name
        self.alias = alias or settings.model_alias
        self.shadow = shadow
        """A shadow follows its alias away too: no alias, no model (a served model is kept
        when its alias cannot be read, and served from the disk cache at start)."""
        self._pointer = "last_good.json" if not shadow else f"last_good.{self.alias}.json"
        self.cache = settings.serving_cache / name
        self.current: LoadedModel | None = None
        self.tracking_reachable: bool | None = None
        self.last_error: str | None = None
        self._on_swap: list[Callable[[LoadedModel], None]] = [on_swap] if on_swap else []
        self._on_failure: list[Callable[[str], None]] = [on_failure] if on_failure else []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(
        self,
        on_swap: Callable[[LoadedModel], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        """Hooks called after a swap (with the new model) and after a refused version
        (with the reason's class name)."""
        if on_swap is not None:
            self._on_swap.append(on_swap)
        if on_failure is not None:
            self._on_failure.append(on_failure)

    def _swapped(self, model: LoadedModel) -> None:
        for hook in self._on_swap:
            hook(model)

    def _client(self) -> Any:
        from mlcycle import registry

        fail_fast_mlflow()  # instead of MLflow's long default retry schedule
        return registry.connect(self.settings, retries=1, create=False)

    def refresh(self) -> bool:
        """Load the alias's version if it differs from the current one; True if swapped."""
        with self._lock:
            try:
                version, run_id = self._resolve()
                self.tracking_reachable = True
            except TrackingUnavailable as err:
                self.tracking_reachable = False
                self.last_error = str(err)
                return False
            except Exception as err:  # a missing alias or model, or no right to read it
                self.tracking_reachable = True
                self.last_error = f"{self.name}@{self.alias}: {err}"[:300]
                if self.shadow and self.current is not None:
                    logger.info("%s@%s is gone: shadow off", self.name, self.alias)
                    self.current = None
                return False
            current = self.current
            if (
                current is not None
                and current.run_id == run_id
                and current.version == version
                and current.source == "registry"
            ):
                return False
            try:
                loaded = self._fetch(version, run_id)
            except Exception as err:
                self.last_error = f"refused {self.name} v{version}: {err}"[:400]
                logger.error("%s; still serving %s", self.last_error, self._serving())
                for hook in self._on_failure:
                    hook(type(err).__name__)
                return False
            self.current = loaded  # the atomic swap
            self.last_error = None
            logger.info("serving %s v%s (%s)", self.name, version, loaded.runtime)
            self._swapped(loaded)
            return True

    def _serving(self) -> str:
        model = self.current
        return f"v{model.version} (run {model.run_id[:8]})" if model else "nothing"

    def _over_http(self) -> bool:
        return self.settings.tracking_uri.startswith(("http://", "https://"))

    def _resolve(self) -> tuple[str, str]:
        """(version, run id) behind the alias: over MLflow's REST API from a tracking
        server (the serving install has no MLflow client), else with MLflow's client
        from the embedded tracking store."""
        if self._over_http():
            target = RestTracking(self.settings).alias(self.name, self.alias)
            return target.version, target.run_id
        mv = self._client().get_model_version_by_alias(self.name, self.alias)
        return str(mv.version), str(mv.run_id)

    def resolve(self) -> tuple[str, str]:
        """(version, run id) behind the alias, for a one-off load (`fetch`)."""
        return self._resolve()

    def fetch(self, version: str, run_id: str, remember: bool = True) -> LoadedModel:
        """That version's bundle, downloaded (or from the cache), loaded and
        self-checked; `remember=False` leaves the server's last-good pointer alone."""
        return self._fetch(version, run_id, remember)

    def _fetch(self, version: str, run_id: str, remember: bool = True) -> LoadedModel:
        target = self.cache / run_id
        if not is_bundle(target):
            # every worker process of a server shares this cache: each downloads into its
            # own folder and renames it into place (atomic; the first one wins)
            tmp = self.cache / f".{run_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            tmp.mkdir(parents=True)
            try:
                if self._over_http():
                    RestTracking(self.settings).download(run_id, BUNDLE_FOLDER, tmp)
                else:
                    import mlflow

                    mlflow.artifacts.download_artifacts(
                        run_id=run_id,
                        artifact_path=BUNDLE_FOLDER,
                        dst_path=str(tmp),
                        tracking_uri=self.settings.tracking_uri,
                    )
                if target.exists() and not is_bundle(target):
                    shutil.rmtree(target, ignore_errors=True)  # a partial copy of old
                try:
                    (tmp / BUNDLE_FOLDER).rename(target)
                except OSError:
                    if not is_bundle(target):
                        raise  # not another worker's finished copy
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        digest = bundle_digest(target)
        loaded = _load_folder(
            target,
            self.name,
            version,
            self.alias,
            run_id,
            "registry",
            digest,
            self.settings.serving_scorer,
        )
        self_check(loaded, target)
        current = self.current
        if (
            not self.shadow
            and current is not None
            and loaded.spec.contract_hash != current.spec.contract_hash
        ):
            raise ContractChanged(
                f"its contract (spec {loaded.spec.name}, {loaded.spec.contract_hash[:12]}) "
                f"differs from the served model's ({current.spec.contract_hash[:12]}): the "
                "API's validation, documentation and log follow the model, so a new "
                "contract needs a restart (a new deployment), never a silent swap"
            )
        if remember:
            pointer = self.cache / f".{self._pointer}.{os.getpid()}"
            pointer.write_text(json.dumps({"version": version, "run_id": run_id, "sha256": digest}))
            pointer.replace(self.cache / self._pointer)  # atomic for the other workers
        return loaded

    def load_cached(self) -> bool:
        """Serve the last good model from disk (tracking unreachable at start)."""
        pointer = self.cache / self._pointer
        if self.shadow or not pointer.exists():
            return False
        try:
            info = json.loads(pointer.read_text())
            folder = self.cache / info["run_id"]
            digest = bundle_digest(folder)
            if digest != info.get("sha256"):
                raise CandidateRejected("the cached bundle does not match its recorded SHA-256")
            loaded = _load_folder(
                folder,
                self.name,
                info["version"],
                self.alias,
                info["run_id"],
                "cache",
                digest,
                self.settings.serving_scorer,
            )
            self_check(loaded, folder)
        except Exception as err:
            self.last_error = f"cached model unusable: {err}"[:300]
            return False
        self.current = loaded
        logger.warning(
            "tracking %s unreachable: serving cached %s v%s (run %s)",
            redact_uri(self.settings.tracking_uri),
            self.name,
            info["version"],
            info["run_id"],
        )
        self._swapped(loaded)
        return True

    def start(self) -> None:
        if not self.refresh() and self.current is None:
            self.load_cached()
        if self.current is None and not self.shadow:
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
