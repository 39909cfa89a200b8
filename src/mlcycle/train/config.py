"""Training configuration: versioned YAML validated into pydantic models."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlcycle.errors import SpecError
from mlcycle.gate import GateConfig
from mlcycle.monitor.config import MonitorConfig
from mlcycle.spec import read_yaml
from mlcycle.train.holdout import capped_fraction

ModelKind = Literal[
    "logistic_regression", "hist_gradient_boosting", "random_forest", "lightgbm", "majority"
]


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ModelKind = "logistic_regression"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _params_fit_the_kind(self) -> ModelConfig:
        """Each param is one the kind's estimator takes, of a type it accepts: checked when
        the config loads, not after the data is read."""
        check_params(self.kind, self.params)
        return self


def kind_params(kind: str) -> list[str]:
    """The params a model kind accepts (its scikit-learn estimator's; `random_state`
    comes from the config's `seed`)."""
    from mlcycle.train.features import estimator

    made = estimator(ModelConfig.model_construct(kind=kind, params={}), 0)
    return sorted(p for p in made.get_params() if p != "random_state")


def check_params(kind: str, params: dict[str, Any], where: str = "params") -> None:
    """ValueError naming the first param `kind` does not take, or takes in another type."""
    try:
        from mlcycle.train.features import estimator
    except ImportError:  # a serving-only install trains nothing
        return
    known = kind_params(kind)
    for name in params:
        if name not in known:
            raise ValueError(
                f"{where}: {kind} has no param {name!r} (it takes: {', '.join(known)})"
            )
    made = estimator(ModelConfig.model_construct(kind=kind, params=dict(params)), 0)
    try:
        if hasattr(made, "_parameter_constraints"):
            made._validate_params()  # scikit-learn's own type and range checks, no fitting
        else:
            _check_lightgbm(params)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null inside the block (native code writes there)."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _check_lightgbm(params: dict[str, Any]) -> None:
    """LightGBM has no scikit-learn constraint table: its own parameter parser checks the
    values (the types and ranges it refuses at fit time, refused here)."""
    try:
        import lightgbm as lgb
        import numpy as np
    except ImportError:
        return
    native = {k: v for k, v in params.items() if k not in ("class_weight", "importance_type")}
    quiet = {**native, "verbose": -1, "objective": "binary"}
    try:
        with _native_stderr_muted():  # its C++ log prints the failure on stderr too
            lgb.Booster(
                params=quiet,
                train_set=lgb.Dataset(np.array([[0.0], [1.0]]), label=[0, 1], params=quiet),
            )
    except lgb.basic.LightGBMError as err:
        raise ValueError(re.sub(r" at \S+, line \d+ \.", "", str(err)).strip()) from err


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scoring: str = "roc_auc"
    grid: dict[str, list[Any]]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    test_size: float = Field(default=0.2, gt=0.0, lt=0.9)
    holdout_max_rows: int | None = Field(default=1_000_000, ge=100)
    """The hold-out's size bound: on a table where `test_size` would hold out more rows,
    the fraction is halved until it does not (`holdout.capped_fraction`). None: no bound."""
    cv_folds: int = Field(default=5, ge=2, le=20)
    model: ModelConfig = Field(default_factory=ModelConfig)
    search: SearchConfig | None = None
    gate: GateConfig = Field(default_factory=GateConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)

    def for_rows(self, rows: int) -> TrainConfig:
        """This config with the hold-out fraction a table of `rows` rows is split at."""
        fraction = capped_fraction(self.test_size, self.holdout_max_rows, rows)
        return (
            self if fraction == self.test_size else self.model_copy(update={"test_size": fraction})
        )

    @model_validator(mode="after")
    def _grid_fits_the_kind(self) -> TrainConfig:
        if self.search is not None:
            known = kind_params(self.model.kind)
            for name in self.search.grid:
                if name not in known:
                    raise ValueError(
                        f"search.grid: {self.model.kind} has no param {name!r} "
                        f"(it takes: {', '.join(known)})"
                    )
        return self


def load_train_config(path: Path | str) -> TrainConfig:
    path = Path(path)
    data = read_yaml(path, "training config") or {}
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise SpecError(f"{path}: invalid training config: {detail}") from err
