"""Typed settings from the environment and `.env`: the one place for defaults."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlcycle.project.discovery import (
    Chosen,
    Project,
    choose_spec,
    choose_train_config,
    find_project,
)

CHUNK_ROWS = 100_000
"""Rows an ETL reads, validates and writes at a time (MLCYCLE_CHUNK_ROWS)."""
MAX_REJECTED_SHARE = 0.1
"""An ETL fails above this share of rejected rows (MLCYCLE_MAX_REJECTED_SHARE)."""
LOCK_LEASE = 30.0
"""Seconds an ETL's lease on its dataset lasts without a heartbeat (MLCYCLE_LOCK_LEASE)."""
PART_BYTES = 32 * 1024 * 1024
"""The dask engine cuts CSV and JSONL files larger than this into parts (MLCYCLE_PART_BYTES)."""


class Settings(BaseSettings):
    """Runtime configuration. Env vars are prefixed `MLCYCLE_`, except the conventional
    `MONGO_URI` and `MLFLOW_TRACKING_URI`."""

    model_config = SettingsConfigDict(
        env_prefix="MLCYCLE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Path("data")
    raw_dir: Path | None = None
    spec: Path | None = None
    """Dataset spec YAML; unset: the project's (see `mlcycle.project.discovery`)."""
    dataset: str | None = None
    """Which of the project's specs (`datasets/<NAME>.yaml`) when it holds several."""
    train_config: Path | None = None
    """Training config YAML; unset: the project's configs/<dataset>.yaml or
    configs/train.yaml, else the packaged one."""

    mongo_uri: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MONGO_URI", "MLCYCLE_MONGO_URI")
    )
    mongo_db: str = "mlcycle"
    store_timeout_ms: int = 2000
    """Per attempt: server selection and connect timeout."""
    store_retries: int = 3
    """Attempts for each store call; an unreachable server fails in ~7 s by default."""

    chunk_rows: int = Field(default=CHUNK_ROWS, ge=1)
    batch_size: int = 5_000
    max_rejected_share: float = Field(default=MAX_REJECTED_SHARE, ge=0.0, le=1.0)
    lock_lease: float = Field(default=LOCK_LEASE, gt=0.0)
    """Seconds an ETL's lease on its dataset lasts without a heartbeat (a dead run's is
    taken over after this)."""
    lock_wait: float = Field(default=0.0, ge=0.0)
    """Seconds an ETL waits for another run of the same dataset to finish (0: stop at once)."""

    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "MLCYCLE_MLFLOW_TRACKING_URI"),
    )
    # MLflow's own client variables, read here for the parts that talk to the tracking
    # server without MLflow's client (serving, `mlflow-users`)
    mlflow_tracking_username: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_USERNAME")
    )
    mlflow_tracking_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_PASSWORD")
    )
    mlflow_tracking_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_TOKEN")
    )
    mlflow_tracking_insecure_tls: bool = Field(
        default=False, validation_alias=AliasChoices("MLFLOW_TRACKING_INSECURE_TLS")
    )
    mlflow_tracking_server_cert_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_SERVER_CERT_PATH")
    )
    mlflow_train_user: str = "mlcycle-train"
    """The training user `mlcycle mlflow-users` makes (MLCYCLE_MLFLOW_TRAIN_USER)."""
    mlflow_train_password: SecretStr | None = None
    mlflow_read_user: str = "mlcycle-read"
    """The read-only user of serving and monitoring (MLCYCLE_MLFLOW_READ_USER)."""
    mlflow_read_password: SecretStr | None = None
    git_commit: str | None = None
    """The commit a training run records (MLCYCLE_GIT_COMMIT; unset: `git rev-parse HEAD`)."""

    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    serve_workers: int = 1
    model_alias: str = "champion"
    shadow_alias: str = "challenger"
    """The alias the server scores in shadow beside the served one, off the request path,
    its predictions logged (never answered); empty: no shadow (MLCYCLE_SHADOW_ALIAS)."""
    shadow_queue: int = Field(default=256, ge=1)
    """Requests waiting for the shadow at most; past it they are not shadowed (counted)."""
    wait_for_model: bool = False
    """`serve` starts without a model and answers 503 until one is promoted (containers);
    off, it refuses to start and says to run `mlcycle train`."""
    reload_interval: float = Field(default=10.0, ge=0.0)
    """Seconds between checks of the model alias; 0 turns polling off."""
    max_batch: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    body_timeout: float = Field(default=30.0, gt=0.0)
    """Seconds a request body has to arrive in full (408 past it): slow senders do not
    hold connections and memory for minutes."""
    max_inflight_body_bytes: int = Field(default=128 * 1024 * 1024, ge=1024)
    """Bytes of request bodies one server process holds at once, over all connections
    (503 with Retry-After past it)."""
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
    part_bytes: int = Field(default=PART_BYTES, ge=1024)
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
    debug: bool = False
    """An unexpected error shows its traceback (MLCYCLE_DEBUG=1)."""

    _uri_secrets: list[str] = PrivateAttr(default_factory=list)
    _project: Project | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _in_project(self) -> Settings:
        """The project at or above the working folder; relative data folders are its."""
        self._project = find_project()
        if self._project is not None:
            root = self._project.root
            if not self.data_dir.is_absolute():
                self.data_dir = root / self.data_dir
            if self.raw_dir is not None and not self.raw_dir.is_absolute():
                self.raw_dir = root / self.raw_dir
        return self

    @property
    def project(self) -> Project | None:
        return self._project

    @property
    def spec_choice(self) -> Chosen:
        return choose_spec(self.spec, self.dataset, self._project)

    def train_config_choice(self, spec: Path | None = None) -> Chosen:
        return choose_train_config(self.train_config, spec or self.spec_path, self._project)

    @model_validator(mode="after")
    def _tracking_credentials(self) -> Settings:
        """Credentials written into MLFLOW_TRACKING_URI (`http://user:pw@host`) are taken
        out of the URI (urllib cannot connect to such a host, and the URI is printed) and
        used as MLflow's own clients take them: MLFLOW_TRACKING_USERNAME/PASSWORD, unless
        those are set already."""
        uri = self.mlflow_tracking_uri
        if not uri or not uri.startswith(("http://", "https://")):
            return self
        scheme, _, rest = uri.partition("://")
        authority_end = len(rest)
        at = rest.rfind("@")
        if at < 0:
            return self
        slash = rest.find("/", at)
        if slash >= 0:
            authority_end = slash
        user, _, password = rest[:at].partition(":")
        self.mlflow_tracking_uri = (
            f"{scheme}://{rest[at + 1 : authority_end]}{rest[authority_end:]}"
        )
        if not self.mlflow_tracking_username:
            self.mlflow_tracking_username = unquote(user)
            self.mlflow_tracking_password = SecretStr(unquote(password))
            # MLflow's client (training, the registry) reads its own variables
            os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user)
            os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
        self._uri_secrets = [password, unquote(password)]
        return self

    def secrets(self) -> tuple[str, ...]:
        """Every secret this process knows (passwords in URIs, the Kafka SASL password,
        MLflow's): output is scrubbed of them (`redact_text`), whatever its shape."""
        found: list[str] = []
        for uri in (
            self.mongo_uri.get_secret_value() if self.mongo_uri else "",
            self.mlflow_tracking_uri or "",
        ):
            found.extend(uri_secrets(uri))
        found.extend(self._uri_secrets)
        found.extend(
            secret.get_secret_value()
            for secret in (
                self.kafka_sasl_password,
                self.mlflow_tracking_password,
                self.mlflow_tracking_token,
                self.mlflow_train_password,
                self.mlflow_read_password,
            )
            if secret is not None
        )
        # longest first, so a secret holding another is replaced whole
        return tuple(sorted({s for s in found if len(s) >= 3}, key=len, reverse=True))

    @property
    def spec_path(self) -> Path:
        return self.spec_choice.path

    @property
    def train_config_path(self) -> Path:
        return self.train_config_choice().path

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


