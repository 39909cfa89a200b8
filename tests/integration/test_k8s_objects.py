"""The rendered Kubernetes overlays, object by object: no Secret values, least-privilege
network policies, a read-only MongoDB; the compose file's application user."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import yaml

from tests.servers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.lint_tools]

KUSTOMIZE = REPO / ".cache" / "tools" / "bin" / "kustomize"
OVERLAYS = sorted(p.name for p in (REPO / "deploy" / "k8s" / "overlays").iterdir())


def render(overlay: str) -> list[dict[str, Any]]:
    assert KUSTOMIZE.exists(), "kustomize missing: `make test` (or `make lint-tools`) builds it"
    out = subprocess.run(
        [str(KUSTOMIZE), "build", str(REPO / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}


def _selects(spec: dict[str, Any], name: str) -> bool:
    selector = spec["podSelector"]
    if not selector:
        return True
    if selector.get("matchLabels", {}).get("app.kubernetes.io/name") == name:
        return True
    return any(
        e["key"] == "app.kubernetes.io/name" and name in e["values"]
        for e in selector.get("matchExpressions", [])
    )


def _peers(rule: dict[str, Any]) -> set[str]:
    names = set()
    for peer in rule.get("from", []) + rule.get("to", []):
        pod = peer.get("podSelector", {})
        if "ipBlock" in peer:
            names.add(peer["ipBlock"]["cidr"])
        if "namespaceSelector" in peer:
            names.add("dns")
        elif "matchLabels" in pod:
            labels = pod["matchLabels"]
            names.add(
                labels.get("app.kubernetes.io/name")
                or ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            )
        for expr in pod.get("matchExpressions", []):
            names.update(expr["values"])
    return names


def _allowed(policies: dict[str, dict[str, Any]], pod: str, kind: str) -> list[dict[str, Any]]:
    rules = []
    for spec in policies.values():
        if _selects(spec, pod) and kind in spec["policyTypes"]:
            rules += spec.get(kind.lower(), [])
    return rules


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_overlay_renders_a_secret(overlay: str) -> None:
    kinds = [o["kind"] for o in render(overlay)]
    assert "Secret" not in kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_the_overlays_own(overlay: str) -> None:
    objects = render(overlay)
    images = set()
    for o in objects:
        text = json.dumps(o)
        images.update(part.split('"')[0] for part in text.split('"image": "')[1:])
    ours = {i for i in images if i.startswith("mlcycle")}
    tag = "0.1.0" if overlay == "cloud" else "latest"
    assert ours == {f"mlcycle:{tag}-serve", f"mlcycle:{tag}-pipeline"}, images
    if overlay == "cloud":  # the Dask workers run the pipeline image of the release
        (dask,) = [o for o in objects if o["kind"] == "DaskCluster"]
        (worker,) = dask["spec"]["worker"]["spec"]["containers"]
        assert worker["image"] == "mlcycle:0.1.0-pipeline"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_give_each_component_only_what_it_needs(overlay: str) -> None:
    policies = _policies(render(overlay))
    deny = policies["default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny

    (serve_in,) = _allowed(policies, "serve", "Ingress")
    assert serve_in["ports"] == [{"port": 8000, "protocol": "TCP"}]
    (stream_in,) = _allowed(policies, "stream", "Ingress")
    assert stream_in["ports"] == [{"port": 8001, "protocol": "TCP"}]  # /health, /metrics
    for pod in ("etl", "train", "monitor", "score", "mlflow"):
        ingress = _allowed(policies, pod, "Ingress")
        assert all(rule.get("from") for rule in ingress), pod  # nothing open to everyone
    mlflow_in = set().union(*(_peers(r) for r in _allowed(policies, "mlflow", "Ingress")))
    assert mlflow_in == {"serve", "train", "monitor", "score"}

    egress = {
        pod: set().union(*(_peers(r) for r in _allowed(policies, pod, "Egress")))
        for pod in ("serve", "etl", "train", "monitor", "score", "mlflow", "stream")
    }
    dask = {"dask.org/cluster-name=mlcycle"} if overlay == "cloud" else set()
    assert egress["serve"] - {"0.0.0.0/0"} == {"dns", "mlflow", "mongo"}
    assert egress["train"] - {"0.0.0.0/0"} == {"dns", "mlflow", "mongo"} | dask
    assert egress["monitor"] - {"0.0.0.0/0"} == {"dns", "mlflow", "mongo"}
    assert egress["score"] - {"0.0.0.0/0"} == {"dns", "mlflow", "mongo"}
    assert egress["etl"] - {"0.0.0.0/0"} == {"dns", "mongo"} | dask
    assert egress["mlflow"] == {"dns"}
    # the broker is Strimzi's in-cluster Kafka, or (cloud) an external one on its ports
    assert egress["stream"] - {"0.0.0.0/0"} == {"dns", "mongo"} | (
        set() if overlay == "cloud" else {"strimzi.io/cluster=mlcycle"}
    )
    if overlay == "cloud":  # the Dask cluster: its own pods and the jobs in, MongoDB out
        dask_pods = {
            name: spec
            for name, spec in policies.items()
            if spec["podSelector"].get("matchLabels", {}).get("dask.org/cluster-name")
        }
        (spec,) = dask_pods.values()
        peers_in = set().union(*(_peers(r) for r in spec["ingress"]))
        assert peers_in == {"etl", "train", "dask.org/cluster-name=mlcycle"}
        peers_out = set().union(*(_peers(r) for r in spec["egress"]))
        assert peers_out == {"0.0.0.0/0", "dask.org/cluster-name=mlcycle"}
        for rule in spec["egress"]:
            if "0.0.0.0/0" in _peers(rule):
                assert rule["ports"] == [{"port": 27017, "protocol": "TCP"}]
    for pod in ("serve", "etl", "train", "score"):
        for rule in _allowed(policies, pod, "Egress"):
            if "0.0.0.0/0" in _peers(rule):  # the cloud overlay's external MongoDB only
                assert overlay == "cloud"
                assert rule["ports"] == [{"port": 27017, "protocol": "TCP"}]
    for rule in _allowed(policies, "stream", "Egress"):
        if "0.0.0.0/0" in _peers(rule):  # the external MongoDB and Kafka, on their ports
            assert overlay == "cloud"
            assert rule["ports"] in (
                [{"port": 27017, "protocol": "TCP"}],
                [{"port": 9092, "endPort": 9098, "protocol": "TCP"}],
            )


def test_minikube_mongodb_takes_app_pods_only_and_has_a_read_only_root() -> None:
    objects = render("minikube")
    policies = _policies(objects)
    mongo_in = set().union(*(_peers(r) for r in _allowed(policies, "mongo", "Ingress")))
    assert mongo_in == {"serve", "etl", "train", "monitor", "stream", "score"}
    (mongo,) = [o for o in objects if o["kind"] == "StatefulSet"]
    (container,) = mongo["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/data/db", "/tmp", "/docker-entrypoint-initdb.d"} <= mounts


def test_compose_gives_each_component_its_own_database_user_not_root() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    users = {}
    for name in ("etl", "train", "monitor", "serve", "stream", "score"):
        env = services[name].get("environment") or compose["x-pipeline"]["environment"]
        uri = env["MONGO_URI"]
        assert "ROOT" not in uri and "authSource=admin" not in uri, name
        users[name] = uri.split("//", 1)[1].split(":", 1)[0]
    components = ("etl", "train", "monitor", "serve", "stream", "score")
    assert users == {c: f"mlcycle_{c}" for c in components}
    mongo_env = services["mongo"]["environment"]
    assert {f"MONGO_{c.upper()}_PASSWORD" for c in users} <= set(mongo_env)


def _mongo_init(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The init script under Node with a recording stand-in for mongosh's `db`."""
    script = REPO / "deploy" / "k8s" / "overlays" / "minikube" / "mongo-init" / "create-users.js"
    harness = (
        "const calls = [];"
        "globalThis.print = () => {};"
        "globalThis.db = { getSiblingDB: (name) => ({"
        "  createRole: (r) => calls.push(['role', name, r]),"
        "  createUser: (u) => calls.push(['user', name, u]) }) };"
        f"require({json.dumps(str(script))});"
        "console.log(JSON.stringify(calls));"
    )
    return subprocess.run(
        ["node", "-e", harness], capture_output=True, text=True, env={**os.environ, **env}
    )


