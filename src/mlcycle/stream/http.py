"""`/health` and `/metrics` of `mlcycle stream`, on a small threaded HTTP server."""

from __future__ import annotations

import errno
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlcycle.errors import BadInput
from mlcycle.stream.metrics import StreamMetrics

logger = logging.getLogger(__name__)


def serve_health(metrics: StreamMetrics, host: str, port: int) -> ThreadingHTTPServer:
    """Start serving in a daemon thread; `.server_address` has the bound port."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "mlcycle-stream"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path in ("/health", "/healthz"):
                ok, body = metrics.health()
                self._send(200 if ok else 503, orjson.dumps(body), "application/json")
            else:
                self._send(404, b'{"detail":"not found"}', "application/json")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("http: " + format, *args)

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise BadInput(
                f"port {port} on {host} is taken (another `mlcycle stream`?): pass "
                "--http-port N for another one, or --http-port 0 for none"
            ) from err
        raise BadInput(f"cannot serve /health on {host}:{port}: {err.strerror}") from err
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="stream-http", daemon=True).start()
    return server


__all__ = ["serve_health"]
