"""Fixtures for the chart on a cluster: a Helm release in a restricted namespace, and the operator run
as a subprocess with that release's ServiceAccount token, so a verb missing from the chart's ClusterRole
fails the tests that need it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube import ROOT, Kubectl, wait_for

CHART = ROOT / "charts" / "llama-operator"
BUILD_SH = ROOT / "hack" / "cluster" / "build.sh"

# Labels of a namespace whose pods must meet the restricted Pod Security Standard.
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}
# What the API server and kopf say when the operator's identity lacks a verb.
FORBIDDEN = re.compile(r"\b403\b|[Ff]orbidden|Not enough permissions")
# Error-level lines of the operator's JSON log (a failed pass may not name its 403) and of kopf.
ERROR = re.compile(r'"level": "(error|critical)"|\bERROR\b')
WAIT = ("--wait", "--timeout", "120s")


def helm_binary() -> Path:
    """The Helm built from its Go module into the cluster binaries' cache (seconds when cached)."""
    env = {**os.environ, "BUILD_ONLY": "helm"}
    bindir = subprocess.run([str(BUILD_SH)], env=env, check=True, capture_output=True, text=True).stdout
    return Path(bindir.strip()) / "helm"


class Helm:
    def __init__(self, binary: Path, env: dict[str, str]) -> None:
        self.binary = binary
        self.env = {**os.environ, **env}

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc


def restricted_labels_args() -> list[str]:
    return [f"{key}={value}" for key, value in RESTRICTED.items()]


def create_restricted_namespace(kubectl: Kubectl, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    kubectl.run("create", "namespace", name)
    kubectl.run("label", "namespace", name, *restricted_labels_args())
    return name


@dataclass
class Release:
    """One install of the chart."""

    helm: Helm
    kubectl: Kubectl
    name: str
    namespace: str
    pool_prefix: str
    install_output: str = ""
    operator_pod: dict[str, Any] = field(default_factory=dict)
    installed: bool = True
    # Set while `operator_as_chart_sa` runs; uninstall() stops it first, as deleting the Deployment would.
    operator: OperatorProcess | None = None

    @property
    def fullname(self) -> str:
        return self.name if "llama-operator" in self.name else f"{self.name}-llama-operator"

    def pool(self, key: str) -> str:
        return f"{self.pool_prefix}{key}"

    def manifests(self) -> list[dict[str, Any]]:
        text = self.helm.run("get", "manifest", self.name, "-n", self.namespace).stdout
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def deployment(self) -> dict[str, Any]:
        return next(d for d in self.manifests() if d["kind"] == "Deployment")

    def upgrade(self, *set_args: str) -> None:
        args = [arg for value in set_args for arg in ("--set", value)]
        self.helm.run("upgrade", self.name, str(CHART), "-n", self.namespace, "--reuse-values", *args, *WAIT)

    def uninstall(self, check: bool = True) -> None:
        if self.operator is not None:
            self.operator.stop()
        self.helm.run("uninstall", self.name, "-n", self.namespace, *WAIT, check=check)
        self.installed = False


@pytest.fixture(scope="session")
def helm(cluster_env: dict[str, str]) -> Helm:
    return Helm(helm_binary(), cluster_env)


@contextmanager
def installed_release(helm: Helm, kubectl: Kubectl, *set_args: str) -> Iterator[Release]:
    """The chart installed (and finally uninstalled) in a fresh namespace enforcing the restricted standard.

    Pool names get a per-release prefix: AcceleratorPools are cluster-scoped, and other tests or
    releases on the same cluster may own the unprefixed names.
    """
    namespace = create_restricted_namespace(kubectl, "t-helm")
    tag = uuid.uuid4().hex[:5]
    release = Release(helm, kubectl, f"lo-{tag}", namespace, f"{tag}-")
    sets = [arg for value in (f"poolNamePrefix={release.pool_prefix}", *set_args) for arg in ("--set", value)]
    # A cluster whose operator pods really run (kind) says where they can: its node and image settings.
    if os.environ.get("LLAMAOP_TEST_HELM_VALUES"):
        sets = ["-f", os.environ["LLAMAOP_TEST_HELM_VALUES"], *sets]
    try:
        proc = helm.run("install", release.name, str(CHART), "-n", namespace, *sets, *WAIT, check=False)
        if proc.returncode != 0:  # say what the cluster saw, not only helm's deadline
            pods = kubectl.run("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
            events = kubectl.run("get", "events", "-n", namespace, check=False).stdout
            raise AssertionError(
                f"helm install failed: {proc.stderr.strip()}\npods:\n{pods}\nevents:\n{events}"
            )
        release.install_output = proc.stdout
        # --wait returned: the Deployment is available, so its pod was admitted and is Running.
        selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=operator"
        pods = kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]
        release.operator_pod = pods[0] if pods else {}
        yield release
    finally:
        if release.installed:
            release.uninstall(check=False)
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def chart_release(helm: Helm, kubectl: Kubectl) -> Iterator[Release]:
    """The chart with its defaults, for the tests of one module."""
    with installed_release(helm, kubectl) as release:
        yield release


@pytest.fixture
def restricted_namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own that enforces the restricted Pod Security Standard."""
    base = request.node.name.lower().replace("_", "-")[:30].strip("-")
    name = create_restricted_namespace(kubectl, f"t-{base}")
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def token_kubeconfig(kubectl: Kubectl, service_account: str, namespace: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a bound token) to the same API server."""
    current = kubectl.json("config", "view", "--raw", "--minify", "--flatten")
    cluster = current["clusters"][0]["cluster"]
    token = kubectl.run("create", "token", service_account, "-n", namespace, "--duration=2h").stdout.strip()
    user = f"system:serviceaccount:{namespace}:{service_account}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": "chart-sa", "context": {"cluster": "cluster", "user": user, "namespace": namespace}}
        ],
        "current-context": "chart-sa",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OperatorProcess:
    """`llamaop run` as the chart runs it, authenticated as the chart's ServiceAccount."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    args: list[str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def forbidden_lines(self) -> list[str]:
        """Lines that show a refused request, or an error whose cause the log may not spell out."""
        lines = [line for line in self.log().splitlines() if "GET /healthz" not in line]  # access log
        return [line for line in lines if FORBIDDEN.search(line) or ERROR.search(line)]

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"llamaop exited with {self.proc.returncode}")

    def assert_no_forbidden(self) -> None:
        lines = self.forbidden_lines()
        assert not lines, "refused or failed API calls (a verb missing from the chart?):\n" + "\n".join(
            lines[:20]
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def chart_operator_args(deployment: dict[str, Any], metrics_port: int, health_port: int) -> list[str]:
    """The container's args from the rendered chart, with ports that are free on this host."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = [a for a in container["args"] if not a.startswith(("--metrics-port", "--health-port"))]
    return [*args, f"--metrics-port={metrics_port}", f"--health-port={health_port}"]


def healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as rsp:
            return bool(rsp.status == 200)
    except OSError:
        return False


def llamaop_executable() -> str:
    exe = Path(sys.executable).with_name("llamaop")
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the project into the venv (make venv)")
    return str(exe)


@contextmanager
def operator_with_chart_identity(
    release: Release, kubectl: Kubectl, cluster_env: dict[str, str], workdir: Path
) -> Iterator[OperatorProcess]:
    """`llamaop` with the args of the release's Deployment, authenticated by its ServiceAccount's token.

    The release's own Deployment must be scaled to 0: on kwok its pod is fake anyway, but on a real
    cluster (kind) two operators would act on the same jobs.
    """
    deployment = release.deployment()
    assert deployment["spec"]["replicas"] == 0, "scale the release's operator to 0 first"
    service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    kubeconfig = token_kubeconfig(kubectl, service_account, release.namespace, workdir / "kubeconfig")
    port, health_port = free_port(), free_port()
    args = chart_operator_args(deployment, port, health_port)
    # Only the token's identity: no in-cluster settings or other credentials leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))}
    env |= {
        "KUBECONFIG": str(kubeconfig),
        "PATH": cluster_env["PATH"],
        "POD_NAMESPACE": release.namespace,
        "POD_NAME": f"{release.fullname}-test",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = workdir / "operator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [llamaop_executable(), *args], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir
        )
    operator = OperatorProcess(proc, log_path, port, args)
    release.operator = operator

    def healthy() -> bool:
        operator.assert_alive()
        return healthz(health_port)

    try:
        try:
            # The chart's probes ask the same: kopf's /healthz answers once the operator runs.
            wait_for(healthy, timeout=60, interval=0.5, what=f"llamaop /healthz on port {health_port}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- operator log ---\n{operator.tail()}") from None
        yield operator
    finally:
        operator.stop()
        release.operator = None


@pytest.fixture(scope="module")
def operator_as_chart_sa(
    chart_release: Release,
    kubectl: Kubectl,
    cluster_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """`llamaop run --all-namespaces --standalone` (the chart's args) as the chart's ServiceAccount."""
    chart_release.upgrade("replicaCount=0")
    workdir = tmp_path_factory.mktemp("operator")
    with operator_with_chart_identity(chart_release, kubectl, cluster_env, workdir) as operator:
        yield operator


def wait_gone(kubectl: Kubectl, *args: str, timeout: float = 60) -> None:
    """Wait until `kubectl get ARGS` says NotFound."""

    def gone() -> bool:
        proc = kubectl.run("get", *args, check=False)
        return proc.returncode != 0 and "NotFound" in proc.stderr

    wait_for(gone, timeout=timeout, what=f"{' '.join(args)} to be deleted")
