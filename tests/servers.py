"""Real servers for tests: FerretDB (MongoDB wire protocol), `mlflow server`, uvicorn
and an Apache Kafka broker (KRaft, from the official jars).

Each is started as a subprocess on 127.0.0.1 on a free port and stopped afterwards. A
missing binary fails the tests that need it with the command that installs it (`make
test` installs everything first): no test is ever skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> None:
    pytest.fail(f"{reason} (`make test` installs and builds every tool first)")


def ferretdb_binary() -> Path | None:
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "ferretdb.sh"), "path"], capture_output=True, text=True
    )
    path = Path(out.stdout.strip())
    return path if out.returncode == 0 and path.is_file() else None


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Poll `predicate` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}: {log.read_text()[-2000:]}")


def _wait_http(
    url: str, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} not ready: {log.read_text()[-3000:]}")


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


class FerretDB:
    """A FerretDB process with its SQLite data in `workdir`; can be stopped and restarted."""

    def __init__(self, binary: Path, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> FerretDB:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "ferretdb.log"
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "--handler=sqlite",
                f"--sqlite-url=file:{data}/",
                f"--listen-addr=127.0.0.1:{self.port}",
                "--telemetry=disable",
                "--state-dir=-",
                "--debug-addr=-",
                "--log-level=warn",
            ],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        _wait_port(self.port, self.proc, log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def start_ferretdb(workdir: Path) -> FerretDB:
    binary = ferretdb_binary()
    if binary is None:
        _unavailable("FerretDB is not built: run `scripts/ferretdb.sh build` (needs Go)")
    assert binary is not None
    return FerretDB(binary, workdir).start()


def _free_port_pair() -> int:
    """A free port whose successor is free too (Kafka's broker and controller)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


class KafkaBroker:
    """One combined KRaft broker/controller started by scripts/kafka.sh, with its data in
    `workdir`: it can be stopped (SIGTERM), killed and restarted on the same ports and data."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port_pair()
        self.controller_port = self.port + 1

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _script(self, *args: str) -> None:
        env = {
            **os.environ,
            "KAFKA_RUN_DIR": str(self.workdir),
            "KAFKA_HEAP": "384m",
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
        }
        out = subprocess.run(
            ["bash", str(REPO / "scripts" / "kafka.sh"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            if "required" in out.stderr:
                _unavailable(f"Kafka cannot run here: {out.stderr.strip()}")
            raise RuntimeError(f"kafka.sh {' '.join(args)} failed: {out.stderr[-3000:]}")

    def start(self, port: int | None = None) -> KafkaBroker:
        """Start (again); with `port`, the broker listens and advertises there from now
        on, as a broker that comes back at a new address does (its controller stays)."""
        if port is not None:
            self.port = port
        self._script("start", str(self.port))
        return self

    def stop(self) -> None:
        self._script("stop")


def start_kafka(workdir: Path) -> KafkaBroker:
    return KafkaBroker(workdir).start()


class MlflowServer:
    """`mlflow server` with a SQLite backend store and a local artifact root."""

    def __init__(
        self, workdir: Path, args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.args = args
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        exe = shutil.which("mlflow")
        if exe is None:
            _unavailable("the mlflow command is not installed: run `make install`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "mlflow.log"
        # nothing here uses MLflow's job runner (about ten huey consumers a server)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": "",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            **self.env,
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                f"sqlite:///{self.workdir / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.workdir / "artifacts"),
                "--workers",
                "1",
                *self.args,
            ],
            stdout=log.open("ab"),
            cwd=str(self.workdir),
            stderr=subprocess.STDOUT,
            env=env,
        )
        _wait_http(f"{self.uri}/health", self.proc, log, "mlflow server", 120)
        return self

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None


class UvicornServer:
    """`mlcycle serve` as a real uvicorn process with its own environment."""

    def __init__(self, env: dict[str, str], workdir: Path, cwd: Path | None = None) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "MLCYCLE_SERVE_PORT": str(self.port)}
        self.workdir = workdir
        self.cwd = cwd or workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> UvicornServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / f"uvicorn-{self.port}.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlcycle.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=str(self.cwd),
        )
        path = "/health/ready" if wait_ready else "/health/live"
        _wait_http(self.url + path, self.proc, log, "uvicorn", 60)
        return self

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None


def mlcycle(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The `mlcycle` CLI as a user runs it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "mlcycle.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


BLOCKER = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pandas", "pyarrow", "sklearn", "scipy", "matplotlib", "skl2onnx", "mlflow"):
            raise ImportError("not part of the serving install: " + name)
sys.meta_path.insert(0, _Block())
"""
"""A `sitecustomize.py` for a server process: the serving install has none of these."""


DASK = str(Path(sys.executable).parent / "dask")


class DaskCluster:
    """`dask scheduler` + N `dask worker` processes (no nanny: a killed worker stays dead)."""

    def __init__(self, workdir: Path, env: dict[str, str], workers: int = 2) -> None:
        self.workdir, self.env, self.n = workdir, env, workers
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [DASK, *args], env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def start(self) -> DaskCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
            "--no-dashboard",
        )  # fmt: skip
        from distributed import Client

        for k in range(self.n):
            self.workers.append(
                self._spawn(
                    f"worker{k}",
                    "worker",
                    self.address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--name",
                    f"w{k}",
                )
            )
        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(self.n, timeout=120)
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def worker_env(tmp: Path, mongo_uri: str | None) -> dict[str, str]:
    from tests.data import SPEC_PATH

    env = {**os.environ, "MLCYCLE_DATA_DIR": str(tmp / "data"), "MLCYCLE_SPEC": str(SPEC_PATH)}
    env.pop("MLCYCLE_MONGO_URI", None)
    env.pop("MONGO_URI", None)
    if mongo_uri:
        env["MONGO_URI"] = mongo_uri
    return env
