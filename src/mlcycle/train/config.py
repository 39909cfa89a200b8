"""Training configuration: versioned YAML validated into pydantic models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlcycle.errors import SpecError
from mlcycle.gate import GateConfig
from mlcycle.monitor.config import MonitorConfig
from mlcycle.spec import read_yaml

ModelKind = Literal["logistic_regression", "hist_gradient_boosting", "random_forest", "majority"]


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ModelKind = "logistic_regression"
    params: dict[str, Any] = Field(default_factory=dict)


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scoring: str = "roc_auc"
    grid: dict[str, list[Any]]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    test_size: float = Field(default=0.2, gt=0.0, lt=0.9)
    cv_folds: int = Field(default=5, ge=2, le=20)
    model: ModelConfig = Field(default_factory=ModelConfig)
    search: SearchConfig | None = None
    gate: GateConfig = Field(default_factory=GateConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)


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
