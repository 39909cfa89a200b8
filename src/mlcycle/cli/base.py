"""What every command shares: the Typer app, the consoles, the common options, and one
context manager (`stage`) for the set-up and error handling of a command."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperOption

from mlcycle import __version__
from mlcycle.config import Settings, get_settings, quiet_mlflow, redact_text
from mlcycle.errors import BadInput, MlcycleError
from mlcycle.logging_setup import configure_logging

if TYPE_CHECKING:
    from mlcycle.engine import Engine
    from mlcycle.spec import DatasetSpec
    from mlcycle.store.base import Store
    from mlcycle.train.config import TrainConfig


def _flag_type(option: TyperOption, ctx: Any) -> str | None:
    """A flag's help row shows no value type (Typer 0.29 prints `<bool>` for each)."""
    if option.is_flag and option.metavar is None:
        return None
    return _OPTION_TYPE(option, ctx)


_OPTION_TYPE = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign,assignment]

app = typer.Typer(
    name="mlcycle",
    help="Files -> validated warehouse -> tracked training -> served model.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
logger = logging.getLogger("mlcycle.cli")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")]
EngineOpt = Annotated[
    str | None,
    typer.Option("--engine", help="local (default: MLCYCLE_ENGINE) or dask."),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Dask scheduler tcp://host:8786 (default: MLCYCLE_DASK_SCHEDULER; none: a local cluster).",
    ),
]
SpecOpt = Annotated[
    Path | None,
    typer.Option("--spec", help="Dataset spec YAML (default: MLCYCLE_SPEC, else the project's)."),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Which of the project's specs, datasets/NAME.yaml (default: MLCYCLE_DATASET).",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Training config YAML (default: MLCYCLE_TRAIN_CONFIG)."),
]


def fail(err: MlcycleError, as_json: bool = False) -> typer.Exit:
    """Report `err` (one line on stderr, or the JSON object with --json) and return the
    exit to raise: the error's own exit code."""
    message = redact_text(str(err), known_secrets())
    if as_json:
        print(json.dumps({"status": "failed", "error": message}))
    else:
        print_error(message)
    return typer.Exit(err.exit_code)


def print_error(message: str) -> None:
    """One line on stderr: `error:` in red, the message as plain text (never markup)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)


def known_secrets() -> tuple[str, ...]:
    try:
        return get_settings().secrets()
    except (ValueError, MlcycleError):
        return ()


def json_only() -> AbstractContextManager[Any]:
    """With --json, stdout carries the one JSON object: what libraries print there (MLflow's
    "View run at ..." lines) goes to stderr instead."""
    return redirect_stdout(sys.stderr)


def settings() -> Settings:
    return get_settings()


@contextmanager
def stage(as_json: bool = False) -> Iterator[None]:
    """A command's body: an MlcycleError inside becomes its one-line report (or JSON
    object) and its exit code; anything else reaches `main`'s last line of defence."""
    try:
        with json_only() if as_json else nullcontext():
            yield
    except MlcycleError as err:
        raise fail(err, as_json) from err


@contextmanager
def opened_store(config: Settings) -> Iterator[Store]:
    """The configured store, closed when the command ends."""
    from mlcycle.store import open_store

    store = open_store(config)
    try:
        yield store
    finally:
        store.close()


def engine(
    config: Settings, kind: str | None, scheduler: str | None
) -> AbstractContextManager[Engine]:
    """The engine a stage runs on, chosen once here: --engine, else MLCYCLE_ENGINE."""
    from mlcycle.engine import open_engine

    chosen = kind or config.engine
    if chosen not in ("local", "dask"):
        raise BadInput(f"--engine must be local or dask, not {chosen!r}")
    return open_engine(chosen, scheduler or config.dask_scheduler, config.dask_workers)  # type: ignore[arg-type]


def chosen(config: Settings, spec: Path | None = None, dataset: str | None = None) -> Settings:
    """The settings with a command's own --spec / --dataset applied."""
    update = {k: v for k, v in (("spec", spec), ("dataset", dataset)) if v is not None}
    return config.model_copy(update=update) if update else config


def _say(message: str, *args: object) -> None:
    """Which project, spec and config: said on a terminal's first lines; in scripts (stderr
    not a terminal) logged at debug level, so an error stays one line there."""
    level = logging.INFO if sys.stderr.isatty() else logging.DEBUG
    logger.log(level, message, *args)


def spec_of(config: Settings, path: Path | None, dataset: str | None = None) -> DatasetSpec:
    """The command's dataset spec, said on its first line: which project, which spec, why."""
    from mlcycle.spec import load_spec

    config = chosen(config, path, dataset)
    choice = config.spec_choice
    project = config.project
    where = f"project {project.root} ({project.found_by})" if project else "no project"
    _say("%s; spec %s (%s)", where, choice.path, choice.why)
    return load_spec(choice.path)


def train_config_of(
    config: Settings, path: Path | None, spec: Path | None = None, dataset: str | None = None
) -> TrainConfig:
    """The command's training config, said as it is chosen."""
    from mlcycle.train.config import load_train_config

    config = chosen(config, spec, dataset)
    choice = config.model_copy(
        update={"train_config": path or config.train_config}
    ).train_config_choice()
    _say("training config %s (%s)", choice.path, choice.why)
    return load_train_config(choice.path)


def emit_json(data: Any) -> None:
    """The command's one JSON object on stdout."""
    print(json.dumps(data, default=str))


def _print_version(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version.", callback=_print_version, is_eager=True
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Only warnings and errors on stderr: no progress lines (the results stay).",
        ),
    ] = False,
) -> None:
    try:
        config = settings()
    except ValueError as err:  # pydantic: a bad MLCYCLE_ variable or .env line
        print_error(f"invalid settings: {redact_text(str(err))}")
        raise typer.Exit(2) from err
    except MlcycleError as err:  # an unreadable project file
        raise fail(err) from err
    level = "WARNING" if quiet else config.log_level
    configure_logging(level, config.log_format, config.secrets())
    quiet_mlflow(level)


def main() -> None:
    """The console script: an unexpected error is one line, not a traceback
    (MLCYCLE_DEBUG=1 shows the traceback)."""
    try:
        app()
    except Exception as err:  # the last line of defence; known errors exit earlier
        if _debug():
            raise
        print_error(
            f"unexpected {type(err).__name__}: {redact_text(str(err), known_secrets())[:500]} "
            "(MLCYCLE_DEBUG=1 shows the traceback)"
        )
        sys.exit(1)


def _debug() -> bool:
    try:
        return get_settings().debug
    except (ValueError, MlcycleError):
        return False
