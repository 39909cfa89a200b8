"""Starting the API: is there a model to serve, and uvicorn with production limits."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from mlcycle.config import Settings
from mlcycle.errors import MlcycleError

logger = logging.getLogger(__name__)

HEADER_LIMIT = 16 * 1024
"""Largest request head (request line + headers) accepted, as a reverse proxy would."""
KEEP_ALIVE_SECONDS = 5
"""Idle keep-alive connections are closed after this many seconds."""


def serving_model(settings: Settings) -> str | None:
    """'name vN' for the champion the server would load (or its cached copy), else None.
    Reads only: it never creates a tracking store."""
    from mlcycle import registry
    from mlcycle.spec import load_spec

    name = load_spec(settings.spec_path).registered_model
    try:
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


def uvicorn_config(settings: Settings, host: str, port: int, workers: int) -> Any:
    import uvicorn

    return uvicorn.Config(
        "mlcycle.serve.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        http="h11",
        h11_max_incomplete_event_size=HEADER_LIMIT,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=10,
    )


def run_server(
    settings: Settings, host: str, port: int, workers: int, announce: Callable[[], None]
) -> int:
    """Run uvicorn until stopped; `announce` is called once the socket is listening.
    Returns the process exit code."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn_config(settings, host, port, workers)

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
