"""The serving bundle: what a training run leaves (artifact folder `serving/`) for the
serving runtime, the registry's checks and the MLflow pyfunc model. This module is the
one writer and the one reader of its files; `ServingMeta` is `serving.json`.

| file | what |
| --- | --- |
| `serving.json` | `ServingMeta`: inputs, labels, the spec, the runtime and its checks |
| `model.onnx` | the ONNX graph (when it matches scikit-learn) |
| `linear.json` | a linear model folded into its weights (optional fast path) |
| `trees.npz` | a tree model's explanation tables (`mlcycle.treeshap`; optional) |
| `example.json` | training rows and scikit-learn's probabilities for them (self-check) |
| `profile.json` | the monitoring reference (`mlcycle.monitor.profile`) |

Only pydantic and the standard library here: the serving install reads bundles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FOLDER = "serving"
"""The bundle's artifact path in its training run."""
META_FILE = "serving.json"
GRAPH_FILE = "model.onnx"
LINEAR_FILE = "linear.json"
EXAMPLE_FILE = "example.json"
TREES_FILE = "trees.npz"
PROFILE_FILE = "profile.json"
FORMAT = 2


class ServingMeta(BaseModel):
    """`serving.json`."""

    model_config = ConfigDict(extra="allow")

    format: int = FORMAT
    runtime: str
    """onnx (the graph matches scikit-learn) or sklearn (no usable graph)."""
    onnx_max_abs_diff: float | None = None
    onnx_note: str | None = None
    linear_note: str | None = None
    explain_note: str | None = None
    """How this version's scores are explained (`?explain=true`), or why they are not."""
    numeric: list[str]
    categorical: list[str]
    missing: str | None = None
    fill: dict[str, Any] | None = None
    classes: list[int]
    labels: dict[str, int]
    positive: str | None = None
    data_hash: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict)

    @property
    def class_labels(self) -> list[str]:
        """The label of each class, in the model's class order."""
        names = {int(v): k for k, v in self.labels.items()}
        return [names[int(c)] for c in self.classes]

    @property
    def positive_index(self) -> int | None:
        """Binary: the positive label's column among `class_labels`."""
        return None if self.positive is None else self.class_labels.index(self.positive)

    def servable_problem(self, has_graph: bool) -> str | None:
        """Why the serving runtime (ONNX only) cannot serve this bundle, or None."""
        if self.runtime == "onnx" and has_graph:
            return None
        return f"its bundle has no ONNX graph ({self.onnx_note or 'runtime ' + self.runtime})"


def write_bundle(
    folder: Path,
    meta: ServingMeta,
    *,
    graph: bytes | None,
    linear: dict[str, Any] | None,
    example: dict[str, Any],
    trees: dict[str, Any] | None = None,
) -> None:
    """Write the bundle's files (the profile is added by `write_profile`)."""
    folder.mkdir(parents=True, exist_ok=True)
    if graph is not None:
        (folder / GRAPH_FILE).write_bytes(graph)
    if linear is not None:
        (folder / LINEAR_FILE).write_text(json.dumps(linear))
    if trees is not None:
        import numpy as np

        with (folder / TREES_FILE).open("wb") as handle:
            np.savez_compressed(handle, **trees)
    (folder / META_FILE).write_text(meta.model_dump_json(indent=2))
    (folder / EXAMPLE_FILE).write_text(json.dumps(example))


def write_profile(folder: Path, profile: dict[str, Any]) -> None:
    (folder / PROFILE_FILE).write_text(json.dumps(profile))


def read_meta(path: Path) -> ServingMeta:
    """`serving.json` from a bundle folder (or the file itself)."""
    file = path / META_FILE if path.is_dir() else path
    return ServingMeta.model_validate_json(file.read_bytes())


def read_linear(folder: Path) -> dict[str, Any] | None:
    path = folder / LINEAR_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_trees(folder: Path) -> dict[str, Any] | None:
    """A tree model's explanation tables (arrays only, nothing pickled), or None."""
    path = folder / TREES_FILE
    if not path.is_file():
        return None
    from mlcycle.treeshap import read_tables

    return read_tables(path)


def read_example(folder: Path) -> dict[str, Any] | None:
    path = folder / EXAMPLE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def explainer_file(folder: Path) -> Path | None:
    """The file a version's explanations come from: its linear fold or its tree tables."""
    for name in (LINEAR_FILE, TREES_FILE):
        if (folder / name).is_file():
            return folder / name
    return None


def graph_path(folder: Path) -> Path:
    return folder / GRAPH_FILE


def is_bundle(folder: Path) -> bool:
    return (folder / META_FILE).exists()
