"""kopf peering as the chart sets it up: the ClusterKopfPeering object, and the verbs to use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import Helm, installed_release, operator_with_chart_identity
from tests.kube import Kubectl, wait_for

pytestmark = pytest.mark.cluster


def test_operator_joins_the_charts_peering_with_the_charts_identity(
    helm: Helm, kubectl: Kubectl, cluster_env: dict[str, str], tmp_path: Path
) -> None:
    with installed_release(helm, kubectl, "peering.enabled=true", "replicaCount=0") as release:
        peering = release.fullname
        args = release.deployment()["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--peering={peering}" in args and "--standalone" not in args
        with operator_with_chart_identity(release, kubectl, cluster_env, tmp_path) as operator:

            def announced() -> dict[str, Any] | None:
                operator.assert_alive()
                status = kubectl.json("get", "clusterkopfpeering", peering).get("status") or {}
                return status or None

            try:
                peers = wait_for(announced, timeout=30, what=f"a peer in ClusterKopfPeering {peering}")
                assert len(peers) == 1
                operator.assert_no_forbidden()
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- operator log ---\n{operator.tail()}") from None
        # On a clean stop kopf removes itself from the peering (the patch verb on its own object).
        wait_for(
            lambda: not kubectl.json("get", "clusterkopfpeering", peering).get("status"),
            timeout=20,
            what="the operator to leave the peering",
        )
