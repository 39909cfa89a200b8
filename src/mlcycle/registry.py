"""MLflow plumbing: connecting, the experiment, and the `champion` alias (promote, rollback)."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from mlcycle.config import Settings, redact_uri
from mlcycle.errors import (
    MlcycleError,
    ModelNotFound,
    RegistryAccessDenied,
    TrackingUnavailable,
    Unservable,
)

logger = logging.getLogger(__name__)

CHAMPION = "champion"
TAG = "mlcycle."


def connect(settings: Settings, retries: int = 3, create: bool = True) -> Any:
    """Point MLflow at the configured tracking store and return an MlflowClient.

    A tracking server is probed first (bounded retries with backoff), so an unreachable
    server fails fast with a clear message instead of hanging inside MLflow's own retries.
    With `create=False` (serving, doctor) an embedded tracking store that does not exist
    yet is an error instead of a new empty one.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        probe(uri, retries)
    elif uri.startswith("sqlite:///") and not create:
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise TrackingUnavailable(
                f"no embedded tracking store at {path}: run `mlcycle train` first"
            )
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def probe(uri: str, retries: int = 3) -> None:
    def once() -> None:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}")

    try:
        Retrying(
            stop=stop_after_attempt(max(1, retries)),
            wait=wait_exponential(multiplier=0.3, max=3),
            retry=retry_if_exception_type((OSError, urllib.error.URLError)),
            reraise=True,
        )(once)
    except (OSError, urllib.error.URLError) as err:
        raise TrackingUnavailable(
            f"MLflow tracking server {redact_uri(uri)} is unreachable ({err}). Start it, or "
            "unset MLFLOW_TRACKING_URI to use the embedded tracking store."
        ) from err


def ensure_experiment(client: Any, name: str, settings: Settings) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if not settings.tracking_uri.startswith(("http://", "https://")):
        root = settings.artifact_root
        root.mkdir(parents=True, exist_ok=True)
        location = Path(root).as_uri()
    return str(client.create_experiment(name, artifact_location=location))


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]


def get_version(
    client: Any, name: str, version: str | None = None, alias: str | None = None
) -> VersionInfo:
    from mlflow.exceptions import MlflowException

    try:
        if alias is not None:
            mv = client.get_model_version_by_alias(name, alias)
        else:
            mv = client.get_model_version(name, str(version))
    except MlflowException as err:
        if (denied := access_denied(err, f"read registered model {name!r}")) is not None:
            raise denied from err
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise ModelNotFound(f"registered model {name!r} has no {what}") from err
    metrics = dict(client.get_run(mv.run_id).data.metrics) if mv.run_id else {}
    return VersionInfo(name, str(mv.version), str(mv.run_id), dict(mv.tags or {}), metrics)


def model_exists(client: Any, name: str) -> bool:
    """Whether the registered model exists (and the user may see it). Asked first because
    a tracking server with authentication answers a missing model with 403, like a
    forbidden one."""
    quoted = name.replace("\\", "\\\\").replace("'", "\\'")
    found = client.search_registered_models(filter_string=f"name = '{quoted}'", max_results=1)
    return any(m.name == name for m in found)


def champion(client: Any, name: str) -> VersionInfo | None:
    if not model_exists(client, name):
        return None
    try:
        return get_version(client, name, alias=CHAMPION)
    except ModelNotFound:
        return None


CONTRACT_TAG = TAG + "contract_hash"
RUNTIME_TAG = TAG + "serving_runtime"


def contract_change(candidate: VersionInfo, current: VersionInfo | None) -> str | None:
    """How the candidate's feature contract (spec, features, labels) differs from the
    champion's, or None when it is the same (or there is no champion)."""
    if current is None:
        return None
    mine, theirs = candidate.tags.get(CONTRACT_TAG), current.tags.get(CONTRACT_TAG)
    if mine and mine == theirs:
        return None
    if not theirs:
        return f"champion v{current.version} records no contract"
    return f"contract {mine and mine[:12]} vs champion v{current.version}'s {theirs[:12]}"


def promotion_check(target: VersionInfo, current: VersionInfo | None, gate: Any) -> Any:
    """The gate on logged metrics, for `mlcycle promote`."""
    from mlcycle.gate import should_promote

    metric = str(gate.metric)
    cand = {metric: target.metrics.get(f"test_{metric}", float("nan"))}
    base = {metric: target.metrics.get(f"baseline_{metric}", float("-inf"))}
    champ = (
        {metric: current.metrics[f"test_{metric}"]}
        if current is not None and f"test_{metric}" in current.metrics
        else None
    )
    runtime = target.tags.get(RUNTIME_TAG)
    return should_promote(
        cand,
        base,
        champ,
        gate,
        contract_change=contract_change(target, current),
        runtime_problem=None if runtime == "onnx" else f"runtime {runtime or 'unknown'}",
    )


