"""`make lint-deploy` passes on the shipped files and fails on a planted error in each."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.lint_tools]

SCRIPT = REPO / "scripts" / "lint-deploy.sh"


def _run(root: Path, skip_metrics: bool = True, only: str = "") -> subprocess.CompletedProcess[str]:
    assert (REPO / ".cache" / "tools" / "bin" / "kustomize").exists(), (
        "lint tools missing: `make test` (or `make lint-tools`) installs them"
    )
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "LINT_SKIP_METRICS": "1" if skip_metrics else "0",
        "LINT_ONLY": only,
    }
    return subprocess.run(
        ["bash", str(SCRIPT), str(root)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for part in ("deploy", ".github", "src/mlcycle/project"):
        shutil.copytree(REPO / part, tmp_path / part)
    return tmp_path


def test_shipped_files_pass_including_live_metrics() -> None:
    out = _run(REPO, skip_metrics=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok    /metrics" in out.stdout


def _plant(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


# the section of the script whose check each planted error is for (the whole script runs on
# the shipped files above; a planted error needs only its own section to fail)
SECTIONS = {
    "FAIL  Dockerfile": "dockerfile",
    "FAIL  compose.yaml": "compose",
    "FAIL  yamllint": "yaml",
    "FAIL  overlay": "kubernetes",
    "FAIL  alerts": "alerts",
    "FAIL  checkov": "policy",
    "FAIL  actionlint": "workflows",
}


@pytest.mark.parametrize(
    ("file", "old", "new", "failure"),
    [
        (
            "deploy/docker/Dockerfile",
            "WORKDIR /app\n",
            "WORKDIR /app\nRUN cd /tmp && ls\n",
            "FAIL  Dockerfile",
        ),
        (
            "deploy/compose.yaml",
            "condition: service_healthy\n",
            "condition: service_healthy\n      nosuch:\n        condition: service_started\n",
            "FAIL  compose.yaml",
        ),
        (
            "deploy/compose.yaml",
            "${MONGO_SERVE_PASSWORD:?set in .env}",
            "${MONGO_SERVE_PASSWORD:-}",
            "FAIL  compose.yaml renders without MONGO_SERVE_PASSWORD",
        ),
        (
            "src/mlcycle/project/configs/train.yaml",
            "seed: 42\n",
            "seed: 42\nseed: 7\n",
            "FAIL  yamllint",
        ),
        ("deploy/k8s/base/serve.yaml", "  replicas: 2\n", "  replica: 2\n", "FAIL  overlay"),
        (
            "deploy/k8s/base/namespace.yaml",
            "name: mlcycle\n",
            "name: mlcycle\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n",
            "FAIL  overlay",
        ),
        (
            "deploy/prometheus/alerts.yaml",
            "expr: max(mlcycle_monitor_score_psi) >= 0.25",
            "expr: max(mlcycle_monitor_score_psi >= 0.25",
            "FAIL  alerts.yaml",
        ),
        (  # a rule that no longer does what its unit test says
            "deploy/prometheus/alerts.yaml",
            "(mlcycle_monitor_feature_drift) >= 2",
            "(mlcycle_monitor_feature_drift) >= 1",
            "FAIL  alerts_test.yaml",
        ),
        (  # a misspelt field in an operator resource (checked against deploy/schemas)
            "deploy/k8s/overlays/cloud/external-secrets.yaml",
            "  secretStoreRef:\n",
            "  secretstoreRef:\n",
            "FAIL  overlay cloud",
        ),
        (  # valid Kubernetes, but a container that may escalate its privileges
            "deploy/k8s/base/serve.yaml",
            "            allowPrivilegeEscalation: false\n",
            "            allowPrivilegeEscalation: true\n",
            "FAIL  checkov Kubernetes overlays",
        ),
        (  # a cloud key pasted into a deployment file (made here, never stored as such)
            "deploy/compose.yaml",
            "  mongo:\n",
            "  mongo:\n    labels:\n      leaked: " + "AKIA" + "Z3MNOPQ7RSTUVWXY\n",
            "FAIL  checkov secrets scan",
        ),
        (
            ".github/workflows/ci.yml",
            "    timeout-minutes: 45\n",
            "    timeout-minutes: 45\n    step: []\n",
            "FAIL  actionlint",
        ),
    ],
)
def test_a_planted_error_fails(tree: Path, file: str, old: str, new: str, failure: str) -> None:
    _plant(tree / file, old, new)
    (section,) = {v for k, v in SECTIONS.items() if failure.startswith(k)}
    out = _run(tree, only=section)
    assert out.returncode == 1, out.stdout
    assert failure in out.stdout
    sections = [line for line in out.stdout.splitlines() if line.startswith("== ")]
    assert len(sections) == 2 and sections[-1] == "== /metrics skipped", sections
