#!/usr/bin/env bash
# The local cluster's real node (the workers tier): containerd + runc + CNI plugins from Debian, the
# kubelet and kube-proxy built from the pinned Kubernetes module, CoreDNS built from its module. All run
# on this machine as plain processes (there is no systemd here), registered with the kwokctl cluster
# that hack/cluster.sh starts. Usually driven by `hack/cluster.sh up --workers` / `down`.
#
#   hack/workers/node.sh up                  start what is not running (warm: seconds)
#   hack/workers/node.sh down                stop the pods, the node's processes and its network
#   hack/workers/node.sh status              processes and the Node's conditions
#   hack/workers/node.sh resources K=N ...   set extended resources in the Node's status
#                                            (nvidia.com/gpu=8 aws.amazon.com/neuron=16; K=0 or K- removes)
#   hack/workers/node.sh volume NS NAME [SIZE] [UID]  a PersistentVolume + bound claim NS/NAME on this node
#   hack/workers/node.sh ctr ARGS...         containerd's ctr on the node's socket, namespace k8s.io
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/hack/workers
source "$root/hack/cluster/versions.env"
source "$here/images.env"

bindir=$("$root/hack/cluster/build.sh" --print-bindir)
cache_root=$(dirname "$(dirname "$bindir")")
cluster=${LLAMAOP_CLUSTER_NAME:-llamaop}
export KWOK_WORKDIR=${KWOK_WORKDIR:-$cache_root/kwok}
cluster_dir=$KWOK_WORKDIR/clusters/$cluster
kubeconfig=$cluster_dir/kubeconfig.yaml
# `resources` and `volume` also serve another cluster's real node (hack/kind/run.sh: kind's worker):
# its kubeconfig, and a directory of this machine mounted into that node (seen there at the second path).
kubeconfig=${LLAMAOP_WORKER_KUBECONFIG:-$kubeconfig}
volumes=${LLAMAOP_VOLUMES_DIR:-}
node_volumes=${LLAMAOP_VOLUMES_NODE_DIR:-$volumes}
export PATH=$bindir:$PATH

# Names and addresses (one node per machine: the ports and the bridge are the machine's).
node=${LLAMAOP_WORKER_NODE:-llamaop-worker}
bridge=llamaop0
pod_cidr=10.244.0.0/24
gateway=10.244.0.1        # the bridge's address on the host: CoreDNS listens here
taint_key=llamaop.io/real-node
# State that survives `down` (imported images, certificates) lives in the cache; sockets and pids in /run.
state=$cache_root/workers
run=/run/llamaop
sock=$run/containerd/containerd.sock
logs=$state/logs

log() { printf '[workers] %s\n' "$*" >&2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
kc() { kubectl --kubeconfig "$kubeconfig" "$@"; }
ctr_() { ctr --address "$sock" --namespace k8s.io "$@"; }

# ---- processes ---------------------------------------------------------------------------------
pidof_() { # name -> pid of our running process, if any (checks the binary, so a reused pid is not ours)
  local f=$run/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ -r /proc/$pid/cmdline && $(tr '\0' ' ' <"/proc/$pid/cmdline") == *"$2"* ]] && echo "$pid"
}

start() { # name match-string command...
  local name=$1 match=$2; shift 2
  if pidof_ "$name" "$match" >/dev/null; then return 0; fi
  mkdir -p "$run" "$logs"
  # setsid: the node outlives the shell that started it; each start has a fresh log beside the state.
  setsid "$@" >"$logs/$name.log" 2>&1 </dev/null 8>&- &
  echo $! >"$run/$name.pid"
}

stop() { # name match-string
  local pid i
  pid=$(pidof_ "$1" "$2") || { rm -f "$run/$1.pid"; return 0; }
  kill "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$run/$1.pid"
}