def access_denied(err: Exception, what: str) -> MlcycleError | None:
    """MLflow's 401/403 (a tracking server with authentication) as a clear error."""
    code = str(getattr(err, "error_code", ""))
    text = str(err)
    if "error code 403" in text or "Permission denied" in text:
        code = "PERMISSION_DENIED"  # some routes answer a plain-text 403
    elif "error code 401" in text:
        code = "UNAUTHENTICATED"
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return RegistryAccessDenied(
            f"the MLflow tracking server refused to {what} ({code}): the user in "
            "MLFLOW_TRACKING_USERNAME lacks the right (serving and monitoring use a "
            "read-only user; training and promotion use the training user)"
        )
    return None


@contextmanager
def refused_as_error(what: str) -> Iterator[None]:
    """MLflow calls inside: a 401/403 from the tracking server becomes RegistryAccessDenied."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        if (denied := access_denied(err, what)) is not None:
            raise denied from err
        raise


def ensure_users(tracking_uri: str, users: dict[str, str]) -> list[tuple[str, str]]:
    """Create MLflow users (name -> password) on a server running the basic-auth app, or
    reset the password of those that exist; the caller's MLFLOW_TRACKING_USERNAME /
    MLFLOW_TRACKING_PASSWORD must be an admin's. Returns (user, "created"|"updated")."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    client = get_app_client("basic-auth", tracking_uri=tracking_uri)
    done = []
    for name, password in users.items():
        try:
            client.create_user(name, password)
            done.append((name, "created"))
        except MlflowException as err:
            if (denied := access_denied(err, "manage users")) is not None:
                raise denied from err
            if "exist" not in str(err).lower() and "taken" not in str(err).lower():
                raise
            client.update_user_password(name, password)
            done.append((name, "updated"))
    return done


def unservable(client: Any, name: str, version: str) -> str | None:
    """Why the serving runtime could never load `version` (its run has no serving bundle
    with an ONNX graph), or None when it can."""
    import tempfile

    from mlflow.exceptions import MlflowException

    from mlcycle.bundle import FOLDER, GRAPH_FILE, META_FILE, read_meta

    info = get_version(client, name, version=version)
    meta_path = f"{FOLDER}/{META_FILE}"
    try:
        files = {a.path for a in client.list_artifacts(info.run_id, FOLDER)}
        if meta_path not in files:
            return f"v{version}'s run has no serving bundle ({meta_path})"
        with tempfile.TemporaryDirectory() as tmp:
            meta = read_meta(Path(client.download_artifacts(info.run_id, meta_path, tmp)))
    except (MlflowException, OSError, ValueError) as err:
        return f"v{version}'s serving bundle cannot be read: {str(err)[:200]}"
    problem = meta.servable_problem(f"{FOLDER}/{GRAPH_FILE}" in files)
    if problem is not None:
        return f"v{version}'s {problem.removeprefix('its ')}: the serving runtime serves ONNX only"
    return None


def set_champion(
    client: Any,
    name: str,
    version: str,
    previous: str | None,
    forced_reason: str | None = None,
) -> None:
    """Point `champion` at `version`, remembering the previous champion for rollback and,
    for a promotion that overrode the gate, why. A version the serving runtime cannot
    load is never made champion, forced or not (so rollback history holds only
    versions that were served)."""
    if (why := unservable(client, name, version)) is not None:
        raise Unservable(f"{name} v{version} cannot be made champion: {why}")
    with refused_as_error(f"promote {name} v{version}"):
        if previous:
            client.set_model_version_tag(name, version, TAG + "previous_champion", previous)
        if forced_reason:
            client.set_model_version_tag(name, version, TAG + "forced_reason", forced_reason[:4000])
            client.update_model_version(
                name, version, description=f"promoted by hand over the gate: {forced_reason}"[:4000]
            )
        client.set_registered_model_alias(name, CHAMPION, version)
    logger.info("%s: alias %s -> version %s (was %s)", name, CHAMPION, version, previous)


def rollback(client: Any, name: str) -> tuple[str, str]:
    """Move `champion` back to the version it replaced; returns (from, to)."""
    current = champion(client, name)
    if current is None:
        raise ModelNotFound(f"registered model {name!r} has no champion to roll back")
    previous = current.tags.get(TAG + "previous_champion") or ""
    if not previous:
        raise ModelNotFound(
            f"{name} version {current.version} is the first champion: there is nothing to roll back to"
        )
    seen = {current.version}
    while (why := unservable(client, name, previous)) is not None:  # never onto one
        logger.warning("skipping %s v%s on the way back: %s", name, previous, why)
        seen.add(previous)
        earlier = get_version(client, name, version=previous).tags.get(TAG + "previous_champion")
        if not earlier or earlier in seen:
            raise ModelNotFound(f"{name}: no earlier champion the serving runtime can load ({why})")
        previous = earlier
    with refused_as_error(f"roll {name} back to v{previous}"):
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_model_version_tag(name, current.version, TAG + "rolled_back", "true")
    return current.version, previous
