"""Training configuration: versioned YAML validated into pydantic models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlcycle.errors import SpecError

ModelKind = Literal["logistic_regression", "hist_gradient_boosting", "random_forest", "majority"]


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ModelKind = "logistic_regression"
    params: dict[str, Any] = Field(default_factory=dict)


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scoring: str = "roc_auc"
    grid: dict[str, list[Any]]


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: Literal["roc_auc", "accuracy", "f1", "precision", "recall"] = "roc_auc"
    tolerance: float = Field(default=0.01, ge=0.0)
    min_lift: float = Field(default=0.0, ge=0.0)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment: str = "Loan_Approval_Experiment"
    registered_model: str = "loan-approval"
    seed: int = 42
    test_size: float = Field(default=0.2, gt=0.0, lt=0.9)
    cv_folds: int = Field(default=5, ge=2, le=20)
    model: ModelConfig = Field(default_factory=ModelConfig)
    search: SearchConfig | None = None
    gate: GateConfig = Field(default_factory=GateConfig)


def load_train_config(path: Path | str) -> TrainConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise SpecError(f"{path}: cannot read training config: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from err
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise SpecError(f"{path}: invalid training config: {detail}") from err
