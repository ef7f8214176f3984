"""The workers tier: a real kubelet node (hack/workers/node.sh) joined to the local cluster."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.kube import CLUSTER_SH, Kubectl
from tests.workers.node import cannot_run_containers


@pytest.fixture(scope="session")
def workers_env(cluster_env: dict[str, str]) -> dict[str, str]:
    """The local cluster with its real node up (started once; a warm start takes seconds), or another
    cluster's real node: hack/kind/run.sh test names kind's worker (LLAMAOP_WORKER_NODE) and its
    kubeconfig (LLAMAOP_WORKER_KUBECONFIG), which hack/workers/node.sh then uses for volumes and resources.
    """
    if os.environ.get("LLAMAOP_TEST_KUBECONFIG"):
        if os.environ.get("LLAMAOP_WORKER_KUBECONFIG") != os.environ["LLAMAOP_TEST_KUBECONFIG"]:
            pytest.skip(
                "workers tier: LLAMAOP_TEST_KUBECONFIG names no real node of its own "
                "(set LLAMAOP_WORKER_NODE and LLAMAOP_WORKER_KUBECONFIG, as hack/kind/run.sh test does)"
            )
        return cluster_env
    reason = cannot_run_containers()
    if reason:
        pytest.skip(f"workers tier: this machine cannot run containers: {reason}")
    subprocess.run([str(CLUSTER_SH), "up", "--workers"], check=True)
    return cluster_env


@pytest.fixture
def restricted_namespace(workers_env: dict[str, str], kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """The test's namespace, enforcing Pod Security `restricted` as a real deployment would."""
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    yield namespace
