#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine, for the on-node tests (docs/cluster.md):
#   cluster.sh up       etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd
#                       (Debian's, its own config/root/state/socket), kubelet, kube-proxy
#                       (iptables), CoreDNS (a host process on the node address), the local
#                       registry with the images pushed; idempotent (fast when healthy)
#   cluster.sh down     stop all of it and remove every process, bridge, mount, netns, iptables
#                       chain and sysctl change up made, and only those
#   cluster.sh status   what runs; with --env, shell assignments a test can read
#   cluster.sh verify-down  fail, naming it, if anything up made is still there
# Everything lives under $CLUSTER_DIR (default .cache/cluster). Needs root (a kubelet).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
C="${CLUSTER_DIR:-$root/.cache/cluster}"
K8S_BIN="${K8S_BIN:-$root/.cache/k8s/bin}"
REGISTRY="${REGISTRY:-127.0.0.1:5000}"
GO="${GO:-go}"

NODE=cs-node
BRIDGE=cs0                  # the pod bridge (created here; the CNI bridge plugin adds its gateway)
POD_CIDR=10.244.0.0/24      # host-local range on the bridge
POD_GW=10.244.0.1
NODE_IP=10.245.0.1          # an extra address on the bridge: the kubelet refuses a loopback node IP
SVC_CIDR=10.96.0.0/24
API_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
API_PORT=6443
DOMAIN=cluster.local

# The sysctls up may change (ip_forward and route_localnet by us and kube-proxy; the others by
# the kubelet, which sets its kernel defaults); saved before the first change, restored by down.
SYSCTLS="net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
net.ipv4.conf.all.route_localnet vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
kernel.keys.root_maxkeys kernel.keys.root_maxbytes"

SOCK="$C/run/containerd/containerd.sock"
KC="$C/kubeconfig"
PROCS="etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns"

t0=$SECONDS
log() { printf '  cluster: [%3ds] %s\n' "$((SECONDS - t0))" "$*"; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }

bin() { local b="$K8S_BIN/$1"; [ -x "$b" ] || die "$b not built: run make kube-deps (test/k8s/build.sh)"; echo "$b"; }
kctl() { "$K8S_BIN/kubectl" --kubeconfig "$KC" "$@"; }

