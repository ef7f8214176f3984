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
    """The local cluster with its real node up (started once; a warm start takes seconds)."""
    if os.environ.get("LLAMAOP_TEST_KUBECONFIG"):
        pytest.skip("workers tier: runs against the local cluster's real node, not LLAMAOP_TEST_KUBECONFIG")
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
