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
    UnknownVersion,
    Unservable,
)

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
"""Scored in shadow beside the champion by the server; never answers a request."""
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
        if alias is not None:
            raise ModelNotFound(f"registered model {name!r} has no alias {alias!r}") from err
        raise UnknownVersion(f"registered model {name!r} has no version {version}") from err
    metrics = dict(client.get_run(mv.run_id).data.metrics) if mv.run_id else {}
    return VersionInfo(name, str(mv.version), str(mv.run_id), dict(mv.tags or {}), metrics)


def model_exists(client: Any, name: str) -> bool:
    """Whether the registered model exists (and the user may see it). Asked first because
    a tracking server with authentication answers a missing model with 403, like a
    forbidden one."""
    found = client.search_registered_models(filter_string=name_filter(name), max_results=1)
    return any(m.name == name for m in found)


def name_filter(name: str) -> str:
    """An MLflow search filter for exactly this model name."""
    quoted = name.replace("\\", "\\\\").replace("'", "\\'")
    return f"name = '{quoted}'"


def champion(client: Any, name: str) -> VersionInfo | None:
    return holder(client, name, CHAMPION)


def holder(client: Any, name: str, alias: str) -> VersionInfo | None:
    """The version `alias` points at, None when the alias (or the model) does not exist."""
    if not model_exists(client, name):
        return None
    try:
        return get_version(client, name, alias=alias)
    except ModelNotFound:
        return None


def retire_challenger(client: Any, name: str, version: str, by: str) -> None:
    """Drop the `challenger` alias when its version has just become the champion (a
    version is never both), recording why."""
    current = holder(client, name, CHALLENGER)
    if current is not None and current.version == version:
        drop_alias(client, name, CHALLENGER, by, f"v{version} became the champion")


def drop_alias(
    client: Any,
    name: str,
    alias: str,
    by: str,
    reason: str,
    evaluation: dict[str, Any] | None = None,
) -> None:
    """Remove `alias` (never the champion) with the decision recorded."""
    from mlcycle import decisions

    if alias == CHAMPION:
        raise ValueError("the champion alias is moved, never dropped")
    current = holder(client, name, alias)
    if current is None:
        return
    with refused_as_error(f"remove the {alias} alias of {name!r}"):
        client.delete_registered_model_alias(name, alias)
        decisions.record(
            client,
            name,
            decisions.Event(
                action="drop",
                alias=alias,
                before=current.version,
                after=None,
                candidate=current.version,
                by=by,
                reason=reason,
                evaluation=evaluation,
            ),
        )
    logger.info("%s: alias %s removed (was v%s): %s", name, alias, current.version, reason)


CONTRACT_TAG = TAG + "contract_hash"
RUNTIME_TAG = TAG + "serving_runtime"


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
    event: Any = None,
    alias: str = CHAMPION,
) -> None:
    """Point `alias` (the champion unless said) at `version`, remembering the previous
    champion for rollback and, for a promotion that overrode the gate, why; `event` (a
    `decisions.Event`) is appended to the decision record. A version the serving runtime
    cannot load is never made champion or challenger, forced or not (so the history holds
    only versions that can be served)."""
    from mlcycle import decisions

    logger.info("checking that %s v%s can be served", name, version)
    if (why := unservable(client, name, version)) is not None:
        raise Unservable(f"{name} v{version} cannot be made {alias}: {why}")
    with refused_as_error(f"promote {name} v{version}"):
        if previous and alias == CHAMPION:
            client.set_model_version_tag(name, version, TAG + "previous_champion", previous)
        if forced_reason:
            client.set_model_version_tag(name, version, TAG + "forced_reason", forced_reason[:4000])
            client.update_model_version(
                name, version, description=f"promoted by hand over the gate: {forced_reason}"[:4000]
            )
        client.set_registered_model_alias(name, alias, version)
        if event is not None:
            decisions.record(client, name, event)
    logger.info("%s: alias %s -> version %s (was %s)", name, alias, version, previous)


def previous_champion(client: Any, name: str, current: VersionInfo) -> str | None:
    """The champion before `current`: from the decision record (`served_stack`), else
    (a registry from before the record) the version's own tag."""
    from mlcycle import decisions

    stack = decisions.served_stack(decisions.history(client, name))
    if len(stack) > 1 and stack[-1] == current.version:
        return stack[-2]
    return current.tags.get(TAG + "previous_champion") or None


