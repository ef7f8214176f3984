"""Fixtures shared by every tier. Cluster tiers start the local cluster once per session.

Point the cluster tiers at another cluster (kind, say) with
`LLAMAOP_TEST_KUBECONFIG=/path/to/kubeconfig make test`: then nothing local is started.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.kube import CLUSTER_SH, ROOT, Kubectl, local_cluster_env, wait_for
from tests.operator_harness import Operator, install_api


@pytest.fixture(scope="session")
def cluster_env() -> dict[str, str]:
    """Environment (PATH, KUBECONFIG) of a running cluster; the local one is brought up if needed."""
    external = os.environ.get("LLAMAOP_TEST_KUBECONFIG")
    if external:
        return {"KUBECONFIG": external, "PATH": os.environ["PATH"]}
    subprocess.run([str(CLUSTER_SH), "up"], check=True)
    return local_cluster_env()


@pytest.fixture(scope="session")
def kubectl(cluster_env: dict[str, str]) -> Kubectl:
    return Kubectl(cluster_env["KUBECONFIG"], cluster_env)


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards (without waiting for it to go)."""
    base = request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:5]}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator(
    kubectl: Kubectl, cluster_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """The operator, running as a subprocess against the cluster, with the CRDs and example pools applied."""
    install_api(kubectl)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    # The workers tier's real node is a pool of the `local` instance type, which this catalog adds.
    op = Operator(cluster_env, log, "--catalog", str(ROOT / "tests/workers/catalog-local.yaml"))
    op.start()
    yield op
    op.stop()


@pytest.fixture
def jobs_namespace(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """A namespace for LlamaJobs whose jobs, and so their workers, are gone before the next test starts."""
    yield namespace
    kubectl.run("delete", "llamajobs", "--all", "-n", namespace, "--wait=true", "--timeout=60s", check=False)
    wait_for(
        lambda: not kubectl.json("get", "pods", "-n", namespace)["items"],
        timeout=60,
        what=f"worker pods of {namespace} to be gone",
    )
