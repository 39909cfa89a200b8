"""The `mlcycle` command: one subcommand per stage, thin wrappers over library calls."""

from __future__ import annotations

import json
import logging
import sys
from contextlib import AbstractContextManager, nullcontext, redirect_stdout
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from mlcycle import __version__
from mlcycle.config import Settings, get_settings, redact_text
from mlcycle.errors import BadInput, MlcycleError
from mlcycle.logging_setup import configure_logging

app = typer.Typer(
    name="mlcycle",
    help="Files -> validated warehouse -> tracked training -> served model.",
    no_args_is_help=True,
    add_completion=False,
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


def _engine(settings: Settings, engine: str | None, scheduler: str | None) -> Any:
    """The engine context for a stage (a Dask client for the dask engine)."""
    from mlcycle.engine import open_engine

    kind = engine or settings.engine
    if kind not in ("local", "dask"):
        raise _fail(BadInput(f"--engine must be local or dask, not {kind!r}"))
    return open_engine(kind, scheduler or settings.dask_scheduler, settings.dask_workers)  # type: ignore[arg-type]


SpecOpt = Annotated[
    Path | None, typer.Option("--spec", help="Dataset spec YAML (default: MLCYCLE_SPEC).")
]


def _fail(err: MlcycleError, as_json: bool = False) -> typer.Exit:
    message = redact_text(str(err), _secrets())
    if as_json:
        print(json.dumps({"status": "failed", "error": message}))
    else:
        _print_error(message)
    return typer.Exit(err.exit_code)


def _print_error(message: str) -> None:
    """One line on stderr: `error:` in red, the message as plain text (never markup)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)


def _secrets() -> tuple[str, ...]:
    try:
        return get_settings().secrets()
    except ValueError:
        return ()


def _json_only() -> AbstractContextManager[Any]:
    """With --json, stdout carries the one JSON object: what libraries print there (MLflow's
    "View run at ..." lines) goes to stderr instead."""
    return redirect_stdout(sys.stderr)


def _settings() -> Settings:
    return get_settings()


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
) -> None:
    try:
        settings = _settings()
    except ValueError as err:  # pydantic: a bad MLCYCLE_ variable or .env line
        _print_error(f"invalid settings: {redact_text(str(err))}")
        raise typer.Exit(2) from err
    configure_logging(settings.log_level, settings.log_format, settings.secrets())


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Project folder (default: here).")] = Path(),
) -> None:
    """Scaffold a project: datasets/loan.yaml, configs/train.yaml, .env and data/raw/.

    Existing files are kept. Edit the spec for your own table (docs/spec.md lists every
    key), put files in data/raw, then run `mlcycle etl`.

    Example: mlcycle init && mlcycle demo-data && mlcycle etl && mlcycle train
    """
    from mlcycle.project import scaffold

    for path, made in scaffold(folder):
        console.print(f"{'created' if made else 'kept   '} {path}", highlight=False)
    console.print(
        "next: put CSV/JSON/JSONL/Parquet files in data/raw (or `mlcycle demo-data`), "
        "then `mlcycle etl && mlcycle train && mlcycle serve`",
        highlight=False,
    )


@app.command("demo-data")
def demo_data(
    rows: Annotated[int, typer.Option("--rows", min=1, help="Rows to generate.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 42,
    out: Annotated[
        Path | None, typer.Option("--out", help="CSV file or folder (default: raw dir).")
    ] = None,
    spec_path: SpecOpt = None,
    if_empty: Annotated[
        bool,
        typer.Option("--if-empty", help="Only if the raw folder holds no data file at all."),
    ] = False,
) -> None:
    """Write a seeded synthetic table for the dataset spec, for offline demos.

    Example: mlcycle demo-data --rows 5000
    """
    from mlcycle.datagen import write_demo
    from mlcycle.etl.extract import data_files
    from mlcycle.spec import load_spec

    settings = _settings()
    target = out or settings.raw_path
    if if_empty and target.is_dir() and (existing := data_files(target)):
        console.print(
            f"{target} already holds {len(existing)} data file(s): no demo rows written",
            highlight=False,
        )
        return
    try:
        spec = load_spec(spec_path or settings.spec_path)
    except MlcycleError as err:
        raise _fail(err) from err
    path = write_demo(spec, target, rows, seed)
    console.print(f"wrote {rows} synthetic {spec.name} rows to {path}", highlight=False)


@app.command()
def etl(
    source: Annotated[
        Path | None, typer.Option("--source", help="File or folder (default: data/raw).")
    ] = None,
    spec_path: SpecOpt = None,
    max_rejected: Annotated[
        float | None,
        typer.Option("--max-rejected", min=0.0, max=1.0, help="Fail above this rejected share."),
    ] = None,
    engine: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Extract, validate and upsert raw files into the store; bad rows go to quarantine.

    Example: mlcycle etl --source ../shared/data/loan --json (--engine dask on a cluster)
    """
    from mlcycle.etl.pipeline import EtlSummary, run_etl
    from mlcycle.spec import load_spec
    from mlcycle.store import open_store

    settings = _settings()
    summary: EtlSummary | None = None
    store = open_store(settings)
    show_progress = not as_json and sys.stderr.isatty()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not show_progress,
    )
    task = progress.add_task("validate", total=None)

    def on_progress(phase: str, done: int, total: int | None) -> None:
        progress.update(task, description=phase, completed=done, total=total)

    try:
        spec = load_spec(spec_path or settings.spec_path)
        options: dict[str, Any] = {
            "chunk_rows": settings.chunk_rows,
            "max_rejected_share": (
                settings.max_rejected_share if max_rejected is None else max_rejected
            ),
            "progress": on_progress,
            "lock_wait": settings.lock_wait,
            "lock_lease": settings.lock_lease,
        }
        with _engine(settings, engine, scheduler) as runner, progress:
            if runner.distributed:
                from mlcycle.etl.distributed import run_etl_dask
                from mlcycle.store.mongo import MongoStore

                summary = run_etl_dask(
                    spec,
                    source or settings.raw_path,
                    store,
                    runner.client,
                    mongo_db=store.db.name if isinstance(store, MongoStore) else None,
                    part_bytes=settings.part_bytes,
                    **options,
                )
            else:
                summary = run_etl(spec, source or settings.raw_path, store, **options)
    except MlcycleError as err:
        raise _fail(err, as_json) from err
    finally:
        store.close()
    if as_json:
        print(json.dumps(summary.to_dict(), default=str))
        return
    _print_etl(summary)