def test_database_roles_give_each_component_only_what_it_needs() -> None:
    components = ("ETL", "TRAIN", "SERVE", "MONITOR", "STREAM", "SCORE")
    passwords = {f"MONGO_{c}_PASSWORD": "x" for c in components}
    out = _mongo_init({**passwords, "MLCYCLE_DATASET": "credit"})
    assert out.returncode == 0, out.stderr
    calls = json.loads(out.stdout)
    roles = {
        r["role"]: {p["resource"]["collection"]: set(p["actions"]) for p in r["privileges"]}
        for kind, _, r in calls
        if kind == "role"
    }
    assert roles["mlcycle_serve"] == {
        "credit_predictions": {"insert"},
        "credit_monitoring": {"find"},
    }
    assert roles["mlcycle_train"] == {
        "credit": {"find"},
        "etl_batches": {"find"},
        "mlcycle_locks": {"find"},
    }
    assert "credit" not in roles["mlcycle_serve"]  # serve never reads the dataset
    assert {"insert", "update", "remove"} <= roles["mlcycle_etl"]["credit"]
    assert not any(
        a - {"find", "createIndex"}
        for c, a in roles["mlcycle_monitor"].items()
        if c != "credit_monitoring"
    )
    users = {u["user"]: u["roles"] for kind, _, u in calls if kind == "user"}
    assert users == {
        f"mlcycle_{c}": [{"role": f"mlcycle_{c}", "db": "mlcycle"}]
        for c in ("etl", "train", "serve", "monitor", "stream", "score")
    }
    # stream writes what etl writes, but takes no lease (its consumer group does that)
    assert roles["mlcycle_stream"] == {
        c: a for c, a in roles["mlcycle_etl"].items() if c != "mlcycle_locks"
    }
    # batch scoring reads the rows, writes its scores and the quarantine, nothing else
    assert roles["mlcycle_score"] == {
        "credit": {"find"},
        "credit_scores": set(roles["mlcycle_etl"]["credit"]),
        "credit_quarantine": roles["mlcycle_etl"]["credit_quarantine"],
    }
    for optional in ("STREAM", "SCORE"):
        without = _mongo_init({k: v for k, v in passwords.items() if optional not in k})
        assert without.returncode == 0, without.stderr  # stream and score are optional
        assert f"mlcycle_{optional.lower()}" not in without.stdout
    missing = _mongo_init({k: v for k, v in passwords.items() if "SERVE" not in k})
    assert missing.returncode != 0 and "MONGO_SERVE_PASSWORD" in missing.stderr