# --- processes: one pid file each; a pid counts only while /proc/PID/exe is still our binary ---
pidof_() { cat "$C/pids/$1.pid" 2>/dev/null || true; }
exe_of() { case $1 in containerd) echo /usr/bin/containerd ;; coredns|etcd) echo "$K8S_BIN/$1" ;; *) echo "$K8S_BIN/$1" ;; esac; }
alive() {
  local pid; pid=$(pidof_ "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$(exe_of "$1")")" ]
}
start() { # start NAME ARGS...: a session of its own, logs in $C/logs/NAME.log
  local name=$1; shift
  if alive "$name"; then return; fi
  mkdir -p "$C/logs" "$C/pids"
  setsid "$(exe_of "$name")" "$@" >>"$C/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$C/pids/$name.pid"
}
stop() { # stop NAME...: SIGTERM to all at once, SIGKILL after 15 s
  local name pid pids=() i
  for name in "$@"; do
    pid=$(pidof_ "$name")
    if alive "$name"; then kill "$pid" 2>/dev/null || true; pids+=("$name:$pid"); fi
    rm -f "$C/pids/$name.pid"
  done
  for i in $(seq 1 150); do
    local left=0 p
    for p in "${pids[@]}"; do kill -0 "${p#*:}" 2>/dev/null && left=1; done
    [ $left = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do
    if kill -0 "${p#*:}" 2>/dev/null; then log "${p%%:*} (pid ${p#*:}) ignored SIGTERM for 15s; SIGKILL"; kill -9 "${p#*:}" 2>/dev/null || true; fi
    log "stopped ${p%%:*} (pid ${p#*:})"
  done
}
wait_for() { # wait_for WHAT SECONDS PROC CMD...: poll CMD, fail early when PROC has exited
  local what=$1 secs=$2 proc=$3 i; shift 3
  for i in $(seq 1 $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then return; fi
    if [ -n "$proc" ] && ! alive "$proc"; then tail -25 "$C/logs/$proc.log" >&2; die "$proc exited while waiting for $what (log above: $C/logs/$proc.log)"; fi
    sleep 0.2
  done
  [ -n "$proc" ] && tail -25 "$C/logs/$proc.log" >&2
  die "timed out after ${secs}s waiting for $what${proc:+ (log: $C/logs/$proc.log)}"
}

# --- certificates and credentials ---
pki() {
  local p="$C/pki"
  [ -f "$p/done" ] && return
  log "pki: CA, API server serving certificate, service-account key, tokens"
  rm -rf "$p"; mkdir -p "$p"; chmod 700 "$p"
  openssl ecparam -name prime256v1 -genkey -noout -out "$p/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$p/ca.key" -subj "/CN=countersign-cluster-ca" -days 3650 -out "$p/ca.crt" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "$p/apiserver.key" 2>/dev/null
  openssl req -new -key "$p/apiserver.key" -subj "/CN=kube-apiserver" -out "$p/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.%s\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n' \
    "$NODE_IP" "$API_SVC_IP" "$DOMAIN" >"$p/apiserver.ext"
  openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 3650 \
    -extfile "$p/apiserver.ext" -out "$p/apiserver.crt" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "$p/sa.key" 2>/dev/null
  # token,user,uid,"groups": what the Node and RBAC authorizers expect of each component.
  local u
  : >"$p/tokens.csv"
  for u in admin:system:masters kubelet:system:nodes scheduler: controller-manager: proxy: coredns:; do
    echo "$(openssl rand -hex 16) ${u%%:*} ${u#*:}" >>"$p/tokens.raw"
  done
  while read -r tok who groups; do
    local user
    case $who in
      admin) user=countersign-admin ;;
      kubelet) user="system:node:$NODE" ;;
      scheduler) user=system:kube-scheduler ;;
      controller-manager) user=system:kube-controller-manager ;;
      proxy) user=system:kube-proxy ;;
      coredns) user=countersign:coredns ;;
    esac
    echo "$tok,$user,$who,\"$groups\"" >>"$p/tokens.csv"
    kubeconfig "$who" "$tok"
  done <"$p/tokens.raw"
  cp "$C/kubeconfigs/admin" "$KC"
  touch "$p/done"
}
kubeconfig() { # kubeconfig WHO TOKEN
  mkdir -p "$C/kubeconfigs"
  cat >"$C/kubeconfigs/$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: countersign
  cluster: {server: "https://$NODE_IP:$API_PORT", certificate-authority: "$C/pki/ca.crt"}
users:
- name: $1
  user: {token: "$2"}
contexts:
- name: countersign
  context: {cluster: countersign, user: $1, namespace: default}
current-context: countersign
EOF
  chmod 600 "$C/kubeconfigs/$1"
}

# --- host network: bridge, node address, sysctls ---
save_sysctls() {
  [ -f "$C/sysctl.saved" ] && return
  local s
  for s in $SYSCTLS; do
    [ -e "/proc/sys/${s//.//}" ] && echo "$s=$(cat "/proc/sys/${s//.//}")"
  done >"$C/sysctl.saved.tmp"
  mv "$C/sysctl.saved.tmp" "$C/sysctl.saved"
}
network() {
  mkdir -p "$C"
  save_sysctls
  # Record the network namespaces that exist before ours, so down removes only ours.
  [ -f "$C/netns.before" ] || ls /var/run/netns 2>/dev/null >"$C/netns.before" || : >"$C/netns.before"
  # And the nf_tables tables (iptables-nft makes ip/ip6 filter, nat, mangle on first use).
  [ -f "$C/nft.before" ] || nft list tables >"$C/nft.before"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    log "network: bridge $BRIDGE created"
  fi
  ip link set "$BRIDGE" up
  # The pod gateway first: the CNI bridge plugin accepts a bridge whose FIRST IPv4 address is its
  # gateway, and fails with '"cs0" already has an IP address different from 10.244.0.1/24' when
  # another address (the node's) comes first.
  if ! ip -4 addr show dev "$BRIDGE" | grep -q "inet $POD_GW/"; then
    ip addr flush dev "$BRIDGE"
    ip addr add "$POD_GW/${POD_CIDR#*/}" dev "$BRIDGE"
  fi
  ip -4 addr show dev "$BRIDGE" | grep -q "inet $NODE_IP/32" || ip addr add "$NODE_IP/32" dev "$BRIDGE"
  # Pod to ClusterIP to pod on the same bridge is routed by this host (ip_forward) and must pass
  # netfilter while bridged (bridge-nf-call-iptables) for kube-proxy's DNAT.
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  log "network: $BRIDGE up, node address $NODE_IP, pods $POD_CIDR, ip_forward=1"
}

# --- containerd ---
containerd_up() {
  if alive containerd && ctr --address "$SOCK" version >/dev/null 2>&1; then log "containerd: running"; return; fi
  local pause; pause=$(pause_ref)
  mkdir -p "$C/containerd/root" "$C/run/containerd" "$C/cni/net.d" "$C/cni/ipam" "$C/certs.d/$REGISTRY"
  cat >"$C/certs.d/$REGISTRY/hosts.toml" <<EOF
# The local registry (CNCF distribution) is plain HTTP on loopback.
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"$C/cni/net.d/10-countersign.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "countersign",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$C/cni/ipam", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "loopback"}
  ]
}
EOF
  # restrict_oom_score_adj: without CAP_SYS_RESOURCE every sandbox fails with runc's "can't get
  # final child's PID from pipe: EOF" (the CRI asks for a negative oom_score_adj).
  cat >"$C/containerd/config.toml" <<EOF
