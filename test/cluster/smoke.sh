#!/usr/bin/env bash
# Smoke test of the single-node cluster (test/cluster/cluster.sh): brings it up (or reuses a
# running one), builds a busybox image from a minimal root filesystem (Debian's busybox-static)
# without a registry, loads it into the node's containerd, runs an HTTP server Deployment behind
# a Service and checks that
#   1. the node is Ready and the pod runs from the locally built image (imagePullPolicy: Never);
#   2. the Service answers on its ClusterIP through kube-proxy's iptables rules, from the node;
#   3. in a second pod, its names (web, web.smoke.svc.cluster.local) resolve to the ClusterIP
#      through the cluster DNS server, and the ClusterIP answers;
#   4. both backends answer through the Service (kube-proxy balances over the endpoints);
# then tears the cluster down (unless it was already running, or CLUSTER_KEEP=1).
# MAILPLUS_CLUSTER_NAME picks the cluster (default: a new one named smoke-<pid>).
set -o errexit -o nounset -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# A name of its own unless told otherwise: parallel runs on one machine do not meet.
export MAILPLUS_CLUSTER_NAME=${MAILPLUS_CLUSTER_NAME:-smoke-$$}
CL=test/cluster/cluster.sh
NODE=node_modules/.bin/node
IMAGE=localhost/mailplus-cluster/busybox:smoke
NS=smoke

log() { printf '[smoke] %s\n' "$*" >&2; }
fail() {
  printf '[smoke] FAIL: %s\n' "$*" >&2
  exit 1
}
k() { bash "$CL" exec kubectl "$@"; }

work=
started=0
if ! bash "$CL" status >/dev/null 2>&1; then
  started=1
fi
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    log "state for debugging:"
    k get pods -A -o wide >&2 || true
    k -n "$NS" describe pods >&2 || true
  fi
  [[ -n $work ]] && rm -rf "$work"
  if ((started)) && [[ ${CLUSTER_KEEP:-0} != 1 ]]; then
    bash "$CL" down || true
  else
    k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT
t0=$SECONDS
bash "$CL" up >/dev/null
log "cluster up in $((SECONDS - t0)) s"

# --- the image: busybox-static as the whole root filesystem ------------------------------------
busybox=/bin/busybox # Debian's busybox-static (scripts/envtest-assets.sh --node installs it)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' ||
  fail "Debian's busybox-static is not installed"
work=$(mktemp -d)
mkdir -p "$work/rootfs/bin" "$work/rootfs/www" "$work/rootfs/tmp" "$work/rootfs/etc"
cp "$busybox" "$work/rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$work/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' >"$work/rootfs/etc/passwd"
echo 'root:x:0:' >"$work/rootfs/etc/group"
"$NODE" test/cluster/oci-archive.ts --name "$IMAGE" --rootfs "$work/rootfs" --env PATH=/bin \
  --cmd sh --out "$work/busybox.tar"
bash "$CL" import "$work/busybox.tar"

# --- a web server behind a Service -------------------------------------------------------------
k apply -f - <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $NS}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: $NS}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: $IMAGE
        imagePullPolicy: Never
        env:
        - name: POD
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        command: [sh, -c, 'mkdir -p /tmp/www && echo "hello from \$POD" >/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www']
        ports: [{containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: $NS}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
k -n "$NS" rollout status deploy/web --timeout=120s
pods=$(k -n "$NS" get pods -l app=web -o jsonpath='{.items[*].metadata.name}')
log "pods: $pods"
cip=$(k -n "$NS" get svc web -o jsonpath='{.spec.clusterIP}')

# Debian's static busybox crashes in `wget` (SIGSEGV at start-up) and, being static, cannot
# use glibc's NSS resolver inside a bare image: requests go through `nc`, names through the
# `nslookup` applet (its own DNS client, honouring resolv.conf's search list).
# shellcheck disable=SC2016
HTTP_GET='printf "GET / HTTP/1.0\r\n\r\n" | nc -w 5 "$1" "$2" | tail -n 1'

# 2. From the node's network namespace, by ClusterIP (kube-proxy's OUTPUT rules) and by name
#    (the namespace's resolv.conf points at the cluster DNS server).
deadline=$((SECONDS + 30))
until out=$(bash "$CL" exec "$busybox" sh -c "$HTTP_GET" - "$cip" 80 2>/dev/null) && [[ $out == "hello from web-"* ]]; do
  ((SECONDS < deadline)) || fail "the Service's ClusterIP $cip never answered from the node (last: '$out')"
  sleep 1
done
log "node -> ClusterIP $cip: $out"
resolved=$(bash "$CL" exec getent hosts "web.$NS.svc.cluster.local" | awk '{print $1}')
[[ $resolved == "$cip" ]] || fail "web.$NS.svc.cluster.local resolved to '$resolved' on the node, want $cip"
log "node: web.$NS.svc.cluster.local -> $resolved"

# 3 + 4. From a pod: the short name (search path) and the FQDN must resolve to the ClusterIP
# (busybox's nslookup applies the search list only to names without a dot, unlike glibc, so
# web.<namespace> is not asked); then requests through the Service until both backends answered.
k -n "$NS" run client --image="$IMAGE" --image-pull-policy=Never --restart=Never --command -- sh -c "
  set -e
  http_get() { $HTTP_GET; }
  for name in web web.$NS.svc.cluster.local; do
    ip=\$(nslookup \$name | sed -n 's/^Address: *\([0-9.]*\)\$/\1/p' | tail -n 1)
    echo \"resolved \$name \$ip\"
  done
  i=0; while [ \$i -lt 40 ]; do http_get $cip 80; i=\$((i+1)); done
"
deadline=$((SECONDS + 90))
until phase=$(k -n "$NS" get pod client -o jsonpath='{.status.phase}') && [[ $phase == Succeeded || $phase == Failed ]]; do
  ((SECONDS < deadline)) || fail "the client pod did not finish (phase $phase)"
  sleep 1
done
logs=$(k -n "$NS" logs client)
[[ $phase == Succeeded ]] || fail "the client pod failed: $logs"
for name in web "web.$NS.svc.cluster.local"; do
  grep -qx "resolved $name $cip" <<<"$logs" || fail "in a pod, $name did not resolve to $cip: $(grep resolved <<<"$logs")"
done
log "pod: web, web.$NS.svc.cluster.local -> $cip"
for p in $pods; do
  grep -qx "hello from $p" <<<"$logs" || fail "backend $p never answered through the Service; client saw: $(grep hello <<<"$logs" | sort | uniq -c)"
done
log "pod -> ClusterIP, both backends answered: $(grep hello <<<"$logs" | sort | uniq -c | tr -s ' \n' ' ')"
log "PASS in $((SECONDS - t0)) s"