def _pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every workload's pod spec, by the workload's name."""
    out = {}
    for o in objects:
        spec = o.get("spec", {})
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            out[o["metadata"]["name"]] = spec["template"]["spec"]
        elif o["kind"] == "CronJob":
            out[o["metadata"]["name"]] = spec["jobTemplate"]["spec"]["template"]["spec"]
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_component_runs_as_its_own_identity_without_api_credentials(overlay: str) -> None:
    objects = render(overlay)
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    pods = _pod_specs(objects)
    assert {"serve", "etl", "train", "monitor", "score", "mlflow", "stream"} <= set(pods)
    used = [pod.get("serviceAccountName") for pod in pods.values()]
    assert len(set(used)) == len(used), f"components share an identity: {used}"
    for name, pod in pods.items():
        account = pod.get("serviceAccountName")
        assert account == name, f"{name} runs as {account!r}"
        assert account in accounts, f"{name}'s ServiceAccount {account} is not rendered"
        assert pod.get("automountServiceAccountToken") is False, name
        assert accounts[account].get("automountServiceAccountToken") is False, account
    # nothing calls the Kubernetes API: no role and no binding is granted to anyone
    assert not [
        o
        for o in objects
        if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
    ]


def _secrets_used(objects: list[dict[str, Any]]) -> set[str]:
    """Names of the Secrets the workloads need (optional ones left out)."""
    used: set[str] = set()
    for pod in _pod_specs(objects).values():
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                ref = source.get("secretRef")
                if ref and not ref.get("optional"):
                    used.add(ref["name"])
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    used.add(ref["name"])
    return used


def test_cloud_secrets_come_from_the_secret_manager_never_from_the_manifests() -> None:
    objects = render("cloud")
    assert not [o for o in objects if o["kind"] == "Secret"]
    external = {o["spec"]["target"]["name"]: o for o in objects if o["kind"] == "ExternalSecret"}
    workloads = [o for o in objects if o["kind"] != "ExternalSecret"]
    assert _secrets_used(workloads) - {"mlcycle-mongo"} <= set(external)
    for name, es in external.items():
        assert es["spec"]["secretStoreRef"] == {
            "kind": "ClusterSecretStore",
            "name": "mlcycle-secret-store",
        }
        assert all(d["remoteRef"]["key"].startswith("mlcycle/") for d in es["spec"]["data"]), name
    # every key a workload reads from an external Secret is one the ExternalSecret makes
    for pod in _pod_specs(objects).values():
        for container in pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    keys = {d["secretKey"] for d in external[ref["name"]]["spec"]["data"]}
                    assert ref["key"] in keys, (ref, keys)


def test_the_dask_workers_read_the_files_the_etl_job_names() -> None:
    """On the cloud overlay the ETL runs on the DaskCluster: each of the etl Job's data
    mounts is mounted at the same path on the workers, from a claim many nodes can mount."""
    objects = render("cloud")
    claims = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
    (etl,) = [o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == "etl"]
    (cluster,) = [o for o in objects if o["kind"] == "DaskCluster"]
    pod = etl["spec"]["template"]["spec"]
    worker = cluster["spec"]["worker"]["spec"]

    def mounts(spec: dict[str, Any]) -> dict[str, str]:
        volumes = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec.get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        return {
            m["mountPath"]: volumes[m["name"]]
            for c in spec["containers"]
            for m in c.get("volumeMounts", [])
            if m["name"] in volumes
        }

    job_mounts = mounts(pod)
    assert job_mounts, "the etl Job reads its files from a claim"
    assert mounts(worker) == job_mounts
    for claim in job_mounts.values():
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"], claim


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        has = expr["key"] in labels and labels[expr["key"]] in expr.get("values", [])
        if (expr["operator"] == "In") != has:
            return False
    return True


def _port_ok(rule: dict[str, Any], port: int) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(p["port"] <= port <= p.get("endPort", p["port"]) for p in ports)


def _lets(
    policies: list[dict[str, Any]],
    direction: str,
    pod: dict[str, str],
    peer: dict[str, str] | str,
    port: int,
) -> bool:
    """Whether the namespace's policies let `pod` send (Egress) to or take (Ingress)
    from `peer` (a pod's labels, or an address outside the cluster) on `port`."""
    key = "egress" if direction == "Egress" else "ingress"
    side = "to" if key == "egress" else "from"
    chosen = [
        p for p in policies if direction in p["policyTypes"] and _matches(p["podSelector"], pod)
    ]
    for policy in chosen:
        for rule in policy.get(key, []):
            if not _port_ok(rule, port):
                continue
            for target in rule.get(side, [{}]):
                if isinstance(peer, str):
                    if "ipBlock" in target:
                        return True
                elif "podSelector" in target and _matches(target["podSelector"], peer):
                    return True
    return False


def test_every_pod_strimzi_runs_in_the_namespace_has_the_traffic_it_needs() -> None:
    """The broker and the entity operator fall under the namespace's default deny: their
    own policies (deploy/k8s/strimzi/kafka.yaml) give them the brokers, the API server
    and the stream consumer, and the consumer still reaches only the plain listener."""
    strimzi = [
        d
        for d in yaml.safe_load_all(
            (REPO / "deploy" / "k8s" / "strimzi" / "kafka.yaml").read_text()
        )
        if d
    ]
    policies = [o["spec"] for o in [*render("minikube"), *strimzi] if o["kind"] == "NetworkPolicy"]
    broker = {"strimzi.io/cluster": "mlcycle", "strimzi.io/kind": "Kafka",
              "strimzi.io/name": "mlcycle-kafka"}  # fmt: skip
    operator = {"strimzi.io/cluster": "mlcycle", "strimzi.io/kind": "Kafka",
                "strimzi.io/name": "mlcycle-entity-operator"}  # fmt: skip
    stream = {"app.kubernetes.io/name": "stream"}
    for src, dst, port in [(broker, broker, 9090), (broker, broker, 9091), (operator, broker, 9091),
                           (stream, broker, 9092)]:  # fmt: skip
        assert _lets(policies, "Egress", src, dst, port), (src, dst, port)
        assert _lets(policies, "Ingress", dst, src, port), (dst, src, port)
    assert _lets(policies, "Egress", operator, "api-server", 443)
    assert not _lets(policies, "Egress", broker, "anywhere", 443)
    assert not _lets(policies, "Ingress", broker, stream, 9091)
    serve = {"app.kubernetes.io/name": "serve"}
    assert not _lets(policies, "Ingress", broker, serve, 9092)


def test_compose_requires_every_password() -> None:
    text = (REPO / "deploy" / "compose.yaml").read_text()
    import re

    for match in re.finditer(r"\$\{(\w*PASSWORD\w*)(:?[-?][^}]*)?\}", text):
        assert (match.group(2) or "").startswith(":?"), match.group(0)
