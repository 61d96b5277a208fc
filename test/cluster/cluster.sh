#!/usr/bin/env bash
# A real single-node Kubernetes v1.20.2 on this machine, without Docker or a registry:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet with containerd + runc
# (cgroup v1, cgroupfs driver), the bridge CNI plugin, kube-proxy (iptables mode) and a small
# DNS server for the cluster domain (test/cluster/cluster-dns.ts; CoreDNS is not in Debian).
#
#   test/cluster/cluster.sh up           start it (idempotent); last stdout line: the kubeconfig
#   test/cluster/cluster.sh exec CMD...  run CMD inside the cluster's network + mount namespace
#                                        (kubectl, helm, curl to ClusterIPs and pod IPs work there)
#   test/cluster/cluster.sh status       0 when the cluster is up and its node Ready
#   test/cluster/cluster.sh import FILE  load an OCI/Docker image archive into the node's containerd
#   test/cluster/cluster.sh tag IMG NEW  give an imported image a second name (docker tag)
#   test/cluster/cluster.sh down         stop every process it started (by PID) and remove its state
#
# Isolation: every node process runs in one network namespace and one private mount namespace
# created here, held open by a `sleep` process. The apiserver, etcd, kubelet, the pods' bridge
# and every iptables rule live in that network namespace (nothing listens on, or routes to, the
# host's interfaces); every mount (overlay rootfs, volume tmpfs) lives in that mount namespace,
# so none outlives the cluster. All processes, pods included, sit in one cgroup subtree
# (/mailplus-<name>), which `down` freezes, kills and removes. Kubelet's writes to host-wide
# kernel settings (vm.overcommit_memory, kernel.panic*, kernel.keys.*) land in files
# bind-mounted over those /proc/sys entries inside the mount namespace, so the host keeps its own.
#
# Binaries: scripts/envtest-assets.sh --node (built once from Debian's kubernetes source, cached);
# containerd, runc, CNI plugins, iptables, conntrack: Debian packages (installed by that script).
#
# Environment:
#   MAILPLUS_CLUSTER_NAME  cluster name (default mailplus): names the state dir and cgroups, so
#                          several clusters can run side by side
#   MAILPLUS_CLUSTER_DIR   state dir (default <cache root>/cluster/<name>); wiped by up and down
#   MAILPLUS_CACHE_DIR     cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/mailplus)
set -o errexit -o nounset -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NODE=$REPO/node_modules/.bin/node # the pinned Node 24 (npm ci)
NAME=${MAILPLUS_CLUSTER_NAME:-mailplus}
[[ $NAME =~ ^[a-z0-9][a-z0-9-]{0,30}$ ]] || {
  echo "[cluster] MAILPLUS_CLUSTER_NAME must be a short DNS label, got '$NAME'" >&2
  exit 2
}
CACHE_ROOT=${MAILPLUS_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/mailplus}
STATE=${MAILPLUS_CLUSTER_DIR:-$CACHE_ROOT/cluster/$NAME}
CGROUP=mailplus-$NAME # under every cgroup v1 hierarchy
NODE_NAME=mailplus-node
# Addresses inside the cluster's network namespace (nothing outside can reach them).
readonly NODE_IP=10.201.0.1          # on the namespace's lo: apiserver, kubelet, cluster DNS
readonly POD_CIDR=10.244.0.0/24      # the bridge's subnet; .1 is the gateway
readonly SERVICE_CIDR=10.96.0.0/16   # ClusterIPs (10.96.0.1 is the kubernetes Service)
readonly KUBERNETES_SVC_IP=10.96.0.1
readonly CLUSTER_DOMAIN=cluster.local
readonly BRIDGE=mpk-br0
readonly PAUSE_IMAGE=localhost/mailplus-cluster/pause:3.4
# Host-wide kernel settings kubelet writes on start (pkg/kubelet/cm/container_manager_linux.go).
readonly SHADOWED_SYSCTLS=(vm/overcommit_memory kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() {
  printf '[cluster] ERROR: %s\n' "$*" >&2
  exit 1
}

holder_pid() { # PID of the namespace holder, if it is alive and ours
  local pid
  [[ -f $STATE/pids/holder ]] || return 1
  pid=$(<"$STATE/pids/holder")
  [[ -n $pid && -d /proc/$pid && "$(cat "/proc/$pid/comm" 2>/dev/null)" == sleep ]] || return 1
  printf '%s\n' "$pid"
}

nsx() { # run a command in the cluster's network and mount namespaces
  local pid
  pid=$(holder_pid) || die "the cluster '$NAME' is not running (test/cluster/cluster.sh up)"
  # Entering a mount namespace resets the working directory: keep ours (relative paths work).
  nsenter -t "$pid" --net --mount --wd="$PWD" -- "$@"
}

kubectl_() { nsx "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

# --- cgroups -------------------------------------------------------------------------------------
cgroup_hierarchies() { # every mounted cgroup v1 hierarchy
  awk '$3 == "cgroup" { print $2 }' /proc/self/mounts
}

cgroup_pids() { # PIDs of every process in our subtree (pids hierarchy)
  local d=/sys/fs/cgroup/pids/$CGROUP
  [[ -d $d ]] || return 0
  find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true
}

remove_cgroups() { # depth-first rmdir of our subtree in every hierarchy (runc also makes one
  local h          # in a hybrid host's cgroup2 mount)
  while read -r h; do
    [[ -d $h/$CGROUP ]] || continue
    find "$h/$CGROUP" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d $h/$CGROUP ]] && log "warning: could not remove cgroup $h/$CGROUP"
  done < <(awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts)
  return 0
}

