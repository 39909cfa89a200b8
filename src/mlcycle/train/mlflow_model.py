"""What a training run logs for MLflow's own clients: the pyfunc model with a signature
of raw-file types, and the training data as a run input (`mlflow.log_input`)."""

from __future__ import annotations

import io
import logging
import re
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

from mlcycle.spec import DatasetSpec, value_text

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
logger = logging.getLogger(__name__)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def input_signature(spec: DatasetSpec) -> Any:
    """The feature columns as a raw file read by pandas has them. Numbers are `Any`:
    pandas reads a float column whose values happen to be whole as int64, an integer
    column with gaps (or written `6.0`) as float64, and MLflow refuses both int64 ->
    double and float64 -> long; the model converts them itself, by the spec's rules.
    Categories are `string` unless a value could be read as a number or boolean (`Any`
    then, for the same reason). Nullable and optional columns are optional. The id and
    unknown columns are ignored by the model."""
    from mlflow.types.schema import AnyType, ColSpec, Schema

    cols: list[Any] = []
    for name in spec.feature_columns:
        col = spec.columns[name]
        optional = col.nullable or not col.required
        kind: Any
        if col.type == "category" and not any(
            _NUMBER.fullmatch(value_text(v)) or value_text(v).lower() in ("true", "false")
            for v in [*(col.values or []), *col.aliases, *col.aliases.values()]
        ):
            kind = "string"
        else:
            kind = AnyType()
        cols.append(ColSpec(kind, name, required=not optional))
    return Schema(cols)


def output_signature(labels: list[str]) -> Any:
    from mlflow.types.schema import ColSpec, Schema

    cols: list[Any] = [
        ColSpec("string", "label"),
        ColSpec("double", "probability"),
        *(ColSpec("double", f"probability_{label}") for label in labels),
    ]
    return Schema(cols)


def log_pyfunc(
    pipeline: Any,
    spec: DatasetSpec,
    serving_json: Path,
    example: Any,
    labels: list[str],
    registered_name: str,
    work: Path,
    explainer: Path | None = None,
) -> Any:
    """Log the pipeline as the pyfunc model `model` and register it; `explainer` (the
    bundle's linear fold or tree tables) answers `params={"explain": True}`."""
    import cloudpickle

    pickled = work / "pipeline.pkl"  # (mlflow.sklearn.save_model would infer its
    with pickled.open("wb") as handle:  # requirements in a subprocess: ~2 s a run)
        cloudpickle.dump(pipeline, handle)
    said = io.StringIO()  # MLflow prints "Created version ..." itself: the log's, not ours
    with redirect_stderr(said):
        logged = _log_model(
            spec,
            serving_json,
            example,
            labels,
            registered_name,
            pickled,
            explainer,
            _requirements(pipeline),
        )
    for line in said.getvalue().splitlines():
        if line.strip():
            logger.debug("mlflow: %s", line.strip())
    return logged


def _log_model(
    spec: DatasetSpec,
    serving_json: Path,
    example: Any,
    labels: list[str],
    registered_name: str,
    pickled: Path,
    explainer: Path | None,
    requirements: list[str],
) -> Any:
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    import mlcycle

    artifacts = {"pipeline": str(pickled), "serving": str(serving_json)}
    if explainer is not None:
        artifacts["explainer"] = str(explainer)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_CODE),
        artifacts=artifacts,
        code_paths=[str(Path(mlcycle.__file__).parent)],
        # outputs only: an input schema with `Any` number columns makes MLflow's scoring
        # server refuse CSV bodies, and `double` ones refuse pandas' int64 columns; the
        # model checks its input by the spec's own rules
        signature=ModelSignature(
            outputs=output_signature(labels),
            params=ParamSchema([ParamSpec("explain", "boolean", False)]),
        ),
        input_example=example,
        registered_model_name=registered_name,
        pip_requirements=requirements,
    )


def _requirements(pipeline: Any) -> list[str]:
    """What loading the pickled pipeline needs, pinned to the versions that trained it."""
    from importlib.metadata import version

    names = ["scikit-learn", "pandas", "numpy", "cloudpickle", "pydantic", "pyyaml", "orjson"]
    if type(pipeline[-1]).__module__.startswith("lightgbm"):
        names.append("lightgbm")
    return [f"{n}=={version(n)}" for n in names]


def load_pipeline(model_uri: str) -> Any:
    """The scikit-learn pipeline behind a registered version (pyfunc or sklearn flavor)."""
    import mlflow

    try:
        return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().pipeline
    except AttributeError:
        return mlflow.sklearn.load_model(model_uri)


def raw_example(spec: DatasetSpec, frame: Any) -> Any:
    """A few training rows as a raw file has them (numbers, category text, gaps as NaN),
    whole-number columns as int64, as pandas reads them."""
    out = frame.head(5).copy()
    for name in spec.numeric_features:
        if spec.columns[name].type == "integer" and not out[name].isna().any():
            out[name] = out[name].astype("int64")
    return out


def log_training_input(spec: DatasetSpec, store_name: str, where: str, snapshot: Any) -> None:
    """The training data as the run's input: its store, collection and data hash."""
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset

    source = StoreSource(
        store=store_name,
        location=where,
        collection=spec.name,
        data_hash=snapshot.data_hash,
        rows=snapshot.rows,
        etl_batches=snapshot.batch_ids[:50],
    )
    dataset = MetaDataset(  # type: ignore[abstract]  # (profile is optional at run time)
        source=source,
        name=spec.name,
        digest=snapshot.data_hash[:36],
        schema=input_signature(spec),
    )
    mlflow.log_input(dataset, context="training")


def _store_source_class() -> Any:
    from mlflow.data.dataset_source import DatasetSource

    class _StoreSource(DatasetSource):
        """Rows read from the mlcycle store (MongoDB or embedded) at a data hash."""

        def __init__(self, **info: Any) -> None:
            self.info = info

        @staticmethod
        def _get_source_type() -> str:
            return "mlcycle_store"

        def load(self, **kwargs: Any) -> Any:
            raise NotImplementedError("read the rows with `mlcycle` from the store named here")

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> Any:
            raise NotImplementedError

        def to_dict(self) -> dict[str, Any]:
            return dict(self.info)

        @classmethod
        def from_dict(cls, source_dict: dict[str, Any]) -> Any:
            return cls(**source_dict)

    return _StoreSource


def StoreSource(**info: Any) -> Any:  # noqa: N802 - a class made on first use (mlflow import)
    global _STORE_SOURCE
    if _STORE_SOURCE is None:
        from mlflow.data.dataset_source_registry import register_dataset_source

        _STORE_SOURCE = _store_source_class()
        register_dataset_source(_STORE_SOURCE)
    return _STORE_SOURCE(**info)


_STORE_SOURCE: Any = None
