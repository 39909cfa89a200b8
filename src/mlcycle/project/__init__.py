"""The project template shipped with the package: the loan spec and the training config.

They are the defaults wherever no project file exists, and `mlcycle init` copies them
into a folder so a user can edit them for their own dataset.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

TEMPLATE_FILES = ("datasets/loan.yaml", "configs/train.yaml")
PROJECT_FILE = "mlcycle.yaml"
PROJECT_TEXT = """\
# An mlcycle project: every command run in this folder or below it uses this project
# (its datasets/, configs/, .env and data/). With more than one spec in datasets/,
# name the one commands use by default (else they ask: --dataset NAME):
# dataset: loan
"""


def scaffold(folder: Path) -> list[tuple[Path, bool]]:
    """Create the project files under `folder`, keeping any that exist; returns
    (path, created) for each of them."""
    root = resources.files("mlcycle") / "project"
    done: list[tuple[Path, bool]] = []
    for relative in TEMPLATE_FILES:
        path = folder / relative
        made = not path.exists()
        if made:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text((root / relative).read_text(encoding="utf-8"), encoding="utf-8")
        done.append((path, made))
    marker = folder / PROJECT_FILE
    made = not marker.exists()
    if made:
        marker.write_text(PROJECT_TEXT, encoding="utf-8")
    done.append((marker, made))
    env = folder / ".env"
    made = not env.exists()
    if made:
        env.write_text((root / "env.example").read_text(encoding="utf-8"), encoding="utf-8")
    done.append((env, made))
    raw = folder / "data" / "raw"
    made = not raw.exists()
    raw.mkdir(parents=True, exist_ok=True)
    done.append((raw, made))
    return done