# --- down ----------------------------------------------------------------------------------------
down() {
  local pid pids freezer=/sys/fs/cgroup/freezer/$CGROUP i
  if [[ -d $STATE/pids ]]; then
    # Graceful first: kubelet and containerd stop their children badly when killed, but every
    # process of ours (shims and containers included) is in our cgroup subtree, killed below.
    for f in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver cluster-dns etcd; do
      [[ -f $STATE/pids/$f ]] || continue
      pid=$(<"$STATE/pids/$f")
      [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true
    done
  fi
  # Freeze the subtree so nothing forks while we kill it, kill every PID in it, thaw.
  for i in 1 2 3 4 5; do
    pids=$(cgroup_pids)
    [[ -z $pids ]] && break
    [[ -d $freezer ]] && echo FROZEN >"$freezer/freezer.state" 2>/dev/null || true
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    [[ -d $freezer ]] && echo THAWED >"$freezer/freezer.state" 2>/dev/null || true
    sleep 1
  done
  pids=$(cgroup_pids)
  [[ -z $pids ]] || log "warning: processes still in cgroup $CGROUP: $pids"
  # The holder and component PIDs, in case they never got into the cgroup (failed start).
  if [[ -d $STATE/pids ]]; then
    for f in "$STATE"/pids/*; do
      [[ -f $f ]] || continue
      pid=$(<"$f")
      [[ -n $pid && -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null || true
    done
  fi
  remove_cgroups
  # No mounts to undo: they were all made in the private mount namespace, gone with its last
  # process. Same for the network namespace (bridge, veths, iptables rules).
  rm -rf "$STATE"
  log "cluster '$NAME' is down"
}

# --- PKI -----------------------------------------------------------------------------------------
make_cert() { # make_cert NAME SUBJECT [SAN] : key + cert signed by the cluster CA
  local name=$1 subj=$2 san=${3:-} ext=$STATE/pki/$1.ext
  openssl req -new -newkey rsa:2048 -nodes -keyout "$STATE/pki/$name.key" -subj "$subj" \
    -out "$STATE/pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $san ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$STATE/pki/$name.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$ext" -out "$STATE/pki/$name.crt" 2>/dev/null
  rm -f "$STATE/pki/$name.csr" "$ext"
}

make_pki() {
  mkdir -p "$STATE/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$STATE/pki/ca.key" -out "$STATE/pki/ca.crt" \
    -subj "/CN=mailplus-cluster-ca" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  make_cert apiserver "/CN=kube-apiserver" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP,IP:$KUBERNETES_SVC_IP"
  # Control-plane components and the test driver act as cluster admins (system:masters); the
  # kubelet has a real node identity (Node authorizer + NodeRestriction); pods use RBAC'd
  # service accounts.
  make_cert admin "/O=system:masters/CN=mailplus-cluster-admin"
  make_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  make_cert kubelet-serving "/CN=$NODE_NAME" "DNS:$NODE_NAME,IP:$NODE_IP"
  make_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  openssl genrsa -out "$STATE/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$STATE/pki/sa.key" -pubout -out "$STATE/pki/sa.pub" 2>/dev/null
  write_kubeconfig "$STATE/kubeconfig" admin
  write_kubeconfig "$STATE/kubelet.kubeconfig" kubelet
}

write_kubeconfig() { # write_kubeconfig FILE CERTNAME
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $NAME
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $STATE/pki/$2.crt
    client-key: $STATE/pki/$2.key
contexts:
- name: $NAME
  context: {cluster: $NAME, user: $2}
current-context: $NAME
EOF
}

# --- configuration files -------------------------------------------------------------------------
write_configs() {
  mkdir -p "$STATE/cni/net.d" "$STATE/cni/ipam" "$STATE/containerd"
  cat >"$STATE/cni/net.d/10-mailplus.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "mailplus",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
  local cni_bin
  cni_bin=$(dirname "$(command -v host-local 2>/dev/null || echo /usr/lib/cni/host-local)")
  cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$STATE/containerd/containerd.sock"
[ttrpc]
  address = "$STATE/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  # Kubelet asks for negative oom_score_adj (pause -998, Guaranteed pods -997); that needs
  # CAP_SYS_RESOURCE, which root lacks on CI machines (runc init fails with "can't get final
  # child's PID from pipe"). Clamp to containerd's own score instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$STATE/cni/net.d"
EOF
  # Pods resolve through the cluster DNS server only (no host resolvers: nothing leaves); so do
  # commands run with `exec` (this file is bind-mounted over /etc/resolv.conf in the namespace).
  printf 'nameserver %s\n' "$NODE_IP" >"$STATE/resolv.conf"
  printf 'nameserver %s\nsearch svc.%s %s\noptions ndots:2 timeout:1 attempts:2\n' \
    "$NODE_IP" "$CLUSTER_DOMAIN" "$CLUSTER_DOMAIN" >"$STATE/exec-resolv.conf"
  cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $STATE/pki/kubelet-serving.crt
tlsPrivateKeyFile: $STATE/pki/kubelet-serving.key
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
clusterDNS: [$NODE_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $STATE/resolv.conf
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
# Images come from local archives, never a registry: never garbage-collect them, never evict
# pods for a fairly full disk of a shared CI machine.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
maxPods: 60
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
staticPodPath: ""
EOF
}

# --- processes -----------------------------------------------------------------------------------
start() { # start NAME CMD... : run CMD in the namespaces, log to logs/NAME.log, record its PID
  local name=$1
  shift
  local pid
  pid=$(holder_pid) || die "namespace holder is gone"
  # Into our cgroup subtree first (children, containerd's shims included, inherit it); then
  # setsid and nsenter (without --fork) exec in place: $! is CMD's PID.
  (
    while read -r h; do echo "$BASHPID" >"$h/$CGROUP/node/cgroup.procs"; done < <(cgroup_hierarchies)
    exec setsid nsenter -t "$pid" --net --mount -- "$@"
  ) >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name"
}

alive_or_die() { # alive_or_die NAME
  local pid
  pid=$(<"$STATE/pids/$1")
  [[ -d /proc/$pid ]] || {
    tail -n 30 "$STATE/logs/$1.log" >&2 || true
    die "$1 exited during start-up (log: $STATE/logs/$1.log)"
  }
}

wait_for() { # wait_for SECONDS WHAT COMPONENT CMD... : poll CMD until it succeeds
  local secs=$1 what=$2 comp=$3 deadline
  shift 3
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [[ -z $comp ]] || alive_or_die "$comp"
    ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}

own_netns() { # own_netns PID : PID is in a network namespace other than ours
  local theirs
  theirs=$(readlink "/proc/$1/ns/net") && [[ $theirs != "$(readlink /proc/self/ns/net)" ]]
}

make_namespaces() {
  # The holder: `sleep` in a new network + mount namespace (unshare execs it: $! is its PID),
  # moved into our cgroup subtree so that everything started in it is accounted there.
  local h pid
  while read -r h; do
    mkdir -p "$h/$CGROUP/node"
    if [[ $h == */cpuset ]]; then # a cpuset cgroup takes no task before it has cpus and mems
      cat "$h/cpuset.cpus" >"$h/$CGROUP/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h/$CGROUP/cpuset.mems"
      cat "$h/cpuset.cpus" >"$h/$CGROUP/node/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h/$CGROUP/node/cpuset.mems"
    fi
  done < <(cgroup_hierarchies)
  setsid unshare --net --mount --propagation private sleep infinity </dev/null >/dev/null 2>&1 &
  pid=$!
  echo "$pid" >"$STATE/pids/holder"
  wait_for 10 "the namespace holder" "" own_netns "$pid"
  while read -r h; do echo "$pid" >"$h/$CGROUP/node/cgroup.procs"; done < <(cgroup_hierarchies)

  # Network: loopback plus the node address (kubelet refuses a loopback node IP); no route out.
  nsx ip link set lo up
  nsx ip addr add "$NODE_IP/32" dev lo
  # A route for ClusterIPs, so that connections from the node itself reach kube-proxy's OUTPUT
  # rules (which rewrite the destination to a pod or to the apiserver).
  nsx ip route add "$SERVICE_CIDR" dev lo src "$NODE_IP"
  nsx sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 \
    net.bridge.bridge-nf-call-ip6tables=1 net.ipv4.conf.all.route_localnet=1

  # Mounts, private to the namespace: fresh /run/netns (pod network namespaces) and
  # /run/containerd (shim sockets), our own /var/log/pods (fixed in kubelet 1.20), and files in
  # front of the host-wide sysctls kubelet writes.
  mkdir -p "$STATE/shadow-sysctl" "$STATE/pod-logs" /run/netns /run/containerd /var/log/pods
  nsx mount -t tmpfs -o mode=0755 tmpfs /run/netns
  nsx mount -t tmpfs -o mode=0711 tmpfs /run/containerd
  nsx mount --bind "$STATE/pod-logs" /var/log/pods
  nsx mount --bind "$STATE/exec-resolv.conf" /etc/resolv.conf
  local s f
  for s in "${SHADOWED_SYSCTLS[@]}"; do
    f=$STATE/shadow-sysctl/${s//\//.}
    cat "/proc/sys/$s" >"$f"
    nsx mount --bind "$f" "/proc/sys/$s"
  done
}

