"""The kind tier's parts that need no cluster: the config run.sh creates the cluster with, the chart
values for kind, the pod network's manifest, the runc wrapper, and the CI entry's skip line.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_chart import CHART, VERSIONS, helm, run_helm  # noqa: F401 (helm: a fixture)
from tests.workers.node import NODE_SELECTOR, TAINT_KEY

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
KIND = ROOT / "hack" / "kind"
NODE_SH = ROOT / "hack" / "workers" / "node.sh"


def kind_config(image: str = "") -> dict[str, Any]:
    proc = subprocess.run(
        [str(KIND / "run.sh"), "config", image], capture_output=True, text=True, timeout=60, check=True
    )
    return yaml.safe_load(proc.stdout)


def patches(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    docs = [yaml.safe_load(p) for p in config.get("kubeadmConfigPatches", [])]
    return {d["kind"]: d for d in docs}


def workers_tier_labels() -> dict[str, str]:
    """The --node-labels of the workers tier's real kubelet, as hack/workers/node.sh sets them."""
    text = NODE_SH.read_text()
    parts = re.findall(r'labels\+?="([^"]+)"', text)
    assert parts, "node.sh sets the kubelet's labels"
    pairs = ",".join(parts).replace(",,", ",").strip(",").split(",")
    return dict(p.split("=", 1) for p in pairs)


def test_kind_cluster_is_a_control_plane_and_one_worker_that_is_the_workers_tiers_real_node() -> None:
    config = kind_config()
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]
    worker = config["nodes"][1]
    assert worker["labels"] == workers_tier_labels()
    assert NODE_SELECTOR.items() <= worker["labels"].items()
    join = yaml.safe_load(worker["kubeadmConfigPatches"][0])
    assert join["kind"] == "JoinConfiguration"
    assert [t["key"] for t in join["nodeRegistration"]["taints"]] == [TAINT_KEY]
    # Checkpoint volumes: a directory of this machine, mounted into the worker.
    (mount,) = worker["extraMounts"]
    assert mount["containerPath"] == "/mnt/llamaop-volumes" and Path(mount["hostPath"]).is_absolute()
    assert patches(config)["KubeletConfiguration"]["failCgroupV1"] is False
    # The workers tier's host rules own 10.244.0.0/24; kind's pods must not look like that bridge's.
    node_sh_cidr = re.search(r"^pod_cidr=(\S+)", NODE_SH.read_text(), re.M)
    assert node_sh_cidr
    ours = ipaddress.ip_network(config["networking"]["podSubnet"])
    assert not ours.overlaps(ipaddress.ip_network(node_sh_cidr.group(1)))


def test_the_offline_node_image_gets_the_pinned_etcd_and_coredns_and_kinds_own_image_does_not() -> None:
    offline = patches(kind_config("localhost/llamaop-kind-node:v1.35.4-0123456789ab"))
    cluster = offline["ClusterConfiguration"]
    assert cluster["etcd"]["local"]["imageTag"] == VERSIONS["ETCD_VERSION"]
    assert cluster["dns"]["imageTag"] == f"v{VERSIONS['COREDNS_VERSION']}"
    assert "ClusterConfiguration" not in patches(kind_config())
    assert "ClusterConfiguration" not in patches(kind_config("kindest/node:v1.37.0"))


