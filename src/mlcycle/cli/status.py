"""`status`: the state of the project at a glance, read-only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from typing import TYPE_CHECKING, Any

from mlcycle.cli.base import (
    DatasetOpt,
    JsonOpt,
    SpecOpt,
    app,
    chosen,
    console,
    emit_json,
    opened_store,
    settings,
    spec_of,
    stage,
)
from mlcycle.errors import MlcycleError

if TYPE_CHECKING:
    from mlcycle.config import Settings
    from mlcycle.spec import DatasetSpec
    from mlcycle.store.base import Store


def _store_part(store: Store, spec: DatasetSpec) -> dict[str, Any]:
    from mlcycle.monitor.reports import latest_reports
    from mlcycle.store.base import BATCHES, quarantine_collection

    labelled = 0
    if spec.target is not None and store.count(spec.name):
        target = spec.target.column
        labelled = len(
            store.read_snapshot(spec.name, columns=[spec.id_column, target], require=target)
        )
    batches = store.find(BATCHES, {"dataset": spec.name})
    quarantined = store.find(quarantine_collection(spec.name))
    reports = latest_reports(store, spec.name, spec.registered_model, limit=1)
    newest = reports[0] if reports else None
    return {
        "rows": store.count(spec.name),
        "labelled_rows": labelled,
        "batches": [
            {k: b.get(k) for k in ("_id", "status", "started_at", "valid", "rejected")}
            for b in batches[-5:]
        ],
        "batch_statuses": dict(Counter(str(b.get("status")) for b in batches)),
        "quarantine": {
            "rows": len(quarantined),
            "by_reason": dict(Counter(str(d.get("reason")) for d in quarantined).most_common(5)),
        },
        "monitoring": None
        if newest is None
        else {"verdict": newest.verdict, "version": newest.model_version, "at": str(newest.ts)},
    }


def _store(config: Settings, spec: DatasetSpec) -> dict[str, Any]:
    """The store's part; an embedded store that does not exist yet is not created."""
    if config.mongo_uri is None and not config.embedded_store_path.exists():
        return {
            "rows": 0,
            "labelled_rows": 0,
            "batches": [],
            "batch_statuses": {},
            "quarantine": {"rows": 0, "by_reason": {}},
            "monitoring": None,
            "detail": f"no store yet at {config.embedded_store_path}",
        }
    with opened_store(config) as store:
        return _store_part(store, spec)


def _models_part(config: Settings, spec: DatasetSpec) -> dict[str, Any]:
    from mlcycle import registry

    name = spec.registered_model
    try:
        client = registry.connect(config, retries=1, create=False)
        if not registry.model_exists(client, name):
            return {"name": name, "versions": 0, "champion": None, "challenger": None}
        count = len(client.search_model_versions(f"name='{name}'"))
        champion = registry.champion(client, name)
        challenger = registry.holder(client, name, registry.CHALLENGER)
    except MlcycleError as err:
        return {"name": name, "error": str(err)}
    return {
        "name": name,
        "versions": count,
        "champion": champion.version if champion else None,
        "challenger": challenger.version if challenger else None,
    }


def _server_part(config: Settings) -> dict[str, Any]:
    url = f"http://{config.serve_host}:{config.serve_port}"
    try:
        with urllib.request.urlopen(f"{url}/model", timeout=2) as reply:
            served = json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return {"url": url, "reachable": True, "status": err.code}
    except (OSError, ValueError) as err:
        return {"url": url, "reachable": False, "detail": str(getattr(err, "reason", err))}
    shadow = served.get("shadow") or {}
    return {
        "url": url,
        "reachable": True,
        "version": served.get("version"),
        "loaded_at": served.get("loaded_at"),
        "shadow": shadow.get("version"),
    }


@app.command()
def status(spec_path: SpecOpt = None, dataset: DatasetOpt = None, as_json: JsonOpt = False) -> None:
    """The project at a glance: spec, store rows and batches, quarantine, models,
    the server (when reachable) and the newest monitoring verdict. Reads only.

    Example: mlcycle status --json
    """
    config = chosen(settings(), spec_path, dataset)
    with stage(as_json):
        spec = spec_of(config, None)
        project = config.project
        state = {
            "project": str(project.root) if project else None,
            "spec": str(config.spec_path),
            "dataset": spec.name,
            "store": _store(config, spec),
            "models": _models_part(config, spec),
            "server": _server_part(config),
        }
    if as_json:
        emit_json(state)
        return
    _render(state)


def _render(state: dict[str, Any]) -> None:
    store, models, server = state["store"], state["models"], state["server"]
    say = [
        f"project   {state['project'] or 'none (the bundled loan example)'}",
        f"spec      {state['spec']} (dataset {state['dataset']})",
        f"store     {store['rows']:,} rows, {store['labelled_rows']:,} labelled; batches "
        + (", ".join(f"{v} {k}" for k, v in store["batch_statuses"].items()) or "none"),
        f"quarantine {store['quarantine']['rows']:,} rows"
        + "".join(f"\n            {n:,}  {r}" for r, n in store["quarantine"]["by_reason"].items()),
    ]
    if "error" in models:
        say.append(f"models    {models['error']}")
    else:
        say.append(
            f"models    {models['name']}: {models['versions']} version(s), champion "
            f"{_v(models['champion'])}, challenger {_v(models['challenger'])}"
        )
    if server["reachable"] and "version" in server:
        say.append(f"server    {server['url']}: serving v{server['version']}")
    elif server["reachable"]:
        say.append(f"server    {server['url']}: answers {server['status']}")
    else:
        say.append(f"server    {server['url']}: not reachable")
    found = store["monitoring"]
    say.append(
        "monitor   "
        + (
            "no report yet"
            if found is None
            else f"{found['verdict']} (v{found['version']}, {found['at']})"
        )
    )
    for line in say:
        console.print(line, highlight=False)


def _v(version: str | None) -> str:
    return "none" if version is None else f"v{version}"