version = 2
root = "$C/containerd/root"
state = "$C/run/containerd"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$C/run/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$C/run/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$C/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$C/certs.d"
EOF
  start containerd --config "$C/containerd/config.toml"
  wait_for "containerd on $SOCK" 30 containerd ctr --address "$SOCK" version
  log "containerd: up (socket $SOCK, sandbox image $pause)"
}

# --- registry and images ---
pause_ref() {
  local tsv="$root/.cache/images/images.tsv" d
  d=$(awk '$1=="pause"{print $2}' "$tsv" 2>/dev/null)
  [ -n "$d" ] || die "no pause image in $tsv: run make images"
  echo "$REGISTRY/countersign/pause@$d"
}
registry_images() {
  if [ ! -f "$root/.cache/images/images.tsv" ]; then
    log "images: none built yet; make images (a few minutes cold)"
    make -C "$root" --no-print-directory images
  fi
  if curl -fsS -o /dev/null --max-time 2 "http://$REGISTRY/v2/" 2>/dev/null; then
    log "registry: answering on $REGISTRY"
  else
    make -C "$root" --no-print-directory registry-up REGISTRY="$REGISTRY"
    touch "$C/registry.ours"
  fi
  # Push only when the registry lacks an image of the last build (push is a no-op per blob but
  # walks every layer).
  local name d missing=0
  while read -r name d _; do
    [[ $d == sha256:* ]] || continue
    curl -fsS -o /dev/null --max-time 5 -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "http://$REGISTRY/v2/countersign/$name/manifests/$d" 2>/dev/null || { missing=1; break; }
  done <"$root/.cache/images/images.tsv"
  if [ $missing = 1 ]; then
    log "images: pushing to $REGISTRY/countersign"
    make -C "$root" --no-print-directory push-images REGISTRY="$REGISTRY"
  else
    log "images: every image of images.tsv is in $REGISTRY"
  fi
}

