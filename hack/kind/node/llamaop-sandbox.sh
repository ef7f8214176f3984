#!/bin/bash
# Run before containerd starts (containerd.service.d/10-llamaop.conf). Where the machine's capability
# bounding set lacks CAP_SYS_RESOURCE (capability 24), no process may lower its OOM score, so a
# container asking for -997 (the kubelet's Guaranteed pods) would fail to start: containerd then keeps
# every container's score at or above its own (restrict_oom_score_adj, which kind's entrypoint sets
# only for rootless nodes).
set -euo pipefail
bounding=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
if (((0x$bounding >> 24 & 1) == 0)); then
  sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml
fi
