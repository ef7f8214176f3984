"""The chart with watchNamespaces: the operator, as the chart's ServiceAccount, manages the jobs of one
namespace, reads pods of all of them (list and watch only), and counts the GPUs other namespaces hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.capacity import (
    GPU,
    apply_all,
    delete_and_wait,
    foreign_pod,
    job_status,
    train_job,
    wait_bound,
    wait_decided,
    without_other_operators,
)
from tests.cluster.conftest import (
    Helm,
    create_restricted_namespace,
    installed_release,
    operator_with_chart_identity,
)
from tests.kube import Kubectl, wait_for

pytestmark = pytest.mark.cluster


def test_a_namespaced_chart_counts_other_namespaces_pods_with_only_list_and_watch_on_them(
    helm: Helm, kubectl: Kubectl, cluster_env: dict[str, str], tmp_path: Path
) -> None:
    jobs = create_restricted_namespace(kubectl, "t-helm-ns-jobs")
    other = create_restricted_namespace(kubectl, "t-helm-ns-other")
    try:
        with (
            without_other_operators(),
            installed_release(helm, kubectl, f"watchNamespaces={{{jobs}}}", "replicaCount=0") as release,
        ):
            sa = release.deployment()["spec"]["template"]["spec"]["serviceAccountName"]
            who = f"--as=system:serviceaccount:{release.namespace}:{sa}"

            def can(*args: str) -> bool:
                return kubectl.run("auth", "can-i", *args, who, check=False).stdout.strip() == "yes"

            assert can("list", "pods", "-A") and can("watch", "pods", "-A")
            assert can("create", "pods", "-n", jobs) and can("patch", "llamajobs", "-n", jobs)
            assert not can("create", "pods", "-n", other) and not can("get", "pods", "-n", other)
            assert not can("list", "llamajobs", "-A") and not can("delete", "pods", "-n", other)

            p5 = release.pool("p5-48xl-spot")
            hold = [foreign_pod(f"hold-{i}", {GPU: "8"}, node=f"p5-48xl-spot-{i}") for i in range(2)]
            # Restricted namespaces admit only pods that drop privileges; the holders are plain pause pods.
            for pod in hold:
                pod["spec"]["securityContext"] = {"runAsNonRoot": True, "runAsUser": 65535,
                                                  "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
                pod["spec"]["containers"][0]["securityContext"] = {
                    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}
                }  # fmt: skip
            apply_all(kubectl, hold, other)
            wait_bound(kubectl, other)
            with operator_with_chart_identity(release, kubectl, cluster_env, tmp_path) as operator:
                try:
                    assert f"--namespace={jobs}" in operator.args
                    kubectl.apply(train_job("j", pool=p5, devices=1, nodes=1), jobs)
                    st = wait_decided(kubectl, jobs, "j")
                    assert (st["phase"], st["reason"]) == ("Queued", "NoCapacity"), st
                    delete_and_wait(kubectl, other, "pods")
                    wait_for(
                        lambda: job_status(kubectl, jobs, "j").get("phase") == "Running", what="j Running"
                    )
                    wait_bound(kubectl, jobs, "llamaop.io/job=j")
                    operator.assert_no_forbidden()
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n--- operator log ---\n{operator.tail()}") from None
                finally:
                    delete_and_wait(kubectl, jobs, "llamajobs")
    finally:
        for ns in (jobs, other):
            kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
