#!/usr/bin/env bash
# End-to-end test on a throw-away kind cluster (needs Docker, kind, kubectl and helm). Without
# Docker, `npm run test:e2e` runs test/e2e/cluster.sh on a local single-node cluster instead; both
# share their steps and assertions (test/e2e/lib.sh) and fixtures (test/e2e/fixtures.yaml).
#
#   1. kind cluster  2. build the image and load it into kind  3. helm install the chart
#   4. operators elected a leader  5. apply test/e2e/fixtures.yaml: a `mailplus sink` upstream
#      behind a Service, a TenantPolicy and a MailRoute pointing at it; wait until every
#      MailRoute/TenantPolicy is Ready and `kubectl get mailroutes -A` shows it
#   6. send a message through the relay Service from a pod (swaks)  7. assert the sink logged it
#   8. leader failover  9. helm uninstall keeps CRDs and MailRoutes, reinstall serves them again
#  10. delete the cluster (trap), unless E2E_KEEP_CLUSTER=1
#
# Environment: E2E_CLUSTER (default mailplus-e2e), E2E_NODE_IMAGE (kind node image, default: kind's),
# E2E_KEEP_CLUSTER=1 (keep the cluster for debugging), HELM / KIND / KUBECTL (binaries).
set -o errexit -o nounset -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=test/e2e/lib.sh
source test/e2e/lib.sh
CLUSTER=${E2E_CLUSTER:-mailplus-e2e}
IMAGE=mailplus:e2e
HELM=${HELM:-helm}
KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-kubectl}
CTX=kind-$CLUSTER

k() { "$KUBECTL" --context "$CTX" "$@"; }
helm_() { "$HELM" --kube-context "$CTX" "$@"; }
send_mail() { # from a throw-away pod, through the Service name
  k -n "$E2E_NS" run "swaks-$RANDOM" --image=alpine:3.20 --restart=Never --rm -i --quiet --command -- sh -ec "
    apk add --no-cache swaks >/dev/null
    swaks --server mailplus-relay.$E2E_NS.svc.cluster.local:25 --from sender@example.org \
      --to $1@e2e.example.com --header 'Subject: $1' --body 'hello from kind' --timeout 30
  "
}

for bin in docker "$KIND" "$KUBECTL" "$HELM"; do
  command -v "$bin" >/dev/null || fail "$bin not found: this test needs Docker, kind, kubectl and helm"
done

cleanup() {
  local rc=$?
  e2e_cleanup "$rc" "kind delete cluster --name $CLUSTER" "$KIND" delete cluster --name "$CLUSTER"
  exit "$rc"
}
trap cleanup EXIT

phase 'kind cluster'
"$KIND" create cluster --name "$CLUSTER" --wait 5m ${E2E_NODE_IMAGE:+--image "$E2E_NODE_IMAGE"}

phase 'image build and load'
docker build --quiet -t "$IMAGE" .
"$KIND" load docker-image "$IMAGE" --name "$CLUSTER"

phase 'helm install'
e2e_install_chart

phase 'leader and relays'
log "operator leader: $(e2e_check_leader)"

phase 'fixtures applied, routes Ready'
e2e_apply_fixtures
e2e_check_routes_listed_ready

phase 'mail through the relay Service'
e2e_send_and_check

phase 'leader failover'
e2e_leader_failover
e2e_send_and_check

phase 'helm uninstall, reinstall'
e2e_uninstall_reinstall
e2e_send_and_check
phase ''
log "PASS"