_URI_START = re.compile(r"[A-Za-z][A-Za-z0-9+._-]*://")


def redact_uri(uri: str) -> str:
    """The URI with the credentials of its authority hidden: `user:***@host` (the user
    name kept when it is plain), `***@host` for a bare token. Parsed by position, not by
    a pattern of allowed characters: the user information ends at the last `@` of the
    URI, so a password holding `/`, `@`, `:` or `?` (unescaped, as people write them) is
    hidden whole. A URI whose query holds an `@` loses a little more than its password,
    never less."""
    match = _URI_START.match(uri)
    start = match.end() if match else 0
    at = uri.rfind("@", start)
    if at < 0:
        return uri
    user, sep, _secret = uri[start:at].partition(":")
    shown = f"{user}:***" if sep and user and not re.search(r"[/?#\s]", user) else "***"
    return uri[:start] + shown + uri[at:]


def uri_secrets(uri: str) -> list[str]:
    """The password of a URI's user information, as written and percent-decoded."""
    match = _URI_START.match(uri)
    start = match.end() if match else 0
    at = uri.rfind("@", start)
    if at < 0:
        return []
    _user, sep, secret = uri[start:at].partition(":")
    secret = secret if sep else uri[start:at]
    return [secret, unquote(secret)] if secret else []


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with the credentials of every URI in it hidden (see `redact_uri`; a URI
    runs to the next whitespace or quote) and every one of `secrets` replaced by ***."""
    out: list[str] = []
    pos = 0
    for match in _URI_START.finditer(text):
        if match.start() < pos:
            continue
        end = match.end()
        while end < len(text) and not text[end].isspace() and text[end] not in "'\"<>`":
            end += 1
        out.append(text[pos : match.start()])
        out.append(redact_uri(text[match.start() : end]))
        pos = end
    out.append(text[pos:])
    result = "".join(out)
    for secret in secrets:
        if secret:
            result = result.replace(secret, "***")
    return result


def fail_fast_mlflow() -> None:
    """MLflow's own HTTP client (serving's embedded-store path): one retry and a 10 s
    timeout, unless the environment sets them, instead of its minutes-long schedule."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def quiet_mlflow(level: str) -> None:
    """MLflow's own INFO lines ("Validating input example ...") are not a command's
    output: its loggers at WARNING unless mlcycle logs at DEBUG or the environment sets
    MLFLOW_LOGGING_LEVEL (read when MLflow is first imported)."""
    if level.upper() != "DEBUG":
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def hand_down(spec: Path | None, dataset: str | None) -> None:
    """A command's --spec / --dataset as the environment they stand for, for code that
    reads the settings afresh (uvicorn's app factory, in this process or in each worker)."""
    if spec is not None:
        os.environ["MLCYCLE_SPEC"] = str(spec.resolve())
    if dataset is not None:
        os.environ["MLCYCLE_DATASET"] = dataset
    get_settings.cache_clear()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` to re-read. The
    `.env` read is the project's (at or above the working folder), else the working
    folder's."""
    project = find_project()
    env = project.root / ".env" if project is not None else Path(".env")
    return Settings(_env_file=env)  # type: ignore[call-arg]
