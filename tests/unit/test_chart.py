"""The Helm chart as rendered: lint, the RBAC table, rollout settings, values, pools and image defaults.

Helm is the one built from its Go module into the cluster binaries' cache (seconds when cached).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llama_operator.api import AcceleratorPool
from llama_operator.catalog import builtin

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "llama-operator"
VERSIONS = dict(
    line.split("=", 1)
    for line in (ROOT / "hack/cluster/versions.env").read_text().splitlines()
    if "=" in line
)
# The local cluster's pools; the chart's enabled pools are the same set.
LOCAL_POOLS = ROOT / "hack" / "cluster" / "pools.yaml"

Docs = list[dict[str, Any]]


def helm_binary() -> Path:
    env = {**os.environ, "BUILD_ONLY": "helm"}
    build = ROOT / "hack" / "cluster" / "build.sh"
    bindir = subprocess.run([str(build)], env=env, check=True, capture_output=True, text=True).stdout
    return Path(bindir.strip()) / "helm"


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # No --kube-version: build.sh stamps helm's release ldflags (the Kubernetes version of its client-go).
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=60)


def render(helm: Path, *set_args: str, namespace: str = "ops") -> Docs:
    sets = [arg for value in set_args for arg in ("--set", value)]
    proc = run_helm(helm, "template", "rel", str(CHART), "-n", namespace, *sets)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def one(docs: Docs, kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def container(docs: Docs) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def pools(docs: Docs) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "AcceleratorPool"}


# ---------------------------------------------------------------- the helm build


def test_helm_knows_the_kubernetes_version_of_its_client(helm: Path, tmp_path: Path) -> None:
    """Without --kube-version, `helm template` assumes the Kubernetes version of the client-go it was built
    with (helm's release ldflags), not v1.20.0, which the chart's kubeVersion constraint refuses."""
    gomod = (ROOT / "hack/cluster/gomod/helm/go.mod").read_text()
    minor = re.search(r"k8s.io/client-go v0\.(\d+)\.", gomod)
    assert minor, "hack/cluster/gomod/helm/go.mod requires no k8s.io/client-go"
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {kube: '{{ .Capabilities.KubeVersion.Version }}'}\n"
    )
    proc = run_helm(helm, "template", "rel", str(chart))
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["data"]["kube"] == f"v1.{minor.group(1)}.0"


# ---------------------------------------------------------------- files


def test_chart_crds_are_copies_of_the_generated_ones() -> None:
    generated = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    copied = {p.name: p.read_bytes() for p in (CHART / "crds").glob("llamaop.io_*.yaml")}
    assert generated, "crds/ is empty: make crds"
    stale = sorted(
        name for name in generated.keys() | copied.keys() if generated.get(name) != copied.get(name)
    )
    assert not stale, f"charts/llama-operator/crds differs from crds/ in {stale}: run `make chart-crds`"


@pytest.mark.parametrize(
    "values",
    [
        (),
        ("peering.enabled=true",),
        ("serviceMonitor.enabled=true", "replicaCount=0", "workerImages.cpu=w:1"),
        ("watchNamespaces={team-a,team-b}",),
    ],
    ids=["defaults", "peering", "monitoring", "namespaced"],
)
def test_helm_lint_strict(helm: Path, values: tuple[str, ...]) -> None:
    sets = [arg for value in values for arg in ("--set", value)]
    proc = run_helm(helm, "lint", str(CHART), "--strict", *sets)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------- RBAC

# The operator's API calls (see clusterrole.yaml); a change here is a change of what users grant.
# Read everywhere, whichever namespaces the operator manages jobs in:
CLUSTER_RULES = {
    ("llamaop.io", "acceleratorpools"): {"get", "list", "watch"},
    ("llamaop.io", "acceleratorpools/status"): {"get", "patch"},
    ("", "nodes"): {"get", "list", "watch"},
    # Capacity: every pod of the cluster holds node resources (list and watch only, nothing more).
    ("", "pods"): {"list", "watch"},
    # kopf lists and watches CRDs to notice new resources; it never reads one by name.
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}
# Done in the namespaces whose jobs it manages:
JOB_RULES = {
    ("llamaop.io", "llamajobs"): {"get", "list", "watch", "patch"},
    ("llamaop.io", "llamajobs/status"): {"get", "patch"},
    # Workers go by label selector: DELETE on the collection needs deletecollection.
    ("", "pods"): {"get", "create", "delete", "deletecollection", "patch"},
    ("", "services"): {"get", "list", "watch", "create", "delete", "deletecollection"},
    ("", "serviceaccounts"): {"get", "list", "watch", "create", "delete", "deletecollection"},
    ("rbac.authorization.k8s.io", "roles"): {"get", "list", "watch", "create", "delete", "deletecollection"},
    ("rbac.authorization.k8s.io", "rolebindings"): {
        "get",
        "list",
        "watch",
        "create",
        "delete",
        "deletecollection",
    },
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
OPERATOR_RULES = {
    key: CLUSTER_RULES.get(key, set()) | JOB_RULES.get(key, set())
    for key in CLUSTER_RULES.keys() | JOB_RULES.keys()
}


def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(group, resource) -> verbs, for rules without resourceNames."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        if rule.get("resourceNames"):
            continue
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_cluster_role_grants_exactly_the_operators_verbs(helm: Path) -> None:
    docs = render(helm)
    role = one(docs, "ClusterRole")
    assert grants(role) == OPERATOR_RULES
    assert not any("*" in r["verbs"] or "*" in r["resources"] or "*" in r["apiGroups"] for r in role["rules"])
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = one(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "ops"}
    ]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_watching_some_namespaces_grants_job_verbs_only_there_and_pod_reads_everywhere(helm: Path) -> None:
    docs = render(helm, "watchNamespaces={team-a,team-b}")
    assert [a for a in container(docs)["args"] if "namespace" in a] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    assert grants(roles["rel-llama-operator"]) == CLUSTER_RULES
    assert grants(roles["rel-llama-operator-jobs"]) == JOB_RULES
    cluster_binding = one(docs, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == "rel-llama-operator"
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "rel-llama-operator-jobs",
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "ops"}]


def test_all_namespaces_is_the_default_and_peering_refuses_some_namespaces(helm: Path) -> None:
    args = container(render(helm))["args"]
    assert "--all-namespaces" in args and not [a for a in args if a.startswith("--namespace")]
    proc = run_helm(helm, "template", "rel", str(CHART), "--set", "peering.enabled=true",
                    "--set", "watchNamespaces={a}")  # fmt: skip
    assert proc.returncode != 0 and "ClusterKopfPeering" in proc.stderr
    bad = run_helm(helm, "template", "rel", str(CHART), "--set", "watchNamespaces={Not_A_Namespace}")
    assert bad.returncode != 0 and "watchNamespaces" in bad.stderr


def test_peering_adds_only_its_own_peering_object(helm: Path) -> None:
    docs = render(helm, "peering.enabled=true", "peering.name=llamaop")
    role = one(docs, "ClusterRole")
    peering = {k: v for k, v in grants(role).items() if k[0] == "kopf.dev"}
    assert peering == {("kopf.dev", "clusterkopfpeerings"): {"list", "watch"}}
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "resourceNames": ["llamaop"],
         "verbs": ["patch"]}
    ]  # fmt: skip
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == "llamaop"
    assert (CHART / "crds" / "kopf.dev_clusterkopfpeerings.yaml").exists()


# ---------------------------------------------------------------- the Deployment


def test_default_is_one_standalone_replica_replaced_with_recreate(helm: Path) -> None:
    docs = render(helm)
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    args = container(docs)["args"]
    assert args[:3] == ["run", "--all-namespaces", "--standalone"]
    assert not any(a.startswith("--peering") for a in args)
    assert not [d for d in docs if d["kind"] == "ClusterKopfPeering"]


def test_peering_rolls_with_surge_and_no_standalone(helm: Path) -> None:
    docs = render(helm, "peering.enabled=true")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    args = container(docs)["args"]
    assert "--standalone" not in args
    assert "--peering=rel-llama-operator" in args


def test_ports_probes_and_service_follow_the_values(helm: Path) -> None:
    docs = render(helm, "metrics.port=9400", "health.port=9401", "metrics.service.port=80")
    c = container(docs)
    assert {"--metrics-port=9400", "--health-port=9401"} <= set(c["args"])
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9400, "health": 9401}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 80, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_worker_images_become_operator_flags(helm: Path) -> None:
    args = container(render(helm, "workerImages.cpu=reg/cpu:1", "workerImages.neuron=reg/neuron:1"))["args"]
    assert {"--cpu-image=reg/cpu:1", "--neuron-image=reg/neuron:1"} <= set(args)
    assert not any(a.startswith("--cuda-image") for a in args)


def test_service_monitor_is_off_by_default(helm: Path) -> None:
    assert not [d for d in render(helm) if d["kind"] == "ServiceMonitor"]
    monitor = one(render(helm, "serviceMonitor.enabled=true"), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("replicaCount=2", "replicaCount"),
        ("bogus=1", "bogus"),
        ("pools.p5-48xl-spot.pricePerNodeHour=cheap", "pricePerNodeHour"),
        ("pools.p5-48xl-spot.capacityType=preemptible", "capacityType"),
        ("pools.new-pool.enabled=true", "instanceType"),
        ("metrics.port=80", "metrics"),
    ],
)
def test_schema_refuses_bad_values(helm: Path, value: str, message: str) -> None:
    proc = run_helm(helm, "template", "rel", str(CHART), "--set", value)
    assert proc.returncode != 0
    assert message in proc.stderr


# ---------------------------------------------------------------- pools


def local_pools() -> list[dict[str, Any]]:
    return list(yaml.safe_load(LOCAL_POOLS.read_text())["pools"])


def test_default_pools_are_the_local_clusters_and_select_exactly_its_nodes(helm: Path) -> None:
    rendered = pools(render(helm))
    spec = importlib.util.spec_from_file_location("nodes", ROOT / "hack" / "cluster" / "nodes.py")
    assert spec and spec.loader
    nodes_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nodes_py)
    nodes = nodes_py.render(LOCAL_POOLS)
    assert set(rendered) == {p["name"] for p in local_pools()}
    for name, pool in rendered.items():
        selector = pool["spec"]["nodeSelector"].items()
        selected = {n["metadata"]["name"] for n in nodes if selector <= n["metadata"]["labels"].items()}
        expected = {
            n["metadata"]["name"] for n in nodes if n["metadata"]["labels"]["llamaop.io/pool"] == name
        }
        assert selected == expected, name


def test_every_catalog_instance_type_has_a_valid_pool_entry(helm: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["pools"]
    catalog = builtin()
    assert {v["instanceType"] for v in values.values()} == set(catalog.instance_types)
    everything = pools(render(helm, *(f"pools.{key}.enabled=true" for key in values)))
    assert len(everything) == len(values)
    for name, doc in everything.items():
        AcceleratorPool.model_validate(doc)  # the operator's own model accepts it
        itype = catalog.instance_types[doc["spec"]["instanceType"]]
        if itype.price is None:
            assert "pricePerNodeHour" in doc["spec"], f"{name}: the catalog has no price for it"


def test_pools_can_be_disabled_enabled_repriced_and_prefixed(helm: Path) -> None:
    rendered = pools(
        render(
            helm,
            "poolNamePrefix=team-a-",
            "pools.g5-12xl-spot.enabled=false",
            "pools.trn1-2xl-od.enabled=true",
            "pools.p5-48xl-spot.pricePerNodeHour=21.5",
            "pools.cpu-m7i-od.nodeSelector.pool=cpu",
        )
    )
    expected = {p["name"] for p in local_pools()} - {"g5-12xl-spot"} | {"trn1-2xl-od"}
    assert set(rendered) == {f"team-a-{name}" for name in expected}
    assert rendered["team-a-p5-48xl-spot"]["spec"]["pricePerNodeHour"] == 21.5
    assert rendered["team-a-cpu-m7i-od"]["spec"]["nodeSelector"] == {"pool": "cpu"}


def test_pools_mirror_the_examples() -> None:
    examples = [
        doc
        for path in sorted((ROOT / "examples" / "pools").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "AcceleratorPool"
    ]
    if not examples:
        pytest.skip("examples/pools/ has no AcceleratorPools yet")
    values = yaml.safe_load((CHART / "values.yaml").read_text())["pools"]
    for example in examples:
        name = example["metadata"]["name"]
        assert name in values and values[name]["enabled"], f"{name}: no enabled chart pool of that name"
        # nodeSelector differs on purpose: examples select the local cluster's llamaop.io/pool label,
        # the chart the labels every EKS/Karpenter node carries.
        mine = {k: v for k, v in values[name].items() if k not in ("enabled", "nodeSelector")}
        theirs = {k: v for k, v in example["spec"].items() if k != "nodeSelector"}
        assert mine == theirs, name


# ---------------------------------------------------------------- image


def dockerfile() -> str:
    return (ROOT / "operator" / "Dockerfile").read_text()


def test_image_defaults_match_the_dockerfile(helm: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert version and chart["appVersion"] == version.group(1)
    assert container(render(helm))["image"] == f"llama-operator:{chart['appVersion']}"
    text = dockerfile()
    arg = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert int(arg["UID"]) == values["runAsUser"] and int(arg["GID"]) == values["runAsGroup"]
    assert re.search(r"^USER \$\{UID\}:\$\{GID\}$", text, re.M)
    assert 'ENTRYPOINT ["llamaop"]' in text
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim$", text, re.M)
    build_script = (ROOT / "hack" / "kind" / "images.sh").read_text()
    assert "llama-operator:$version" in build_script
