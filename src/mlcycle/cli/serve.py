"""`serve`: the champion model over HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from mlcycle.cli.base import DatasetOpt, SpecOpt, app, chosen, console, settings, stage
from mlcycle.config import hand_down
from mlcycle.errors import BadInput


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
    dataset: DatasetOpt = None,
) -> None:
    """Serve the champion model over HTTP: POST /predict, /docs, /metrics.

    Without a model it stops and says to run `mlcycle train`, unless
    MLCYCLE_WAIT_FOR_MODEL=true (then /health/ready answers 503 until one is promoted).

    Example: mlcycle serve --port 8000
    """
    from mlcycle.serve.runner import run_server, serving_model

    config = chosen(settings(), spec_path, dataset)
    hand_down(spec_path, dataset)
    bind_host = host or config.serve_host
    bind_port = port or config.serve_port
    with stage():
        port_free(bind_host, bind_port)
        found = serving_model(config)
        if found is None and not config.wait_for_model:
            raise BadInput(
                "no model to serve yet: run `mlcycle train` first (or set "
                "MLCYCLE_WAIT_FOR_MODEL=true to start and wait for one)"
            )

    def announce() -> None:
        console.print(
            f"serving {found or 'no model yet'} on http://{bind_host}:{bind_port} (docs at /docs)",
            highlight=False,
        )

    code = run_server(bind_host, bind_port, workers or config.serve_workers, announce)
    if code:
        raise typer.Exit(code)


def port_free(host: str, port: int) -> None:
    """Refuse, in one line, an address another process listens on (uvicorn would log
    `[Errno 98]` and exit 3). Bound the way uvicorn binds (SO_REUSEADDR), then released."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise BadInput(
                f"cannot listen on {host}:{port}: {err.strerror or err} "
                "(another server runs there?): choose another with --port or MLCYCLE_SERVE_PORT"
            ) from err
