"""The chart as installed: restricted pods admitted by the real PodSecurity admission, the operator working
with nothing but the chart's ServiceAccount, upgrades that change the cluster, and a clean uninstall.

The tests run in file order on one release (module-scoped fixtures in conftest.py): install, identity,
operator smoke test, upgrade, uninstall.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from llama_operator.workers import job_selector, selector_string
from tests.cluster.conftest import RESTRICTED, OperatorProcess, Release, wait_gone
from tests.kube import ROOT, Kubectl, llamajob_manifest, wait_for

pytestmark = pytest.mark.cluster

# The chart's default pools are the local cluster's (a unit test keeps them in step).
DEFAULT_POOLS = {p["name"] for p in yaml.safe_load((ROOT / "hack/cluster/pools.yaml").read_text())["pools"]}


def release_pools(kubectl: Kubectl, release: Release) -> dict[str, dict[str, Any]]:
    items = kubectl.json("get", "acceleratorpools", "-l", f"app.kubernetes.io/instance={release.name}")
    return {p["metadata"]["name"]: p for p in items["items"]}


def root_pod(name: str) -> dict[str, Any]:
    """A pod the restricted standard refuses (root, privilege escalation, no seccomp)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"runAsUser": 0}}]},
    }


def test_operator_pod_admitted_and_running_in_restricted_namespace(
    chart_release: Release, kubectl: Kubectl
) -> None:
    ns = kubectl.json("get", "namespace", chart_release.namespace)
    assert RESTRICTED.items() <= ns["metadata"]["labels"].items()
    pod = chart_release.operator_pod
    assert pod, "helm install --wait returned but the operator pod is missing"
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # Control: the same admission refuses a pod that is not restricted, so the pass above means something.
    dry_run = ("apply", "--dry-run=server", "-n", chart_release.namespace, "-f", "-")
    refused = kubectl.run(*dry_run, stdin=json.dumps(root_pod("root")), check=False)
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr and "restricted" in refused.stderr


def test_install_creates_the_default_pools_and_prints_next_steps(
    chart_release: Release, kubectl: Kubectl
) -> None:
    pools = release_pools(kubectl, chart_release)
    assert set(pools) == {chart_release.pool(key) for key in DEFAULT_POOLS}
    g5 = pools[chart_release.pool("g5-12xl-spot")]["spec"]
    assert g5["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "g5.12xlarge",
        "karpenter.sh/capacity-type": "spot",
    }
    # The pool selects the nodes of the pool of the same name (local cluster and kind alike).
    nodes = kubectl.json("get", "nodes", "-l", selector_string(g5["nodeSelector"]))["items"]
    assert nodes and all(n["metadata"]["labels"].get("llamaop.io/pool") == "g5-12xl-spot" for n in nodes)
    assert "NOTES:" in chart_release.install_output
    assert "kind: LlamaJob" in chart_release.install_output


# (verb, resource[/subresource], expected) as the chart's ServiceAccount, cluster-wide.
IDENTITY = [
    ("patch", "llamajobs.llamaop.io", True),
    ("patch", "llamajobs.llamaop.io/status", True),
    ("watch", "acceleratorpools.llamaop.io", True),
    ("patch", "acceleratorpools.llamaop.io/status", True),
    ("create", "pods", True),
    ("patch", "pods", True),
    ("create", "roles.rbac.authorization.k8s.io", True),
    ("deletecollection", "pods", True),
    ("deletecollection", "rolebindings.rbac.authorization.k8s.io", True),
    ("create", "events.events.k8s.io", True),
    ("watch", "nodes", True),
    ("create", "llamajobs.llamaop.io", False),
    ("delete", "llamajobs.llamaop.io", False),
    ("patch", "acceleratorpools.llamaop.io", False),
    ("delete", "acceleratorpools.llamaop.io", False),
    ("patch", "nodes", False),
    ("get", "secrets", False),
    ("list", "configmaps", False),
    ("list", "namespaces", False),
    ("get", "customresourcedefinitions.apiextensions.k8s.io", False),
    ("create", "clusterroles.rbac.authorization.k8s.io", False),
    ("bind", "roles.rbac.authorization.k8s.io", False),
    ("escalate", "roles.rbac.authorization.k8s.io", False),
    ("create", "pods/exec", False),
    ("create", "deployments.apps", False),
]


def test_chart_identity_has_only_the_operators_verbs(chart_release: Release, kubectl: Kubectl) -> None:
    sa = chart_release.deployment()["spec"]["template"]["spec"]["serviceAccountName"]
    who = f"--as=system:serviceaccount:{chart_release.namespace}:{sa}"
    wrong = []
    for verb, resource, expected in IDENTITY:
        kind, _, sub = resource.partition("/")
        what = [kind, f"--subresource={sub}"] if sub else [kind]
        answer = kubectl.run("auth", "can-i", verb, *what, "-A", who, check=False).stdout.strip()
        if (answer == "yes") != expected:
            wrong.append(f"{verb} {resource}: {answer}, expected {'yes' if expected else 'no'}")
    assert not wrong, wrong


