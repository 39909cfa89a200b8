"""The `mlcycle` command: one module a stage, each a thin wrapper over library calls.

`base` holds the app, the shared options and the `stage` context manager (set-up and
error handling); `render` prints what the stages return. The command modules register
themselves on the app when imported, in the pipeline's order (the order of `--help`).
"""
# isort: skip_file

from mlcycle.cli.base import app, main
from mlcycle.cli import project, etl, quarantine, stream, train, models, serve, predict, monitor
from mlcycle.cli import admin, status
from mlcycle.cli.monitor import parse_since

__all__ = ["admin", "app", "etl", "main", "monitor", "parse_since", "project", "serve"]
__all__ += ["models", "predict", "quarantine", "status", "stream", "train"]
