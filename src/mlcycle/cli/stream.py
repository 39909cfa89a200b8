"""`stream` and `publish`: Kafka topics in and out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlcycle.cli import render
from mlcycle.cli.base import (
    DatasetOpt,
    JsonOpt,
    SpecOpt,
    app,
    console,
    emit_json,
    opened_store,
    settings,
    spec_of,
    stage,
)
from mlcycle.config import Settings
from mlcycle.errors import BadInput

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from mlcycle.stream.metrics import StreamMetrics

logger = logging.getLogger("mlcycle.cli")

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


def kafka_stack() -> None:
    """The Kafka client is an extra: say how to get it when it is missing."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError as err:
        raise BadInput(
            "streaming needs the Kafka client: pip install 'mlcycle[stream]' "
            "(the project virtualenv made by `make install` has it)"
        ) from err


def health_server(
    config: Settings, metrics: StreamMetrics, http_port: int | None
) -> ThreadingHTTPServer | None:
    """/health and /metrics of the consumer (--http-port 0: none; unset: the setting)."""
    from mlcycle.stream.http import serve_health

    port = config.stream_http_port if http_port is None else http_port
    if not (port or http_port is None):
        return None
    server = serve_health(metrics, config.stream_http_host, port)
    host, bound = server.server_address[:2]
    logger.info("health and metrics on http://%s:%d/health, /metrics", host, bound)
    return server


@app.command()
def stream(
    topic: TopicOpt = None,
    bootstrap: BootstrapOpt = None,
    group: Annotated[
        str | None,
        typer.Option("--group", help="Consumer group (default: mlcycle-stream-<dataset>)."),
    ] = None,
    spec_path: SpecOpt = None,
    dataset: DatasetOpt = None,
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
    config = settings()
    with stage(as_json):
        kafka_stack()
    from mlcycle.stream.consumer import StreamConsumer, StreamOptions
    from mlcycle.stream.kafka import default_group, default_topic, security_config
    from mlcycle.stream.metrics import StreamMetrics

    server = None
    with stage(as_json), opened_store(config) as store:
        spec = spec_of(config, spec_path, dataset)
        options = StreamOptions(
            bootstrap=bootstrap or config.kafka_bootstrap,
            topic=topic or config.kafka_topic or default_topic(spec.name),
            group=group or config.kafka_group or default_group(spec.name),
            batch=batch or config.stream_batch,
            batch_ms=batch_ms or config.stream_batch_ms,
            max_message_bytes=config.stream_max_message_bytes,
            dead_letter=dead_letter,
            until_idle=until_idle,
            max_records=max_records,
            kafka=security_config(config),
        )
        metrics = StreamMetrics()
        try:
            server = health_server(config, metrics, http_port)
            consumer = StreamConsumer(spec, store, options, metrics=metrics)
            consumer.install_signal_handlers()
            summary = consumer.run()
        finally:
            if server is not None:
                server.shutdown()
    if as_json:
        emit_json(summary.to_dict() | {"topic": options.topic})
    else:
        render.stream_summary(summary)


@app.command()
def publish(
    source: Annotated[Path, typer.Argument(help="CSV, JSON, JSONL or Parquet file, or a folder.")],
    topic: TopicOpt = None,
    bootstrap: BootstrapOpt = None,
    spec_path: SpecOpt = None,
    dataset: DatasetOpt = None,
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
    config = settings()
    with stage(as_json):
        kafka_stack()
        from mlcycle.stream.kafka import default_topic, security_config
        from mlcycle.stream.publish import publish as send

        spec = spec_of(config, spec_path, dataset)
        summary = send(
            source,
            topic or config.kafka_topic or default_topic(spec.name),
            spec.id_column,
            bootstrap or config.kafka_bootstrap,
            extra=security_config(config),
            partitions=partitions,
            rate=rate or None,
        )
    if as_json:
        emit_json(summary.to_dict())
        return
    console.print(
        f"published {summary.records:,} record(s) to {summary.topic!r} in {summary.seconds:.2f}s",
        highlight=False,
    )
