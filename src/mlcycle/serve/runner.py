"""Starting the API: is there a model to serve, and uvicorn with production limits."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from mlcycle.config import Settings
from mlcycle.errors import MlcycleError

logger = logging.getLogger(__name__)

HEADER_LIMIT = 16 * 1024
"""Largest request head (request line + headers) accepted, as a reverse proxy would."""
KEEP_ALIVE_SECONDS = 5
"""Idle keep-alive connections are closed after this many seconds."""
HEAD_TIMEOUT_SECONDS = 10.0
"""A request head must arrive whole within this many seconds (slow or silent clients)."""


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the limits a reverse proxy would set: a request head of
    at most HEADER_LIMIT bytes (h11's own bound; a larger one gets 400 at once) that must
    arrive within HEAD_TIMEOUT_SECONDS, so a silent or trickling connection is closed
    instead of held forever. A head over the limit gets 431 before it is parsed. At module
    level, so `--workers N` can hand it to its worker processes."""

    _head_timer: Any = None
    _head_bytes = 0
    _waiting_since: float | None = None
    """When the connection started waiting for a request head (None: not waiting)."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # still reading a request head
            end = data.find(b"\r\n\r\n")
            head = self._head_bytes + (len(data) if end < 0 else end + 4)
            if head > HEADER_LIMIT:
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                    b"content-length: 0\r\nconnection: close\r\n\r\n"
                )
                self.transport.close()
                return
            self._head_bytes = head if end < 0 else 0
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Note when the connection starts waiting for a head. One timer a connection,
        re-armed only when it fires: no timer is made and cancelled per request."""
        if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            if self._waiting_since is None:
                self._waiting_since = self.loop.time()
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._expire)
        else:
            self._waiting_since = None

    def _expire(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        since = self._waiting_since
        if since is None:  # busy with a request: look again a full period later
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._expire)
            return
        left = since + HEAD_TIMEOUT_SECONDS - self.loop.time()
        if left <= 0 and self.conn.their_state is h11.IDLE:
            self.transport.close()
        else:
            self._head_timer = self.loop.call_later(max(left, 0.05), self._expire)


def guarded_protocol() -> type:
    return GuardedH11Protocol


def serving_model(settings: Settings) -> str | None:
    """'name vN' for the champion the server would load (or its cached copy), else None.
    Reads only: it never creates a tracking store."""
    from mlcycle.spec import load_spec

    name = load_spec(settings.spec_path).registered_model
    try:
        if settings.tracking_uri.startswith(("http://", "https://")):
            from mlcycle.tracking_http import RestTracking

            target = RestTracking(settings).alias(name, settings.model_alias)
            return f"{name} v{target.version}"
        from mlcycle import registry

        client = registry.connect(settings, retries=1, create=False)
        current = registry.champion(client, name)
        if current is not None:
            return f"{name} v{current.version}"
    except MlcycleError as err:
        logger.debug("%s", err)
    pointer = settings.serving_cache / name / "last_good.json"
    if pointer.is_file():
        try:
            return f"{name} v{json.loads(pointer.read_text())['version']} (cached)"
        except (ValueError, KeyError, OSError):
            return None
    return None


def uvicorn_config(host: str, port: int, workers: int) -> Any:
    import uvicorn

    return uvicorn.Config(
        "mlcycle.serve.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        http=guarded_protocol(),
        h11_max_incomplete_event_size=HEADER_LIMIT,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=10,
    )


def run_server(host: str, port: int, workers: int, announce: Callable[[], None]) -> int:
    """Run uvicorn until stopped; `announce` is called once the socket is listening.
    Returns the process exit code."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn_config(host, port, workers)

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and workers == 1:
                announce()

    if workers == 1:
        server = _Server(config)
        server.run()
        return 0 if server.started else 1
    try:
        sock = config.bind_socket()
    except SystemExit:
        return 1
    announce()
    Multiprocess(config, sockets=[sock]).run()
    return 0
