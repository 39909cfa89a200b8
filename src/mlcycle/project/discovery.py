"""Which project, dataset spec and training config a command uses, found the way git and
Kedro find theirs: by walking up from the working folder. Never a guess.

A project is the nearest folder, from the working folder up, that holds the project file
`mlcycle.yaml` (written by `mlcycle init`) or a `datasets/` folder with a spec in it.
Its dataset is, in order: `--spec FILE` / `MLCYCLE_SPEC`; `--dataset NAME` /
`MLCYCLE_DATASET`; `dataset:` in `mlcycle.yaml`; the only spec in `datasets/`. Two or
more specs and nothing naming one is a question (exit 2), never a pick. The bundled loan
spec is used only outside any project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from mlcycle.errors import BadInput
from mlcycle.project import PROJECT_FILE

SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Project:
    root: Path
    found_by: str
    """`mlcycle.yaml` or `datasets/`: what made the folder a project."""
    dataset: str | None = None
    """The project file's `dataset:` (None when it names none)."""

    def specs(self) -> dict[str, Path]:
        """The specs in `datasets/` by name (the file name without its suffix)."""
        folder = self.root / "datasets"
        if not folder.is_dir():
            return {}
        found = sorted(p for p in folder.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file())
        return {p.stem: p for p in found}


@dataclass(frozen=True)
class Chosen:
    path: Path
    why: str


def _read_project_file(path: Path) -> str | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise BadInput(f"{path}: not a readable project file ({err})") from err
    if not isinstance(data, dict):
        raise BadInput(f"{path}: the project file must be a mapping like `dataset: loan`")
    unknown = sorted(set(data) - {"dataset"})
    if unknown:
        raise BadInput(f"{path}: unknown key {unknown[0]!r} (the project file knows: dataset)")
    dataset = data.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise BadInput(f"{path}: `dataset` must be a name like loan, not {dataset!r}")
    return dataset or None


def find_project(start: Path | None = None) -> Project | None:
    """The nearest project at or above `start` (default: the working folder)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        marker = folder / PROJECT_FILE
        if marker.is_file():
            return Project(folder, PROJECT_FILE, _read_project_file(marker))
        if Project(folder, "datasets/").specs():
            return Project(folder, "datasets/")
    return None


def choose_spec(explicit: Path | None, dataset: str | None, project: Project | None) -> Chosen:
    """The spec a command uses, with why (see the module's docstring)."""
    from mlcycle.spec import packaged

    if explicit is not None:
        return Chosen(explicit, "given with --spec or MLCYCLE_SPEC")
    named, by = (dataset, "--dataset or MLCYCLE_DATASET") if dataset else (None, "")
    if named is None and project is not None and project.dataset:
        named, by = project.dataset, f"`dataset:` in {project.root / PROJECT_FILE}"
    if project is None:
        bundled = packaged("datasets/loan.yaml")
        if named is not None and named != bundled.stem:
            raise BadInput(
                f"dataset {named!r} ({by}) but no project was found at or above "
                f"{Path.cwd()} (no {PROJECT_FILE} or datasets/ folder): run it from the "
                "project, or pass --spec FILE"
            )
        return Chosen(bundled, "the bundled loan example: no project at or above here")
    specs = project.specs()
    where = project.root / "datasets"
    if named is not None:
        if named in specs:
            return Chosen(specs[named], f"dataset {named!r}, {by}")
        have = ", ".join(specs) or "none"
        raise BadInput(f"dataset {named!r} ({by}) is not in {where} (it holds: {have})")
    if len(specs) == 1:
        (path,) = specs.values()
        return Chosen(path, f"the only spec in {where}")
    if not specs:
        raise BadInput(
            f"project {project.root} ({project.found_by}) has no dataset spec in {where}: "
            "write one (docs/spec.md), or pass --spec FILE"
        )
    raise BadInput(
        f"{len(specs)} dataset specs in {where} ({', '.join(specs)}): choose one with "
        f"--dataset NAME, MLCYCLE_DATASET or `dataset:` in {PROJECT_FILE}"
    )


def choose_train_config(explicit: Path | None, spec: Path, project: Project | None) -> Chosen:
    """The training config: `--config` / `MLCYCLE_TRAIN_CONFIG`; else the project's
    `configs/<dataset>.yaml`, then its `configs/train.yaml`; else the packaged default."""
    from mlcycle.spec import packaged

    if explicit is not None:
        return Chosen(explicit, "given with --config or MLCYCLE_TRAIN_CONFIG")
    if project is not None:
        for name in (spec.stem, "train"):
            for suffix in SPEC_SUFFIXES:
                path = project.root / "configs" / f"{name}{suffix}"
                if path.is_file():
                    return Chosen(path, "the project's")
    return Chosen(packaged("configs/train.yaml"), "the packaged default")