# --- images --------------------------------------------------------------------------------------
import_image() { # import_image ARCHIVE
  nsx ctr --address "$STATE/containerd/containerd.sock" -n k8s.io images import --all-platforms "$1" >&2
}

pause_image() { # an OCI archive holding the pause binary, built from the Kubernetes source
  local out=$STATE/images/pause.tar
  mkdir -p "$STATE/images"
  "$NODE" "$REPO/test/cluster/oci-archive.ts" --name "$PAUSE_IMAGE" --add "$BIN/pause:/pause" \
    --entrypoint /pause --out "$out" >&2
  printf '%s\n' "$out"
}

# --- up ------------------------------------------------------------------------------------------
up() {
  local t0=$SECONDS
  if holder_pid >/dev/null && status >/dev/null 2>&1; then
    log "cluster '$NAME' is already up"
    printf '%s\n' "$STATE/kubeconfig"
    return 0
  fi
  [[ $(id -u) -eq 0 ]] || die "needs root (namespaces, cgroups, mounts)"
  [[ -d /sys/fs/cgroup/pids && -d /sys/fs/cgroup/memory ]] ||
    die "needs cgroup v1 hierarchies (pids, memory, ...) under /sys/fs/cgroup; this kernel/host has $(stat -fc %T /sys/fs/cgroup)"
  down 2>/dev/null # leftovers of an earlier run with this name
  BIN=$(bash "$REPO/scripts/envtest-assets.sh" --node | tail -n 1)
  log "binaries: $BIN ($((SECONDS - t0)) s)"
  mkdir -p "$STATE"/{pids,logs,etcd,kubelet}
  make_pki
  write_configs
  make_namespaces

  start etcd "$BIN/etcd" --name=node --data-dir="$STATE/etcd" \
    --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
    --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
    --initial-cluster=node=http://127.0.0.1:2380 --logger=zap --log-level=warn \
    --quota-backend-bytes=1073741824 --unsafe-no-fsync
  start containerd containerd --config "$STATE/containerd/config.toml"
  start kube-apiserver "$BIN/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port=6443 --insecure-port=0 \
    --etcd-servers=http://127.0.0.1:2379 --service-cluster-ip-range="$SERVICE_CIDR" \
    --cert-dir="$STATE/pki/apiserver-generated" \
    --tls-cert-file="$STATE/pki/apiserver.crt" --tls-private-key-file="$STATE/pki/apiserver.key" \
    --client-ca-file="$STATE/pki/ca.crt" \
    --kubelet-client-certificate="$STATE/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$STATE/pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$STATE/pki/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file="$STATE/pki/sa.pub" --service-account-signing-key-file="$STATE/pki/sa.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true --profiling=false --event-ttl=1h
  wait_for 120 "kube-apiserver /readyz" kube-apiserver \
    nsx "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" get --raw /readyz
  log "kube-apiserver ready ($((SECONDS - t0)) s)"

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/kubeconfig" --authentication-kubeconfig="$STATE/kubeconfig" \
    --authorization-kubeconfig="$STATE/kubeconfig" --bind-address=127.0.0.1 --port=0 \
    --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$STATE/pki/sa.key" --root-ca-file="$STATE/pki/ca.crt" \
    --cluster-signing-cert-file="$STATE/pki/ca.crt" --cluster-signing-key-file="$STATE/pki/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --allocate-node-cidrs=false --controllers='*,-nodeipam'
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$STATE/kubeconfig" \
    --authentication-kubeconfig="$STATE/kubeconfig" --authorization-kubeconfig="$STATE/kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --leader-elect=false

  wait_for 60 "containerd" containerd \
    nsx ctr --address "$STATE/containerd/containerd.sock" version
  import_image "$(pause_image)"

  start kubelet "$BIN/kubelet" --config="$STATE/kubelet.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" --container-runtime=remote \
    --container-runtime-endpoint="unix://$STATE/containerd/containerd.sock" \
    --pod-infra-container-image="$PAUSE_IMAGE"
  start kube-proxy "$BIN/kube-proxy" --kubeconfig="$STATE/kubeconfig" --proxy-mode=iptables \
    --hostname-override="$NODE_NAME" --bind-address="$NODE_IP" --cluster-cidr="$POD_CIDR" \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
    --conntrack-tcp-timeout-close-wait=0
  start cluster-dns "$NODE" "$REPO/test/cluster/cluster-dns.ts" \
    --kubeconfig "$STATE/kubeconfig" --listen "$NODE_IP:53" --domain "$CLUSTER_DOMAIN"

  wait_for 120 "node $NODE_NAME Ready" kubelet \
    kubectl_ wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
  wait_for 60 "the default service account" kube-controller-manager \
    kubectl_ -n default get serviceaccount default
  wait_for 30 "cluster DNS" cluster-dns \
    nsx getent hosts "kubernetes.default.svc.$CLUSTER_DOMAIN"
  log "cluster '$NAME' is up in $((SECONDS - t0)) s (kubeconfig $STATE/kubeconfig; logs $STATE/logs)"
  printf '%s\n' "$STATE/kubeconfig"
}

status() {
  BIN=${BIN:-$(bash "$REPO/scripts/envtest-assets.sh" --node | tail -n 1)}
  holder_pid >/dev/null || return 1
  kubectl_ wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s >/dev/null
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
exec)
  shift
  [[ ${1:-} == -- ]] && shift
  (($# > 0)) || die "usage: $0 exec CMD..."
  BIN=$(bash "$REPO/scripts/envtest-assets.sh" --node | tail -n 1)
  KUBECONFIG=$STATE/kubeconfig PATH=$BIN:$PATH nsx "$@"
  ;;
import)
  (($# == 2)) || die "usage: $0 import ARCHIVE"
  import_image "$2"
  ;;
tag)
  # a second name for an imported image (e.g. the next release's tag), as `docker tag` does
  (($# == 3)) || die "usage: $0 tag IMAGE NEW-NAME"
  nsx ctr --address "$STATE/containerd/containerd.sock" -n k8s.io images tag --force "$2" "$3" >&2
  ;;
*)
  echo "usage: $0 up | down | status | exec CMD... | import ARCHIVE | tag IMAGE NEW-NAME" >&2
  exit 2
  ;;
esac