# --- control plane ---
etcd_up() {
  start etcd --name=cs --data-dir="$C/etcd" \
    --listen-client-urls=http://127.0.0.1:12379 --advertise-client-urls=http://127.0.0.1:12379 \
    --listen-peer-urls=http://127.0.0.1:12380 --initial-advertise-peer-urls=http://127.0.0.1:12380 \
    --initial-cluster=cs=http://127.0.0.1:12380 --listen-metrics-urls=http://127.0.0.1:12381 \
    --unsafe-no-fsync --log-level=warn
  wait_for "etcd /health" 30 etcd curl -fsS --max-time 1 http://127.0.0.1:12381/health
  log "etcd: up (127.0.0.1:12379)"
}
readyz() { curl -fsS --max-time 2 --cacert "$C/pki/ca.crt" -H "Authorization: Bearer $(admin_token)" "https://$NODE_IP:$API_PORT/readyz"; }
admin_token() { awk '$2=="admin"{print $1}' "$C/pki/tokens.raw"; }
apiserver_up() {
  local p="$C/pki"
  start kube-apiserver --etcd-servers=http://127.0.0.1:12379 \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=$API_PORT \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" --token-auth-file="$p/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc.$DOMAIN \
    --service-account-key-file="$p/sa.key" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range=$SVC_CIDR --authorization-mode=Node,RBAC \
    --kubelet-preferred-address-types=InternalIP --allow-privileged=true \
    --cert-dir="$C/apiserver-certs"
  wait_for "kube-apiserver /readyz" 90 kube-apiserver readyz
  log "kube-apiserver: ready (https://$NODE_IP:$API_PORT)"
}
controllers_up() {
  # The controller manager starts after /readyz (RBAC bootstrap roles), or it exits with
  # "extension-apiserver-authentication is forbidden".
  start kube-controller-manager --kubeconfig="$C/kubeconfigs/controller-manager" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
    --controllers='*,-node-ipam-controller,-node-lifecycle-controller' \
    --use-service-account-credentials --service-account-private-key-file="$C/pki/sa.key" \
    --root-ca-file="$C/pki/ca.crt" --cluster-signing-cert-file="$C/pki/ca.crt" \
    --cluster-signing-key-file="$C/pki/ca.key" --service-cluster-ip-range=$SVC_CIDR
  start kube-scheduler --kubeconfig="$C/kubeconfigs/scheduler" --authentication-kubeconfig="$C/kubeconfigs/scheduler" \
    --authorization-kubeconfig="$C/kubeconfigs/scheduler" --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false
  wait_for "the default service account" 60 kube-controller-manager kctl get serviceaccount default
  log "kube-controller-manager, kube-scheduler: up"
}

# --- node ---
kubelet_up() {
  if alive kubelet; then log "kubelet: running"; return; fi
  mkdir -p "$C/kubelet" "$C/pod-logs"
  cat >"$C/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
imageServiceEndpoint: unix://$SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDNS: [$DNS_SVC_IP]
clusterDomain: $DOMAIN
resolvConf: ""
evictionHard: {}
localStorageCapacityIsolation: false
enforceNodeAllocatable: []
podLogsDir: $C/pod-logs
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  start kubelet --config="$C/kubelet.yaml" --kubeconfig="$C/kubeconfigs/kubelet" --root-dir="$C/kubelet" \
    --cert-dir="$C/kubelet/pki" --node-ip="$NODE_IP" --hostname-override="$NODE" -v=1
  log "kubelet: started"
}
node_ready() { kctl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True; }
untaint() {
  # Without the node-lifecycle controller nothing removes the taint the node registers with.
  if kctl get node "$NODE" -o jsonpath='{.spec.taints[*].key}' | grep -q node.kubernetes.io/not-ready; then
    kctl taint node "$NODE" node.kubernetes.io/not-ready:NoSchedule- >/dev/null
  fi
}
proxy_up() {
  cat >"$C/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$C/kubeconfigs/proxy"}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts answer on loopback only: tests drive them at 127.0.0.1 (route_localnet=1 for it).
nodePortAddresses: ["127.0.0.0/8"]
iptables: {localhostNodePorts: true}
# Leave the host's conntrack table size and timeouts alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start kube-proxy --config="$C/kube-proxy.yaml"
  wait_for "kube-proxy /healthz" 60 kube-proxy curl -fsS --max-time 1 http://127.0.0.1:10256/healthz
  log "kube-proxy: up (iptables, NodePorts on 127.0.0.0/8)"
}

# --- cluster DNS: CoreDNS as a host process on the node address, behind the kube-dns Service ---
dns_up() {
  local coredns="$K8S_BIN/coredns"
  [ -x "$coredns" ] || die "$coredns not built: run make kube-deps (test/k8s/build.sh coredns)"
  kctl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "countersign:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "countersign:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "countersign:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "countersign:coredns"}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $DNS_SVC_IP
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: countersign-cluster}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
EOF
  mkdir -p "$C/coredns"
  cat >"$C/coredns/Corefile" <<EOF
$DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes $DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $C/kubeconfigs/coredns countersign
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
    loadbalance
}
.:53 {
    bind $NODE_IP
    errors
    forward . /etc/resolv.conf
    cache 30
}
EOF
  start coredns -conf "$C/coredns/Corefile"
  wait_for "CoreDNS /ready" 60 coredns curl -fsS --max-time 1 http://127.0.0.1:18181/ready
  log "dns: CoreDNS on $NODE_IP:53 (host process), Service kube-system/kube-dns $DNS_SVC_IP"
}

