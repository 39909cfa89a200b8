"""Typed settings from the environment and `.env`: the one place for defaults."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration. Env vars are prefixed `MLCYCLE_`, except the conventional
    `MONGO_URI` and `MLFLOW_TRACKING_URI`."""

    model_config = SettingsConfigDict(
        env_prefix="MLCYCLE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Path("data")
    raw_dir: Path | None = None
    spec: Path | None = None
    """Dataset spec YAML; unset: ./datasets/loan.yaml if present, else the packaged one."""
    train_config: Path | None = None
    """Training config YAML; unset: ./configs/train.yaml if present, else the packaged one."""

    mongo_uri: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MONGO_URI", "MLCYCLE_MONGO_URI")
    )
    mongo_db: str = "mlcycle"
    store_timeout_ms: int = 2000
    """Per attempt: server selection and connect timeout."""
    store_retries: int = 3
    """Attempts for each store call; an unreachable server fails in ~7 s by default."""

    chunk_rows: int = 100_000
    batch_size: int = 5_000
    max_rejected_share: float = Field(default=0.1, ge=0.0, le=1.0)
    lock_lease: float = Field(default=30.0, gt=0.0)
    """Seconds an ETL's lease on its dataset lasts without a heartbeat (a dead run's is
    taken over after this)."""
    lock_wait: float = Field(default=0.0, ge=0.0)
    """Seconds an ETL waits for another run of the same dataset to finish (0: stop at once)."""

    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "MLCYCLE_MLFLOW_TRACKING_URI"),
    )

    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    serve_workers: int = 1
    model_alias: str = "champion"
    wait_for_model: bool = False
    """`serve` starts without a model and answers 503 until one is promoted (containers);
    off, it refuses to start and says to run `mlcycle train`."""
    reload_interval: float = Field(default=10.0, ge=0.0)
    """Seconds between checks of the model alias; 0 turns polling off."""
    max_batch: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    api_keys: str | None = None
    """JSON list of {"name", "role": "predict"|"admin", "sha256"}: hashes, never keys."""
    serving_scorer: Literal["auto", "onnxruntime"] = "auto"
    """auto: a linear model's fold (`linear.json`) when its bundle has one, else the
    ONNX graph; onnxruntime: always the graph."""
    access_log: bool = True
    prediction_log: bool = True
    prediction_log_queue: int = Field(default=10_000, ge=1)
    prediction_log_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Bound on what the prediction log may hold in memory while the store is slow or down."""

    engine: Literal["local", "dask"] = "local"
    """Where `etl` and `train` run: here, or on a Dask cluster."""
    dask_scheduler: str | None = None
    """tcp://host:8786 of a Dask scheduler; unset with the dask engine: a local cluster."""
    dask_workers: int = Field(default=2, ge=1)
    """Worker processes of the local cluster started when no scheduler is set."""
    part_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """The dask engine cuts CSV and JSONL files larger than this into parts."""

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "MLCYCLE_KAFKA_BOOTSTRAP"),
    )
    kafka_topic: str | None = None
    """Topic of `stream` and `publish`; unset: `mlcycle.<dataset>`."""
    kafka_group: str | None = None
    """Consumer group of `stream`; unset: `mlcycle-stream-<dataset>`."""
    kafka_security_protocol: str | None = None
    """PLAINTEXT (unset), SSL, SASL_PLAINTEXT or SASL_SSL."""
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    stream_batch: int = Field(default=5_000, ge=1)
    """Messages per micro-batch at most."""
    stream_batch_ms: int = Field(default=500, ge=1)
    """Milliseconds a micro-batch waits to fill before it is processed."""
    stream_max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    """A larger message is dead-lettered unread."""
    stream_http_host: str = "127.0.0.1"
    stream_http_port: int = Field(default=8001, ge=0, le=65535)
    """`/health` and `/metrics` of `stream` (0: a free port, logged)."""

    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @property
    def spec_path(self) -> Path:
        return _project_file(self.spec, "datasets/loan.yaml")

    @property
    def train_config_path(self) -> Path:
        return _project_file(self.train_config, "configs/train.yaml")

    @property
    def raw_path(self) -> Path:
        return self.raw_dir if self.raw_dir is not None else self.data_dir / "raw"

    @property
    def embedded_store_path(self) -> Path:
        return self.data_dir / "store.sqlite3"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI; the embedded default is a SQLite file under the data dir."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def serving_cache(self) -> Path:
        return self.data_dir / "serving-cache"

    @property
    def artifact_root(self) -> Path:
        return (self.data_dir / "mlartifacts").resolve()


def _project_file(explicit: Path | None, relative: str) -> Path:
    """An explicit path as given; else the project's own file (made by `mlcycle init`) in
    the working folder; else the copy shipped in the package."""
    if explicit is not None:
        return explicit
    local = Path(relative)
    if local.is_file():
        return local
    from mlcycle.spec import packaged

    return packaged(relative)


def redact_uri(uri: str) -> str:
    """Hide the password in a URI such as mongodb://user:secret@host/db."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", uri)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` to re-read."""
    return Settings()