wait_until() { # seconds what command...
  local secs=$1 what=$2 i; shift 2
  for ((i = 0; i < secs * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "timed out after ${secs}s waiting for $what; logs under $logs"; return 1
}

# ---- certificates ------------------------------------------------------------------------------
# Client certificates signed by the kwokctl cluster's CA: the API server's Node authorizer knows the
# kubelet by CN system:node:<name> in group system:nodes, and RBAC binds system:kube-proxy already.
client_cert() { # name cn org
  local name=$1 cn=$2 org=$3 dir=$state/pki
  [[ -f $dir/$name.crt ]] && return 0
  mkdir -p "$dir"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$dir/$name.key" -subj "/O=$org/CN=$cn" \
    -out "$dir/$name.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$cluster_dir/pki/ca.crt" -CAkey "$cluster_dir/pki/ca.key" \
    -CAcreateserial -days 3650 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

kubeconfig_for() { # name -> path
  local f=$state/$1.kubeconfig server
  server=$(kc config view -o jsonpath='{.clusters[0].cluster.server}')
  cat >"$f" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: $cluster
  cluster: {server: "$server", certificate-authority: $cluster_dir/pki/ca.crt}
users:
- name: $1
  user: {client-certificate: $state/pki/$1.crt, client-key: $state/pki/$1.key}
contexts:
- name: $1
  context: {cluster: $cluster, user: $1}
current-context: $1
YAML
  echo "$f"
}

# A new cluster has a new CA: everything signed by the old one goes, and so do the processes using it.
check_ca() {
  local sum
  sum=$(sha256sum "$cluster_dir/pki/ca.crt" | cut -c1-16)
  if [[ $(cat "$state/pki/ca.sum" 2>/dev/null) != "$sum" ]]; then
    stop kubelet "$bindir/kubelet"; stop kube-proxy "$bindir/kube-proxy"; stop coredns "$bindir/coredns"
    rm -rf "$state/pki" "$state/kubelet/pki"
    mkdir -p "$state/pki"; echo "$sum" >"$state/pki/ca.sum"
  fi
}

# ---- network -----------------------------------------------------------------------------------
network_up() {
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
  fi
  # The bridge plugin would add the gateway at the first pod; CoreDNS needs it before that.
  [[ $(ip -4 addr show dev "$bridge") == *"inet $gateway/"* ]] || ip addr add "$gateway/24" dev "$bridge"
  ip link set "$bridge" up
  # Forwarding for pod -> Service IP -> pod; br_netfilter so that kube-proxy's DNAT applies on the bridge.
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  # Pods talk to each other, to this host and to nothing else: drop what they would forward elsewhere.
  iptables -N LLAMAOP-FORWARD 2>/dev/null || true
  iptables -C FORWARD -j LLAMAOP-FORWARD 2>/dev/null || iptables -I FORWARD 1 -j LLAMAOP-FORWARD
  iptables -F LLAMAOP-FORWARD
  iptables -A LLAMAOP-FORWARD -s "$pod_cidr" -o "$bridge" -j ACCEPT
  iptables -A LLAMAOP-FORWARD -s "$pod_cidr" -j DROP
  iptables -A LLAMAOP-FORWARD -d "$pod_cidr" ! -i "$bridge" -j DROP
  mkdir -p "$state/cni/net.d"
  cat >"$state/cni/net.d/10-llamaop.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "llamaop",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$run/cni-ipam",
              "ranges": [[{"subnet": "$pod_cidr", "gateway": "$gateway"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

network_down() {
  local ns
  for ns in /run/netns/cni-*; do
    [[ -e $ns ]] || continue
    ip netns delete "$(basename "$ns")" 2>/dev/null || true
  done
  ip link delete "$bridge" 2>/dev/null || true
  rm -rf "$run/cni-ipam"
  # What the kubelet itself leaves in iptables (KUBE-FIREWALL, the canaries); kube-proxy --cleanup took
  # its own rules already. This machine runs no other kubelet.
  local cmd table chain
  for cmd in iptables ip6tables; do
    for table in filter nat mangle; do
      $cmd -t "$table" -S 2>/dev/null | awk '$1 == "-A" && $0 ~ / -j KUBE-/ {$1 = "-D"; print}' |
        while read -r rule; do eval "$cmd -t $table $rule" 2>/dev/null || true; done
      for chain in $($cmd -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
        $cmd -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $($cmd -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
        $cmd -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
  if iptables -C FORWARD -j LLAMAOP-FORWARD 2>/dev/null; then
    iptables -D FORWARD -j LLAMAOP-FORWARD; iptables -F LLAMAOP-FORWARD; iptables -X LLAMAOP-FORWARD
  fi
}

# ---- containerd --------------------------------------------------------------------------------
containerd_up() {
  mkdir -p "$state/containerd" "$run/containerd"
  # Debian's runc; the pause image is our own (hack/workers/images.sh). restrict_oom_score_adj: this
  # sandbox lacks CAP_SYS_RESOURCE, so no container may get a lower OOM score than containerd's.
  cat >"$state/containerd/config.toml" <<TOML
version = 2
root = "$state/containerd/root"
state = "$run/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$state/containerd/certs.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "$state/containerd/opt"
TOML
  mkdir -p "$state/containerd/certs.d"
  # No image registry is reachable from here, and none may be contacted: every pull goes to a closed
  # port on loopback and fails at once. Pods use images imported by hack/workers/images.sh.
  start containerd "containerd --config" env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
    NO_PROXY= containerd --config "$state/containerd/config.toml"
  wait_until 30 containerd ctr --address "$sock" version
}

# Containers left by a kubelet that is gone: kill their tasks (and so their shims), then containerd.
containerd_down() {
  local c
  if pidof_ containerd "containerd --config" >/dev/null; then
    for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    for c in $(ctr_ containers ls -q 2>/dev/null); do
      for _ in 1 2 3 4 5 6 7 8 9 10; do ctr_ tasks delete -f "$c" >/dev/null 2>&1 && break; sleep 0.2; done
      ctr_ containers delete "$c" >/dev/null 2>&1 || true
    done
  fi
  stop containerd "containerd --config"
  # Shims of containers containerd no longer knew about (a crash): their pid files say which.
  local f
  for f in "$run"/containerd/state/io.containerd.runtime.v2.task/k8s.io/*/{init,shim}.pid; do
    [[ -f $f ]] && kill -9 "$(<"$f")" 2>/dev/null || true
  done
  # No such mounts is the usual case: grep's exit 1 must not end the script under pipefail.
  { grep -o " $run/containerd/state[^ ]*\| $state/containerd/root/[^ ]*\| $state/kubelet[^ ]*" /proc/mounts || true; } |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$run/containerd/state"
}

# ---- DNS, kube-proxy, kubelet -------------------------------------------------------------------
coredns_up() {
  mkdir -p "$state/coredns"
  # cluster.local from the API server; every other name is NXDOMAIN (pods have no upstream resolver).
  cat >"$state/coredns/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $gateway
    errors
    ready 127.0.0.1:10181
    health 127.0.0.1:10180
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
.:53 {
    bind $gateway
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
  start coredns "$bindir/coredns" "$bindir/coredns" -conf "$state/coredns/Corefile"
}

kube_proxy_up() {
  client_cert kube-proxy system:kube-proxy system:node-proxier
  cat >"$state/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $(kubeconfig_for kube-proxy)}
hostnameOverride: $node
mode: iptables
clusterCIDR: $pod_cidr
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the host's conntrack sysctls as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {minSyncPeriod: 1s, syncPeriod: 30s}
YAML
  start kube-proxy "$bindir/kube-proxy" "$bindir/kube-proxy" --config "$state/kube-proxy.yaml"
}

node_ip() { # the API server's advertised address is one of this machine's own
  kc get endpointslices -n default -l kubernetes.io/service-name=kubernetes \
    -o jsonpath='{.items[0].endpoints[0].addresses[0]}'
}

kubelet_up() {
  client_cert kubelet "system:node:$node" system:nodes
  local ip; ip=$(node_ip)
  mkdir -p "$state/kubelet"
  cat >"$state/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 and no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$sock
address: $ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $cluster_dir/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$gateway]
resolvConf: ""
registerWithTaints: [{key: $taint_key, value: "true", effect: NoSchedule}]
failSwapOn: false
maxPods: 32
serializeImagePulls: false
# The images cannot be pulled again: never collect them; evict only when the disk is really full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
nodeStatusReportFrequency: 10s
YAML
  local labels="llamaop.io/pool=cpu-local,node.kubernetes.io/instance-type=local,karpenter.sh/capacity-type=on-demand"
  labels+=",llamaop.io/real-node=true,topology.kubernetes.io/region=local,topology.kubernetes.io/zone=local-a"
  start kubelet "$bindir/kubelet" "$bindir/kubelet" --config "$state/kubelet.yaml" \
    --kubeconfig "$(kubeconfig_for kubelet)" --root-dir "$state/kubelet" --hostname-override "$node" \
    --node-ip "$ip" --node-labels "$labels" --v 1
}

# The class of the checkpoint volumes `volume` makes (static local volumes on this node).
storage_class() {
  kc apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: llamaop-local}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
reclaimPolicy: Retain
YAML
}

up() {
  local t0=$SECONDS t_containerd t_kubelet
  [[ -f $kubeconfig ]] || { log "cluster '$cluster' is not running: start it with hack/cluster.sh up --workers"; exit 1; }
  # One real node per machine: it serves the cluster that started it last.
  if [[ -f $run/cluster && $(<"$run/cluster") != "$cluster_dir" ]]; then
    log "moving the node from $(<"$run/cluster") to cluster '$cluster'"
    down --any
  fi
  mkdir -p "$run"; echo "$cluster_dir" >"$run/cluster"
  "$root/hack/setup-debian.sh" workers
  BUILD_ONLY="kubelet kube-proxy coredns" "$root/hack/cluster/build.sh" >/dev/null
  check_ca
  network_up
  t_containerd=$EPOCHREALTIME
  containerd_up
  t_containerd=$(since "$t_containerd")
  "$here/images.sh" import
  coredns_up
  kube_proxy_up
  t_kubelet=$EPOCHREALTIME
  kubelet_up
  wait_until 120 "node $node to be Ready" kc wait --for=condition=Ready "node/$node" --timeout=1s
  t_kubelet=$(since "$t_kubelet")
  storage_class
  wait_until 30 "CoreDNS" curl -fsS http://127.0.0.1:10181/ready
  log "node $node Ready in $((SECONDS - t0))s (containerd start ${t_containerd}s, kubelet start to Ready ${t_kubelet}s)"
}

down() {
  local pids
  pids=$(ls "$run"/*.pid 2>/dev/null || true)
  [[ -n $pids ]] || ip link show "$bridge" >/dev/null 2>&1 || return 0
  if [[ ${1:-} != --any && -f $run/cluster && $(<"$run/cluster") != "$cluster_dir" ]]; then
    log "the node belongs to $(<"$run/cluster"); leaving it running"; return 0
  fi
  # Let the kubelet stop the pods (and their network) while it and the API server still run.
  if pidof_ kubelet "$bindir/kubelet" >/dev/null && kc get --raw /readyz >/dev/null 2>&1; then
    kc delete pods -A --field-selector "spec.nodeName=$node" --grace-period=0 --force --wait=false \
      >/dev/null 2>&1 || true
    wait_until 15 "the pods to stop" bash -c "[[ -z \$(ctr --address $sock -n k8s.io tasks ls -q) ]]" || true
  fi
  stop kubelet "$bindir/kubelet"
  if pidof_ kube-proxy "$bindir/kube-proxy" >/dev/null; then
    stop kube-proxy "$bindir/kube-proxy"
    "$bindir/kube-proxy" --cleanup >/dev/null 2>&1 || true   # removes its iptables rules
  fi
  stop coredns "$bindir/coredns"
  containerd_down
  network_down
  kc delete node "$node" --wait=false >/dev/null 2>&1 || true
  rm -rf "$state/volumes" "$run/cluster"
  log "node $node stopped"
}

status() {
  local n
  for n in containerd:"containerd --config" coredns:"$bindir/coredns" kube-proxy:"$bindir/kube-proxy" \
    kubelet:"$bindir/kubelet"; do
    printf '%-11s %s\n' "${n%%:*}" "$(pidof_ "${n%%:*}" "${n#*:}" >/dev/null && echo running || echo stopped)"
  done
  kc get node "$node" -o wide 2>/dev/null || echo "node $node is not registered"
}

# Extended resources in the Node's status (what a device plugin would report): the operator's GPU or
# Neuron placements then land real CPU pods here. K=0 or K- removes K.
resources() {
  local ops=() kv k v path
  for kv in "$@"; do
    k=${kv%%=*}; v=${kv#*=}; [[ $kv == *=* ]] || { k=${kv%-}; v=0; }
    path=${k//\//\~1}
    if [[ $v == 0 ]]; then
      [[ -n $(kc get node "$node" -o jsonpath="{.status.capacity.${k//./\\.}}") ]] || continue
      ops+=("{\"op\":\"remove\",\"path\":\"/status/capacity/$path\"}" "{\"op\":\"remove\",\"path\":\"/status/allocatable/$path\"}")
    else
      ops+=("{\"op\":\"add\",\"path\":\"/status/capacity/$path\",\"value\":\"$v\"}"
        "{\"op\":\"add\",\"path\":\"/status/allocatable/$path\",\"value\":\"$v\"}")
    fi
  done
  ((${#ops[@]})) || return 0
  local IFS=,
  kc patch node "$node" --subresource=status --type=json -p "[${ops[*]}]" >/dev/null
  kc get node "$node" -o jsonpath='{.status.allocatable}'; echo
}

# A volume for a pod's checkpoints: restricted pods cannot mount hostPath, but they can mount a claim
# bound to a local PersistentVolume (a directory here) pinned to this node. The directory belongs to
# UID (default 1000, the worker image's user) and the claim is deleted with its namespace.
volume() {
  local ns=$1 name=$2 size=${3:-1Gi} uid=${4:-1000} dir pv
  pv=llamaop-$ns-$name
  dir=${volumes:-$state/volumes}/$pv
  mkdir -p "$dir"; chown "$uid:$uid" "$dir"; chmod 0775 "$dir"
  # Another cluster's real node (kind's) has had no `up` here to create the class.
  [[ -z ${LLAMAOP_WORKER_KUBECONFIG:-} ]] || storage_class
  kc apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: $pv, labels: {llamaop.io/real-node: "true"}}
spec:
  capacity: {storage: $size}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: llamaop-local
  claimRef: {namespace: $ns, name: $name}
  local: {path: ${node_volumes:-$state/volumes}/$pv}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$node]}]}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $name, namespace: $ns}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: llamaop-local
  volumeName: $pv
  resources: {requests: {storage: $size}}
YAML
  echo "$dir"
}

# Two test runs at once start (or stop) the node once.
if [[ ${1:-} == up || ${1:-} == down ]]; then mkdir -p "$run"; exec 8>"$run/node.lock"; flock 8; fi

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  resources) shift; resources "$@" ;;
  volume) shift; [[ $# -ge 2 ]] || { echo "usage: $0 volume NAMESPACE NAME [SIZE] [UID]" >&2; exit 2; }; volume "$@" ;;
  ctr) shift; ctr_ "$@" ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