def rollback(
    client: Any,
    name: str,
    to: str | None = None,
    reason: str | None = None,
    by: str = "rollback",
    evaluation: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Move `champion` back to the version it replaced (or to version `to`, which must be
    servable), recording the change; returns (from, to)."""
    from mlcycle import decisions

    current = champion(client, name)
    if current is None:
        raise ModelNotFound(f"registered model {name!r} has no champion to roll back")
    if to is not None:
        get_version(client, name, version=to)  # ModelNotFound names it
        if to == current.version:
            raise ModelNotFound(f"{name} v{to} is already the champion")
        if (why := unservable(client, name, to)) is not None:
            raise Unservable(f"{name} v{to} cannot be made champion: {why}")
        target = to
    else:
        target = servable_predecessor(client, name, current)
    event = decisions.Event(
        action="rollback",
        before=current.version,
        after=target,
        by=by,
        reason=reason or ("rolled back by hand" if to is None else f"rolled back by hand to v{to}"),
        evaluation=evaluation,
    )
    with refused_as_error(f"roll {name} back to v{target}"):
        client.set_registered_model_alias(name, CHAMPION, target)
        client.set_model_version_tag(name, current.version, TAG + "rolled_back", "true")
        decisions.record(client, name, event)
    return current.version, target


def servable_predecessor(client: Any, name: str, current: VersionInfo) -> str:
    previous = previous_champion(client, name, current)
    if not previous:
        raise ModelNotFound(
            f"{name} version {current.version} is the first champion: there is nothing to "
            "roll back to (name one with --to N)"
        )
    seen = {current.version}
    logger.info("checking that %s v%s can be served", name, previous)
    while (why := unservable(client, name, previous)) is not None:  # never onto one
        logger.warning("skipping %s v%s on the way back: %s", name, previous, why)
        seen.add(previous)
        earlier = get_version(client, name, version=previous).tags.get(TAG + "previous_champion")
        if not earlier or earlier in seen:
            raise ModelNotFound(f"{name}: no earlier champion the serving runtime can load ({why})")
        previous = earlier
    return previous


@dataclass(frozen=True)
class VersionRow:
    """One line of `mlcycle models`."""

    version: str
    created: str
    run_id: str
    data_hash: str | None
    rows: int | None
    metrics: dict[str, float]
    gate: str | None
    reason: str | None
    aliases: list[str]
    servable: bool | None
    """From the version's recorded serving runtime (None: not recorded)."""
    eval_rows: int | None
    eval_hash: str | None


def versions(client: Any, name: str) -> list[VersionRow]:
    """Every version of `name`, oldest first, with its lineage, metrics and verdict."""
    from datetime import UTC, datetime

    if not model_exists(client, name):
        raise ModelNotFound(f"no registered model {name!r}: run `mlcycle train` first")
    rows = []
    with refused_as_error(f"list the versions of {name!r}"):
        found = client.search_model_versions(name_filter(name))
        aliases: dict[str, list[str]] = {}
        for alias, version in (client.get_registered_model(name).aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for mv in sorted(found, key=lambda m: int(m.version)):
            tags = dict(mv.tags or {})
            metrics = dict(client.get_run(mv.run_id).data.metrics) if mv.run_id else {}
            runtime = tags.get(RUNTIME_TAG)
            count = tags.get(TAG + "row_count")
            evaluated = tags.get(TAG + "eval_rows")
            rows.append(
                VersionRow(
                    version=str(mv.version),
                    created=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
                        timespec="seconds"
                    ),
                    run_id=str(mv.run_id),
                    data_hash=tags.get(TAG + "data_hash"),
                    rows=int(count) if count and count.isdigit() else None,
                    metrics={
                        k.removeprefix("test_"): v
                        for k, v in metrics.items()
                        if k.startswith("test_")
                    },
                    gate=tags.get(TAG + "gate_decision"),
                    reason=tags.get(TAG + "gate_reason"),
                    aliases=sorted(aliases.get(str(mv.version), [])),
                    servable=None if runtime is None else runtime == "onnx",
                    eval_rows=int(evaluated) if evaluated and evaluated.isdigit() else None,
                    eval_hash=tags.get(TAG + "eval_hash"),
                )
            )
    return rows