healthy() {
  local p
  for p in $PROCS; do alive "$p" || return 1; done
  readyz >/dev/null 2>&1 && node_ready 2>/dev/null && curl -fsS --max-time 1 -o /dev/null http://127.0.0.1:18181/ready
}

up() {
  [ "$(id -u)" = 0 ] || die "needs root (kubelet, containerd, bridge, iptables)"
  local b; for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns; do bin "$b" >/dev/null; done
  if [ -f "$C/up" ] && healthy; then
    # The images may be newer than the running cluster's: push what the registry lacks.
    registry_images
    log "already up and healthy (node $NODE Ready); kubeconfig $KC"
    return
  fi
  mkdir -p "$C"
  log "up: state in $C"
  registry_images
  pki
  network
  etcd_up
  apiserver_up
  controllers_up
  containerd_up
  local tk=$SECONDS
  kubelet_up
  wait_for "node $NODE registered" 90 kubelet kctl get node "$NODE"
  wait_for "node $NODE Ready" 120 kubelet node_ready
  untaint
  log "kubelet: node $NODE Ready ($((SECONDS - tk))s after the kubelet started)"
  echo "$((SECONDS - tk))" >"$C/node-ready-seconds"
  proxy_up
  dns_up
  touch "$C/up"
  log "up in $((SECONDS - t0))s; export KUBECONFIG=$KC"
}