def tiny_job(name: str, pool: str) -> dict[str, Any]:
    return llamajob_manifest(
        name,
        {
            "mode": "train",
            "model": {"preset": "tiny"},
            "training": {"steps": 20, "sequenceLength": 64, "batchSize": 2},
            "resources": {"families": ["cpu"], "nodes": 1},
            "placement": {"pools": [pool]},
        },
    )


def test_operator_with_chart_identity_places_a_job_in_a_restricted_namespace(
    operator_as_chart_sa: OperatorProcess,
    chart_release: Release,
    kubectl: Kubectl,
    restricted_namespace: str,
) -> None:
    """The smoke test of the RBAC proof: everything the operator does here, it does as the chart's SA."""
    ns, name = restricted_namespace, "smoke"
    kubectl.apply(tiny_job(name, chart_release.pool("cpu-m7i-od")), ns)

    def placed() -> dict[str, Any] | None:
        operator_as_chart_sa.assert_alive()
        job = kubectl.json("get", "llamajob", name, "-n", ns)
        return job if job.get("status", {}).get("phase") in ("Placed", "Running") else None

    selector = selector_string(job_selector(name))
    try:
        job = wait_for(placed, timeout=60, what="LlamaJob phase Placed or Running")
        assert job["status"]["pool"] == chart_release.pool("cpu-m7i-od")
        # Worker pods exist, so the restricted admission of this namespace let them in.
        pods = wait_for(
            lambda: kubectl.json("get", "pods", "-n", ns, "-l", selector)["items"], what="worker pods"
        )
        assert all(p["spec"]["securityContext"]["runAsNonRoot"] for p in pods)
        # Suspending removes the workers by label selector: the deletecollection verbs.
        kubectl.run("patch", "llamajob", name, "-n", ns, "--type=merge", "-p", '{"spec": {"suspend": true}}')
        wait_for(
            lambda: not kubectl.json("get", "pods", "-n", ns, "-l", selector)["items"],
            what="workers removed on suspend",
        )
        kubectl.run("delete", "llamajob", name, "-n", ns, "--wait=false")
        wait_gone(kubectl, "llamajob", name, "-n", ns)
        operator_as_chart_sa.assert_alive()
        operator_as_chart_sa.assert_no_forbidden()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- operator log ---\n{operator_as_chart_sa.tail()}") from None


def test_upgrade_with_changed_values_changes_the_cluster(chart_release: Release, kubectl: Kubectl) -> None:
    g5, p5, trn1_2xl = (chart_release.pool(k) for k in ("g5-12xl-spot", "p5-48xl-spot", "trn1-2xl-od"))
    chart_release.upgrade(
        "pools.g5-12xl-spot.enabled=false",
        "pools.p5-48xl-spot.pricePerNodeHour=21.5",
        "pools.trn1-2xl-od.enabled=true",
    )
    wait_gone(kubectl, "acceleratorpool", g5)
    pools = release_pools(kubectl, chart_release)
    assert pools[p5]["spec"]["pricePerNodeHour"] == 21.5
    assert pools[trn1_2xl]["spec"]["instanceType"] == "trn1.2xlarge"
    assert set(pools) == {chart_release.pool(k) for k in DEFAULT_POOLS - {"g5-12xl-spot"} | {"trn1-2xl-od"}}


def test_uninstall_leaves_nothing_but_the_crds(chart_release: Release, kubectl: Kubectl) -> None:
    if chart_release.operator is not None:
        chart_release.operator.assert_no_forbidden()
    objects = chart_release.manifests()
    chart_release.uninstall()  # stops the operator first, as deleting its Deployment would
    left = []
    for obj in objects:
        ns = ["-n", chart_release.namespace] if obj["metadata"].get("namespace") else []
        proc = kubectl.run("get", obj["kind"], obj["metadata"]["name"], *ns, check=False)
        if "NotFound" not in proc.stderr:
            left.append(
                f"{obj['kind']}/{obj['metadata']['name']}: {proc.stdout.strip() or proc.stderr.strip()}"
            )
    assert not left, f"left behind (a finalizer nobody removes?): {left}"
    owned = f"app.kubernetes.io/instance={chart_release.name}"
    assert not kubectl.json("get", "all,sa,secrets,configmaps", "-n", chart_release.namespace, "-l", owned)[
        "items"
    ]
    release_secrets = f"owner=helm,name={chart_release.name}"
    assert not kubectl.json("get", "secrets", "-n", chart_release.namespace, "-l", release_secrets)["items"]
    for crd in ("llamajobs.llamaop.io", "acceleratorpools.llamaop.io"):
        kubectl.run("get", "crd", crd)