def test_kind_values_put_the_operator_on_the_worker(helm: Path) -> None:  # noqa: F811
    proc = run_helm(helm, "template", "rel", str(CHART), "-f", str(KIND / "values.yaml"))
    assert proc.returncode == 0, proc.stderr
    deployment = next(d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    labels = kind_config()["nodes"][1]["labels"]
    assert spec["nodeSelector"].items() <= {**labels, "kubernetes.io/os": "linux"}.items()
    assert any(t["key"] == TAINT_KEY and t["operator"] == "Exists" for t in spec["tolerations"])
    assert spec["containers"][0]["imagePullPolicy"] == "Never"


def test_pod_network_manifest_carries_kinds_markers_and_an_env_list_to_patch() -> None:
    text = (KIND / "node" / "default-cni.yaml").read_text()
    # kind renders the file as a template, and appends CONTROL_PLANE_ENDPOINT to containers[0].env.
    assert "would you kindly template this file" in text and "would you kindly patch this file" in text
    docs = [d for d in yaml.safe_load_all(text) if d]
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"] for e in container["env"]}
    assert {"NODE_NAME", "POD_SUBNET", "CNI_CONF_DIR"} <= env
    assert container["image"] == "localhost/llamaop-kindnet:KINDNET_TAG"  # node-image.sh fills the tag
    # The ClusterRole grants what the program reads and nothing more.
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]


def wrapper_caps() -> list[str]:
    """The wrapper's table of capability names, by number."""
    text = (KIND / "runc-wrapper").read_text()
    table = re.search(r'^names="([^"]+)"', text, re.M | re.S)
    assert table
    return table.group(1).split()


CAPS = wrapper_caps()


def test_the_wrappers_capability_table_is_numbered_as_linux_numbers_them() -> None:
    # linux/capability.h: 21 CAP_SYS_ADMIN, 24 CAP_SYS_RESOURCE, 40 CAP_CHECKPOINT_RESTORE (the last, 5.9+).
    assert (CAPS[0], CAPS[21], CAPS[24], CAPS[-1]) == (
        "CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_CHECKPOINT_RESTORE",
    )  # fmt: skip
    assert len(CAPS) == 41 == len(set(CAPS))


def bounding_set() -> set[str]:
    status = Path("/proc/self/status").read_text()
    mask = int(re.search(r"^CapBnd:\s*([0-9a-f]+)", status, re.M).group(1), 16)  # type: ignore[union-attr]
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    return {name for i, name in enumerate(CAPS[: last + 1]) if mask >> i & 1}


@pytest.mark.skipif(not Path("/proc/self/status").exists() or not shutil.which("jq"), reason="Linux with jq")
def test_runc_wrapper_drops_exactly_the_capabilities_outside_the_bounding_set(tmp_path: Path) -> None:
    fake = tmp_path / "runc"
    fake.write_text('#!/bin/sh\necho "runc $*"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    every = CAPS[: int(Path("/proc/sys/kernel/cap_last_cap").read_text()) + 1]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"capabilities": {"bounding": every}}}))
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["sh"], "capabilities": {"effective": every}}))
    env = {**os.environ, "LLAMAOP_REAL_RUNC": str(fake)}

    def wrapper(*args: str) -> str:
        proc = subprocess.run([str(KIND / "runc-wrapper"), *args], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert wrapper("--root", "/run/x", "create", "--bundle", str(bundle), "c1") == (
        f"runc --root /run/x create --bundle {bundle} c1\n"
    )
    kept = set(bounding_set())
    config = json.loads((bundle / "config.json").read_text())
    assert set(config["process"]["capabilities"]["bounding"]) == kept
    wrapper("exec", f"--process={process}", "c1")
    assert set(json.loads(process.read_text())["capabilities"]["effective"]) == kept
    # Everything else passes through untouched.
    assert wrapper("state", "c1") == "runc state c1\n"


def test_kind_ci_entry_says_in_one_line_why_it_skips() -> None:
    env = {**os.environ, "LLAMAOP_SKIP_KIND": "1"}
    proc = subprocess.run([str(KIND / "maybe-run.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["kind: skipped, LLAMAOP_SKIP_KIND is set"]


def test_kind_scripts_parse() -> None:
    scripts = ("run.sh", "docker.sh", "node-image.sh", "images.sh", "maybe-run.sh", "node/llamaop-sandbox.sh")
    for script in scripts:
        assert subprocess.run(["bash", "-n", str(KIND / script)]).returncode == 0, script
    assert subprocess.run(["sh", "-n", str(KIND / "runc-wrapper")]).returncode == 0