def _print_etl(s: Any) -> None:
    table = Table(title=f"ETL batch {s.batch_id} ({s.store} store)", show_header=True)
    for col in ("file", "rows", "valid", "rejected", "dropped"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for f in s.files:
        table.add_row(
            Path(f.path).name, f"{f.rows:,}", f"{f.valid:,}", f"{f.rejected:,}", f"{f.dropped:,}"
        )
    console.print(table)
    console.print(
        f"read {s.rows_read:,} · valid {s.valid:,} · rejected {s.rejected:,} "
        f"({s.rejected_share:.1%}) · inserted {s.inserted:,} · updated {s.updated:,} · "
        f"unchanged {s.unchanged:,} · {s.seconds:.2f}s",
        highlight=False,
    )
    if s.rejected:
        console.print(f"rejected rows are in the quarantine collection '{s.dataset}_quarantine'")


TopicOpt = Annotated[
    str | None,
    typer.Option(
        "--topic", help="Kafka topic (default: MLCYCLE_KAFKA_TOPIC, else mlcycle.<dataset>)."
    ),
]
BootstrapOpt = Annotated[
    str | None,
    typer.Option("--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS)."),
]


def _kafka_stack() -> None:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError as err:
        raise _fail(
            BadInput(
                "streaming needs the Kafka client: pip install 'mlcycle[stream]' "
                "(the project virtualenv made by `make install` has it)"
            )
        ) from err


@app.command()
def stream(
    topic: TopicOpt = None,
    bootstrap: BootstrapOpt = None,
    group: Annotated[
        str | None,
        typer.Option("--group", help="Consumer group (default: mlcycle-stream-<dataset>)."),
    ] = None,
    spec_path: SpecOpt = None,
    batch: Annotated[
        int | None, typer.Option("--batch", min=1, help="Messages per micro-batch at most.")
    ] = None,
    batch_ms: Annotated[
        int | None, typer.Option("--batch-ms", min=1, help="Milliseconds a batch waits to fill.")
    ] = None,
    dead_letter: Annotated[
        str | None,
        typer.Option("--dead-letter", help="Dead-letter topic (default <topic>.dlq; '' = off)."),
    ] = None,
    until_idle: Annotated[
        float | None,
        typer.Option(
            "--until-idle", min=0.0, help="Stop after this many seconds without a message."
        ),
    ] = None,
    max_records: Annotated[
        int | None, typer.Option("--max-records", min=1, help="Stop after this many records.")
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option("--http-port", min=0, max=65535, help="/health and /metrics port (0: none)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Consume a Kafka topic into the store: validate, quarantine + dead-letter, upsert.

    Offsets are committed after each batch is stored (at least once; upserts make each
    record's effect happen once). SIGTERM finishes the batch, commits and exits 0.

    Example: mlcycle stream --topic mlcycle.loan --until-idle 10
    """
    _kafka_stack()
    from mlcycle.spec import load_spec
    from mlcycle.store import open_store
    from mlcycle.stream.consumer import StreamConsumer, StreamOptions
    from mlcycle.stream.http import serve_health
    from mlcycle.stream.kafka import default_group, default_topic, security_config
    from mlcycle.stream.metrics import StreamMetrics

    settings = _settings()
    store = open_store(settings)
    server = None
    try:
        spec = load_spec(spec_path or settings.spec_path)
        options = StreamOptions(
            bootstrap=bootstrap or settings.kafka_bootstrap,
            topic=topic or settings.kafka_topic or default_topic(spec.name),
            group=group or settings.kafka_group or default_group(spec.name),
            batch=batch or settings.stream_batch,
            batch_ms=batch_ms or settings.stream_batch_ms,
            max_message_bytes=settings.stream_max_message_bytes,
            dead_letter=dead_letter,
            until_idle=until_idle,
            max_records=max_records,
            kafka=security_config(settings),
        )
        metrics = StreamMetrics()
        port = settings.stream_http_port if http_port is None else http_port
        if port or http_port is None:
            server = serve_health(metrics, settings.stream_http_host, port)
            host, bound = server.server_address[:2]
            logger.info("health and metrics on http://%s:%d/health, /metrics", host, bound)
        consumer = StreamConsumer(spec, store, options, metrics=metrics)
        consumer.install_signal_handlers()
        with _json_only() if as_json else nullcontext():
            summary = consumer.run()
    except MlcycleError as err:
        raise _fail(err, as_json) from err
    finally:
        if server is not None:
            server.shutdown()
        store.close()
    if as_json:
        print(json.dumps(summary.to_dict() | {"topic": options.topic}, default=str))
        return
    console.print(
        f"stream {summary.batch_id}: read {summary.rows_read:,} · valid {summary.valid:,} · "
        f"rejected {summary.rejected:,} · inserted {summary.inserted:,} · "
        f"updated {summary.updated:,} · unchanged {summary.unchanged:,}",
        highlight=False,
    )


@app.command()
def publish(
    source: Annotated[Path, typer.Argument(help="CSV, JSON, JSONL or Parquet file, or a folder.")],
    topic: TopicOpt = None,
    bootstrap: BootstrapOpt = None,
    spec_path: SpecOpt = None,
    partitions: Annotated[
        int, typer.Option("--partitions", min=1, help="Partitions if the topic is created.")
    ] = 1,
    rate: Annotated[
        float | None,
        typer.Option("--rate", min=0.0, help="Records per second (default: all at once)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a file's records to a Kafka topic, one JSON object a message, keyed by id.

    Example: mlcycle publish data/raw/loan.csv --topic mlcycle.loan
    """
    _kafka_stack()
    from mlcycle.spec import load_spec
    from mlcycle.stream.kafka import default_topic, security_config
    from mlcycle.stream.publish import publish as send

    settings = _settings()
    try:
        spec = load_spec(spec_path or settings.spec_path)
        name = topic or settings.kafka_topic or default_topic(spec.name)
        summary = send(
            source,
            name,
            spec.id_column,
            bootstrap or settings.kafka_bootstrap,
            extra=security_config(settings),
            partitions=partitions,
            rate=rate or None,
        )
    except MlcycleError as err:
        raise _fail(err, as_json) from err
    if as_json:
        print(json.dumps(summary.to_dict()))
        return
    console.print(
        f"published {summary.records:,} record(s) to {summary.topic!r} in {summary.seconds:.2f}s",
        highlight=False,
    )


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="Training config YAML (default: MLCYCLE_TRAIN_CONFIG)."),
]


@app.command()
def preprocess(spec_path: SpecOpt = None, as_json: JsonOpt = False) -> None:
    """Pull the newest labelled snapshot from the store and print its profile.

    Example: mlcycle preprocess --json
    """
    from mlcycle.spec import load_spec
    from mlcycle.store import open_store
    from mlcycle.train.train import load_snapshot, profile

    settings = _settings()
    store = open_store(settings)
    try:
        spec = load_spec(spec_path or settings.spec_path)
        report = profile(load_snapshot(store, spec), spec)
    except MlcycleError as err:
        raise _fail(err, as_json) from err
    finally:
        store.close()
    if as_json:
        print(json.dumps(report))
        return
    table = Table(
        title=f"{spec.name}: {report['rows']:,} labelled rows (data {report['data_hash'][:12]})"
    )
    table.add_column("column")
    table.add_column("missing", justify="right")
    for col, share in report["missing_share"].items():
        table.add_row(col, f"{share:.1%}")
    console.print(table)
    balance = ", ".join(f"{k}: {v:,}" for k, v in report["class_balance"].items())
    console.print(f"class balance: {balance} · ETL batches: {len(report['etl_batches'])}")


@app.command()
def train(
    spec_path: SpecOpt = None,
    config: ConfigOpt = None,
    engine: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train on the newest data, log to MLflow, register, and promote if the gate passes.

    Example: mlcycle train --config configs/train.yaml (--engine dask on a cluster)
    """
    from mlcycle.spec import load_spec
    from mlcycle.store import open_store
    from mlcycle.train.config import load_train_config
    from mlcycle.train.train import run_train

    settings = _settings()
    store = open_store(settings)
    try:
        spec = load_spec(spec_path or settings.spec_path)
        cfg = load_train_config(config or settings.train_config_path)
        with (
            _engine(settings, engine, scheduler) as runner,
            console.status("training", spinner="dots") if not as_json else _json_only(),
        ):
            result = run_train(settings, spec, cfg, store, runner)
    except MlcycleError as err:
        raise _fail(err, as_json) from err
    finally:
        store.close()
    if as_json:
        print(json.dumps(result.to_dict(), default=str))
        return
    champ = result.champion_before
    table = Table(title=f"{result.model_name} v{result.version} on {result.rows:,} rows")
    for col in (
        "metric",
        "candidate",
        "baseline (majority)",
        f"champion v{champ['version']}" if champ else "champion",
    ):
        table.add_column(col, justify="right")
    for metric, value in result.metrics.items():
        other = champ["metrics"].get(metric) if champ else None
        table.add_row(
            metric,
            f"{value:.4f}",
            f"{result.baseline[metric]:.4f}",
            "—" if other is None else f"{other:.4f}",
        )
    console.print(table)
    cv = result.cv
    console.print(
        f"{result.params.get('cv_folds')}-fold CV on the training part: "
        f"accuracy {cv['cv_accuracy_mean']:.3f} ± {cv['cv_accuracy_std']:.3f}, "
        f"ROC AUC {cv['cv_roc_auc_mean']:.3f} ± {cv['cv_roc_auc_std']:.3f}",
        highlight=False,
    )
    verdict = "[green]promoted[/]" if result.decision["promote"] else "[yellow]not promoted[/]"
    console.print(f"gate: {verdict}: {result.decision['reason']}")
    console.print(f"champion: v{result.champion_after} · {result.run_url}", highlight=False)


def _spec_and_client(settings: Settings, spec_path: Path | None) -> tuple[Any, Any]:
    from mlcycle import registry
    from mlcycle.spec import load_spec

    spec = load_spec(spec_path or settings.spec_path)
    return spec, registry.connect(settings)


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Model version to make champion.")],
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if the gate refuses (needs --reason).")
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why --force: recorded on the version.")
    ] = None,
    spec_path: SpecOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Point the champion alias at VERSION, after showing the gate's checks.

    Example: mlcycle promote 3   (mlcycle promote 4 --force --reason "hotfix, see #12")
    """
    from mlcycle import registry
    from mlcycle.train.config import load_train_config

    settings = _settings()
    if force and not (reason and reason.strip()):
        raise _fail(BadInput("--force needs --reason: it is recorded on the version"))
    try:
        spec, client = _spec_and_client(settings, spec_path)
        cfg = load_train_config(config or settings.train_config_path)
        name = spec.registered_model
        target = registry.get_version(client, name, version=version)
        current = registry.champion(client, name)
        decision = registry.promotion_check(target, current, cfg.gate)
        console.print(
            f"gate (logged metrics): {'pass' if decision.promote else 'refuse'}: {decision.reason}",
            highlight=False,
        )
        if current is not None and current.version == target.version:
            console.print(f"{name} v{version} is already the champion")
            return
        if not decision.promote and not force:
            raise _fail(
                MlcycleError(
                    "the gate refuses this version; use --force --reason '...' to promote it anyway"
                )
            )
        registry.set_champion(
            client,
            name,
            target.version,
            current.version if current else None,
            forced_reason=reason.strip() if force and reason else None,
        )
    except MlcycleError as err:
        raise _fail(err) from err
    console.print(
        f"champion: {name} v{target.version} (was {'v' + current.version if current else 'none'})"
    )


@app.command()
def rollback(spec_path: SpecOpt = None) -> None:
    """Point the champion alias back at the version it replaced.

    Example: mlcycle rollback
    """
    from mlcycle import registry

    settings = _settings()
    try:
        spec, client = _spec_and_client(settings, spec_path)
        old, new = registry.rollback(client, spec.registered_model)
    except MlcycleError as err:
        raise _fail(err) from err
    console.print(f"champion: {spec.registered_model} v{new} (rolled back from v{old})")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Bind address (default MLCYCLE_SERVE_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port (default MLCYCLE_SERVE_PORT).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Worker processes.")
    ] = None,
    spec_path: SpecOpt = None,
) -> None:
    """Serve the champion model over HTTP: POST /predict, /docs, /metrics.

    Without a model it stops and says to run `mlcycle train`, unless
    MLCYCLE_WAIT_FOR_MODEL=true (then /health/ready answers 503 until one is promoted).

    Example: mlcycle serve --port 8000
    """
    from mlcycle.serve.runner import run_server, serving_model

    settings = _settings()
    if spec_path is not None:
        settings = settings.model_copy(update={"spec": spec_path})
    try:
        found = serving_model(settings)
    except MlcycleError as err:
        raise _fail(err) from err
    if found is None and not settings.wait_for_model:
        raise _fail(
            BadInput(
                "no model to serve yet: run `mlcycle train` first (or set "
                "MLCYCLE_WAIT_FOR_MODEL=true to start and wait for one)"
            )
        )
    bind_host = host or settings.serve_host
    bind_port = port or settings.serve_port

    def announce() -> None:
        console.print(
            f"serving {found or 'no model yet'} on http://{bind_host}:{bind_port} (docs at /docs)",
            highlight=False,
        )

    code = run_server(bind_host, bind_port, workers or settings.serve_workers, announce)
    if code:
        raise typer.Exit(code)


def parse_since(text: str) -> datetime:
    """`30m`, `24h`, `7d` (that long ago) or an ISO-8601 time (UTC when no offset)."""
    from datetime import UTC, timedelta

    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    raw = text.strip()
    if raw[:-1].replace(".", "", 1).isdigit() and raw[-1:].lower() in units:
        try:
            return datetime.now(UTC) - timedelta(**{units[raw[-1].lower()]: float(raw[:-1])})
        except OverflowError:  # further back than a datetime goes: the whole log
            return datetime(1970, 1, 1, tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as err:
        raise typer.BadParameter(
            f"{text!r} is neither a duration like 24h / 7d nor an ISO-8601 time"
        ) from err
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command()
def monitor(
    since: Annotated[
        str | None,
        typer.Option("--since", help="Window start: 24h, 7d, 30m or an ISO-8601 time."),
    ] = None,
    last: Annotated[
        int | None,
        typer.Option(
            "--last",
            min=1,
            help="Only the newest N predictions (default 10,000 when --since is not given).",
        ),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="Model version (default: the newest one logged)."),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the dashboard to this file.")
    ] = None,
    retrain: Annotated[
        bool,
        typer.Option("--retrain", help="Run `train` when the config's retrain policy fires."),
    ] = False,
    spec_path: SpecOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare a window of the prediction log with the model's training profile.

    Per feature: PSI, KS or chi-square, missing share, unseen categories; the score
    distribution; realized accuracy, F1, ROC AUC once labels arrive. Writes one report
    to `<dataset>_monitoring`. Exit codes: 0 ok (or watch, or too little traffic),
    3 drift, 4 realized performance below the policy; 1 error, 2 bad input.

    Example: mlcycle monitor --since 24h --html monitoring.html
    """
    from mlcycle.monitor.dashboard import render
    from mlcycle.monitor.reports import latest_reports
    from mlcycle.monitor.run import newest_version, run_monitor
    from mlcycle.spec import load_spec
    from mlcycle.store import open_store
    from mlcycle.train.config import load_train_config
    from mlcycle.train.train import run_train

    settings = _settings()
    start = parse_since(since) if since else None
    store = open_store(settings)
    try:
        spec = load_spec(spec_path or settings.spec_path)
        cfg = load_train_config(config or settings.train_config_path)
        if version is None and newest_version(store, spec, spec.registered_model) is None:
            return _no_predictions(spec, as_json)
        with _json_only() if as_json else nullcontext():
            result = run_monitor(
                settings,
                spec,
                cfg.monitor,
                store,
                version=version,
                since=start,
                last=last,
                retrain=retrain,
                train=lambda: run_train(settings, spec, cfg, store),
            )
        if html is not None:
            history = latest_reports(store, spec.name, spec.registered_model)
            html.parent.mkdir(parents=True, exist_ok=True)
            html.write_text(render(result.report, history), encoding="utf-8")
    except MlcycleError as err:
        raise _fail(err, as_json) from err
    finally:
        store.close()
    if as_json:
        print(json.dumps(result.report, default=str))
    else:
        _print_monitor(result.report, html)
    raise typer.Exit(result.exit_code)


def _no_predictions(spec: Any, as_json: bool) -> None:
    """An empty prediction log is not a failure: there is nothing to monitor yet (exit 0)."""
    from mlcycle.store.base import predictions_collection

    where = predictions_collection(spec.name)
    message = (
        f"no predictions of {spec.registered_model} are logged in {where!r} yet: nothing "
        "to monitor (serve the model with the prediction log on and send it traffic)"
    )
    if as_json:
        print(json.dumps({"status": "no_predictions", "verdict": None, "detail": message}))
    else:
        console.print(message, highlight=False)


def _print_monitor(report: dict[str, Any], html: Path | None = None) -> None:
    win = report["window"]
    table = Table(
        title=f"{report['model_name']} v{report['model_version']}: {win['rows']:,} predictions "
        f"({report['verdict']})"
    )
    for col in ("feature", "status", "PSI", "test", "p-value", "missing ref → now", "unseen"):
        table.add_column(col, justify="left" if col in ("feature", "status", "test") else "right")
    colour = {"ok": "green", "watch": "yellow", "drift": "red"}
    for name, f in [*report["features"].items(), ("(model score)", report["score"])]:
        table.add_row(
            name,
            f"[{colour[f['status']]}]{f['status']}[/]",
            f"{f['psi']:.3f}",
            f["test"]["name"],
            f"{f['test']['p_value']:.2g}",
            f"{f['missing']['reference']:.1%} → {f['missing']['current']:.1%}",
            f"{f['unseen']['share']:.1%}" if "unseen" in f else "",
        )
    console.print(table)
    perf = report.get("performance")
    if perf:
        val = perf["validation"]
        auc = "—" if perf["roc_auc"] is None else f"{perf['roc_auc']:.3f}"
        console.print(
            f"realized on {perf['matured']:,} matured predictions: accuracy "
            f"{perf['accuracy']:.3f} [{perf['accuracy_ci'][0]:.3f}, {perf['accuracy_ci'][1]:.3f}] "
            f"(validation {val.get('accuracy') or float('nan'):.3f}), ROC AUC {auc} "
            f"(validation {val.get('roc_auc') or float('nan'):.3f})",
            highlight=False,
        )
    else:
        console.print("realized performance: no prediction in the window has a label yet")
    for reason in report.get("reasons", []):
        console.print(f"  {reason}", highlight=False)
    retrain = report.get("retrain") or {}
    if retrain.get("triggered"):
        if retrain.get("error"):
            console.print(f"retraining failed: {retrain['error']}", highlight=False)
        else:
            console.print(
                f"retrained: v{retrain['version']} "
                f"({'promoted' if retrain['promoted'] else 'not promoted'}: {retrain['gate']})",
                highlight=False,
            )
    elif retrain.get("reason"):
        console.print(f"retrain policy fires ({retrain['reason']}): rerun with --retrain")
    console.print(f"verdict: {report['verdict']}", highlight=False)
    if html is not None:
        console.print(f"dashboard: {html}", highlight=False)


@app.command("mlflow-users")
def mlflow_users() -> None:
    """Create (or reset) the MLflow users of a tracking server with authentication.

    Run as the MLflow admin (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD). Makes
    the training user (MLCYCLE_MLFLOW_TRAIN_USER, default mlcycle-train, password
    MLCYCLE_MLFLOW_TRAIN_PASSWORD) and the read-only user for serving and monitoring
    (MLCYCLE_MLFLOW_READ_USER, default mlcycle-read, password
    MLCYCLE_MLFLOW_READ_PASSWORD). Idempotent: existing users get the given password.

    Example: mlcycle mlflow-users
    """
    import os

    from mlcycle import registry

    settings = _settings()
    users = {}
    for role, default in (("TRAIN", "mlcycle-train"), ("READ", "mlcycle-read")):
        password = os.environ.get(f"MLCYCLE_MLFLOW_{role}_PASSWORD", "")
        if not password:
            raise _fail(BadInput(f"MLCYCLE_MLFLOW_{role}_PASSWORD is not set"))
        users[os.environ.get(f"MLCYCLE_MLFLOW_{role}_USER") or default] = password
    if not settings.tracking_uri.startswith(("http://", "https://")):
        raise _fail(BadInput("MLFLOW_TRACKING_URI must name a tracking server (http/https)"))
    try:
        registry.probe(settings.tracking_uri)
        for name, what in registry.ensure_users(settings.tracking_uri, users):
            console.print(f"{what} MLflow user {name}", highlight=False)
    except MlcycleError as err:
        raise _fail(err) from err


@app.command("hash-key")
def hash_key_cmd() -> None:
    """Read an API key on stdin and print its SHA-256, for MLCYCLE_API_KEYS.

    Example: printf %s "$KEY" | mlcycle hash-key
    """
    from mlcycle.serve.security import hash_key

    key = sys.stdin.read().strip()
    if not key:
        raise _fail(MlcycleError("no key on standard input"))
    print(hash_key(key))


@app.command()
def doctor() -> None:
    """Check settings, spec, store and MLflow; say what is wrong and how to fix it.

    Example: mlcycle doctor
    """
    from mlcycle.doctor import run_checks

    settings = _settings()
    checks = run_checks(settings)
    secrets = settings.secrets()
    table = Table(title="mlcycle doctor")
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col)
    for c in checks:
        table.add_row(
            c.name,
            "[green]ok[/]" if c.ok else "[red]FAIL[/]",
            Text(redact_text(c.detail, secrets)),
            Text(redact_text(c.fix, secrets)),
        )
    console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def main() -> None:
    """The console script: an unexpected error is one line, not a traceback
    (MLCYCLE_DEBUG=1 shows the traceback)."""
    import os

    try:
        app()
    except Exception as err:  # the last line of defence; known errors exit earlier
        if os.environ.get("MLCYCLE_DEBUG") == "1":
            raise
        _print_error(
            f"unexpected {type(err).__name__}: {redact_text(str(err), _secrets())[:500]} "
            "(MLCYCLE_DEBUG=1 shows the traceback)"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