# --- down ---
ours_netns() { comm -13 <(sort "$C/netns.before" 2>/dev/null) <(ls /var/run/netns 2>/dev/null | sort) | grep '^cni-' || true; }
down() {
  [ "$(id -u)" = 0 ] || die "needs root"
  [ -d "$C" ] || { log "nothing to take down ($C absent)"; return; }
  rm -f "$C/up"
  if alive kube-apiserver && alive kubelet && readyz >/dev/null 2>&1; then
    # Let the kubelet tear the pods down through the CRI (so CNI DEL frees addresses and netns).
    stop kube-controller-manager kube-scheduler
    kctl delete pods --all -A --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    log "down: waiting for the kubelet to stop every pod"
    local i
    for i in $(seq 1 90); do
      [ -z "$(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null)" ] && [ -z "$(ours_netns)" ] && break
      sleep 1
    done
  fi
  stop coredns kube-proxy kubelet kube-controller-manager kube-scheduler
  stop kube-apiserver
  stop etcd
  if alive containerd; then
    local c
    for c in $(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do ctr --address "$SOCK" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 1
    for c in $(ctr --address "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
      ctr --address "$SOCK" -n k8s.io tasks rm -f "$c" >/dev/null 2>&1 || true
      ctr --address "$SOCK" -n k8s.io containers rm "$c" >/dev/null 2>&1 || true
    done
  fi
  stop containerd
  # Shims outlive containerd; ours name our socket on their command line.
  local pid
  for pid in $(pgrep -x containerd-shim-runc-v2 2>/dev/null || pgrep -f containerd-shim 2>/dev/null || true); do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-address $SOCK"; then kill -9 "$pid" 2>/dev/null || true; log "killed shim $pid"; fi
  done
  # Mounts under our folder (rootfs overlays, shm, kubelet volumes), deepest first.
  local m
  for m in $(awk -v c="$C" 'index($5, c) == 1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
  for m in $(ours_netns); do umount "/var/run/netns/$m" 2>/dev/null || true; rm -f "/var/run/netns/$m"; log "removed netns $m"; done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; log "removed bridge $BRIDGE"; fi
  iptables_clean
  cgroups_clean
  if [ -f "$C/sysctl.saved" ]; then
    local kv; while read -r kv; do sysctl -qw "$kv" 2>/dev/null || true; done <"$C/sysctl.saved"
    rm -f "$C/sysctl.saved" "$C/netns.before"
    log "sysctls restored to their values before up"
  fi
  if [ -f "$C/registry.ours" ]; then make -C "$root" --no-print-directory registry-down; rm -f "$C/registry.ours"; fi
  # Container state and pod data go; the PKI, etcd data and pulled image content stay for a fast up.
  rm -rf "$C/run" "$C/kubelet" "$C/cni/ipam" "$C/pod-logs" "$C/etcd" "$C/pki" "$C/kubeconfigs" "$KC"
  log "down in $((SECONDS - t0))s"
}
# The chains kube-proxy and the kubelet make are all named KUBE-*; rules of the built-in chains
# that jump to them go first, then the chains.
iptables_clean() {
  local ipt save tbl
  for ipt in iptables ip6tables; do
    save=$("$ipt-save" 2>/dev/null || true)
    for tbl in $(sed -n 's/^\*//p' <<<"$save"); do
      local rules
      rules=$(awk -v t="$tbl" '/^\*/{cur=substr($0,2)} cur==t && /^-A / && / -j KUBE-/ && $2 !~ /^KUBE-/' <<<"$save")
      while IFS= read -r r; do
        [ -n "$r" ] || continue
        eval "$ipt -t $tbl ${r/-A /-D }" 2>/dev/null || true
      done <<<"$rules"
      local ch
      for ch in $(awk -v t="$tbl" '/^\*/{cur=substr($0,2)} cur==t && /^:KUBE-/{print substr($1,2)}' <<<"$save"); do "$ipt" -t "$tbl" -F "$ch" 2>/dev/null || true; done
      for ch in $(awk -v t="$tbl" '/^\*/{cur=substr($0,2)} cur==t && /^:KUBE-/{print substr($1,2)}' <<<"$save"); do "$ipt" -t "$tbl" -X "$ch" 2>/dev/null || true; done
    done
  done
  if iptables-save 2>/dev/null | grep -q KUBE-; then log "warning: KUBE- iptables rules remain"; else log "iptables: KUBE-* chains removed"; fi
  # Tables that did not exist before up and are now empty (only base chains, no rules) go too.
  local fam name
  [ -f "$C/nft.before" ] || return 0
  while read -r _ fam name; do
    grep -qx "table $fam $name" "$C/nft.before" && continue
    if nft list table "$fam" "$name" | grep -vqE '^\s*(table .*\{|chain .*\{|type .* hook .*;|\}|)\s*$'; then
      log "nft table $fam $name has rules we did not make; left alone"
    else
      nft delete table "$fam" "$name"
    fi
  done < <(nft list tables)
  rm -f "$C/nft.before"
}
# The kubelet's cgroup tree (cgroupfs driver): /sys/fs/cgroup/<controller>/kubepods, deepest first.
cgroups_clean() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# verify-down: exit non-zero, listing them, when anything up made is still there.
verify_down() {
  local left=() p pid
  for p in $PROCS; do alive "$p" && left+=("process $p (pid $(pidof_ "$p"))"); done
  for pid in $(pgrep -f containerd-shim 2>/dev/null || true); do
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-address $SOCK" && left+=("containerd shim pid $pid")
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && left+=("bridge $BRIDGE")
  iptables-save 2>/dev/null | grep -q 'KUBE-' && left+=("iptables KUBE-* rules")
  awk -v c="$C" 'index($5, c) == 1 {print $5}' /proc/self/mountinfo | grep -q . && left+=("mounts under $C")
  [ -n "$(ours_netns)" ] && left+=("network namespaces $(ours_netns | tr '\n' ' ')")
  [ -f "$C/sysctl.saved" ] && left+=("sysctls not restored ($C/sysctl.saved)")
  if [ ${#left[@]} -gt 0 ]; then
    printf 'cluster: down left behind: %s\n' "${left[@]}" >&2
    exit 1
  fi
  log "verified: no process, shim, bridge, mount, netns, KUBE- rule or sysctl change of ours remains"
}

status() {
  if [ "${1:-}" = --env ]; then
    cat <<EOF
KUBECONFIG=$KC
CLUSTER_DIR=$C
CONTAINERD_SOCK=$SOCK
REGISTRY=$REGISTRY
NODE=$NODE
NODE_IP=$NODE_IP
POD_CIDR=$POD_CIDR
SERVICE_CIDR=$SVC_CIDR
DNS_IP=$DNS_SVC_IP
K8S_BIN=$K8S_BIN
EOF
    return
  fi
  local p
  for p in $PROCS; do
    if alive "$p"; then printf '  %-24s pid %s\n' "$p" "$(pidof_ "$p")"; else printf '  %-24s not running\n' "$p"; fi
  done
  if healthy 2>/dev/null; then echo "  healthy: node $NODE Ready, export KUBECONFIG=$KC"; else echo "  not healthy (make cluster-up)"; return 1; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) shift; status "$@" ;;
  verify-down) verify_down ;;
  *) echo "usage: $0 up|down|status [--env]|verify-down" >&2; exit 2 ;;
esac
