"""What serving needs from an MLflow tracking server, over its REST API and the standard
library: the version behind an alias, and a run's artifact files. The serving install
then carries no MLflow client (mlflow-skinny and its ~90 MB of dependencies).

Authentication as MLflow's clients do it: `MLFLOW_TRACKING_USERNAME` and
`MLFLOW_TRACKING_PASSWORD` (basic), or `MLFLOW_TRACKING_TOKEN` (bearer);
`MLFLOW_TRACKING_INSECURE_TLS` and `MLFLOW_TRACKING_SERVER_CERT_PATH` for TLS.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlcycle.config import Settings, redact_uri
from mlcycle.errors import ModelNotFound, RegistryAccessDenied, TrackingUnavailable


@dataclass(frozen=True)
class AliasTarget:
    name: str
    version: str
    run_id: str


class RestTracking:
    """The tracking server of `settings` (its URI, credentials and TLS options)."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self.uri = settings.tracking_uri.rstrip("/")
        self.timeout = timeout
        self._context = _tls_context(settings)
        self._authorization = _authorization(settings)

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json"}
        if self._authorization:
            headers["authorization"] = self._authorization
        return headers

    def _get(self, path: str, params: dict[str, str]) -> bytes:
        url = f"{self.uri}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers=self._headers())
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=self._context
            ) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as err:
            body = err.read()[:2000].decode("utf-8", "replace")
            if err.code in (401, 403):
                raise RegistryAccessDenied(
                    f"the MLflow tracking server refused to read {path} ({err.code}): the "
                    "user in MLFLOW_TRACKING_USERNAME lacks the right"
                ) from err
            if err.code == 404 or "RESOURCE_DOES_NOT_EXIST" in body:
                raise ModelNotFound(f"{path}: {_message(body)}") from err
            raise TrackingUnavailable(
                f"tracking server {redact_uri(self.uri)} answered {err.code}: {_message(body)}"
            ) from err
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            raise TrackingUnavailable(
                f"tracking server {redact_uri(self.uri)} is unreachable: "
                f"{getattr(err, 'reason', err)}"
            ) from err

    def _json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._get(path, params) or b"{}")
        return data

    def alias(self, name: str, alias: str) -> AliasTarget:
        """The version `models:/<name>@<alias>` points at."""
        found = self._json(
            "/api/2.0/mlflow/registered-models/alias", {"name": name, "alias": alias}
        ).get("model_version")
        if not found:
            raise ModelNotFound(f"{name}@{alias}: no such alias")
        return AliasTarget(name, str(found["version"]), str(found["run_id"]))

    def download(self, run_id: str, path: str, dst: Path) -> Path:
        """A run's artifact folder `path`, its files written under `dst/<path>`."""
        listing = self._json("/api/2.0/mlflow/artifacts/list", {"run_id": run_id, "path": path})
        root = dst / path
        root.mkdir(parents=True, exist_ok=True)
        for item in listing.get("files", []):
            rel = str(item["path"])
            if item.get("is_dir"):
                self.download(run_id, rel, dst)
                continue
            target = (dst / rel).resolve()
            if not target.is_relative_to(dst.resolve()):  # a hostile listing
                raise TrackingUnavailable(f"artifact path {rel!r} leaves the download folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self._get("/get-artifact", {"path": rel, "run_uuid": run_id}))
        return root


def _message(body: str) -> str:
    try:
        return str(json.loads(body).get("message", body))[:300]
    except (ValueError, AttributeError):
        return body[:300]


def _authorization(settings: Settings) -> str | None:
    """Basic with a user name (and its password), else bearer with a token, else none."""
    if settings.mlflow_tracking_username:
        password = settings.mlflow_tracking_password
        secret = f"{settings.mlflow_tracking_username}:"
        secret += password.get_secret_value() if password else ""
        return "Basic " + base64.b64encode(secret.encode()).decode()
    if settings.mlflow_tracking_token:
        return f"Bearer {settings.mlflow_tracking_token.get_secret_value()}"
    return None


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.mlflow_tracking_insecure_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    cert = settings.mlflow_tracking_server_cert_path
    return ssl.create_default_context(cafile=str(cert)) if cert else None
