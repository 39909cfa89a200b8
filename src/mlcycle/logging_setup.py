"""Logging configured once, at the entry point: readable text or JSON lines."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson

from mlcycle.config import redact_text

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any `extra=` fields kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


class _Redacting(logging.Formatter):
    """Formats with `inner`, then hides every URI's credentials and every known secret
    in the whole line (message, arguments and traceback alike)."""

    def __init__(self, inner: logging.Formatter, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(self.inner.format(record), self.secrets)


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever `sys.stderr` is at the time of the record, so a replaced or
    captured stderr (test runners, embedding) never leaves the handler on a closed file."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(
    level: str = "INFO", fmt: str = "text", secrets: tuple[str, ...] = ()
) -> None:
    """Install one stderr handler on the root logger (replacing earlier ones); no URI
    credentials and none of `secrets` reach it."""
    handler = _StderrHandler()
    inner = (
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    handler.setFormatter(_Redacting(inner, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymongo", "urllib3", "alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Libraries' warnings (MLflow's "add type hints", sklearn's, ...) are the log's, at
    # debug level (MLCYCLE_LOG_LEVEL=DEBUG shows them), never lines of a command's output
    logging.captureWarnings(True)
    warned = logging.getLogger("py.warnings")
    warned.filters[:] = [_demoted]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _demoted(record: logging.LogRecord) -> bool:
    """A captured library warning as a debug record, without terminal colour codes."""
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    record.msg = _ANSI.sub("", record.getMessage())
    record.args = None
    return logging.getLogger().isEnabledFor(logging.DEBUG)


@contextmanager
def step(logger: logging.Logger, what: str) -> Iterator[None]:
    """A long step as two log lines: what it is doing when it starts, and its duration
    when it ends (or that it failed, after how long). `--quiet` hides both."""
    logger.info("%s ...", what)
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        logger.info("%s: stopped after %.1f s", what, time.perf_counter() - started)
        raise
    logger.info("%s: done in %.1f s", what, time.perf_counter() - started)
