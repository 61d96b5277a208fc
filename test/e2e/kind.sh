#!/usr/bin/env bash
# End-to-end test on a throw-away kind cluster (needs Docker, kind, kubectl and helm; it cannot run
# on machines without a Docker engine). The lead wires it as `npm run test:e2e`.
#
#   1. kind cluster  2. build the image and load it into kind  3. helm install the chart
#   4. apply test/e2e/fixtures.yaml: a `mailplus sink` upstream behind a Service, a TenantPolicy and
#      a MailRoute pointing at it  5. wait until every MailRoute/TenantPolicy is Ready
#   6. send a message through the relay Service from a pod (swaks)  7. assert the sink logged it
#   8. delete the cluster (trap), unless E2E_KEEP_CLUSTER=1
#
# Environment: E2E_CLUSTER (default mailplus-e2e), E2E_NODE_IMAGE (kind node image, default: kind's),
# E2E_KEEP_CLUSTER=1 (keep the cluster for debugging), HELM / KIND / KUBECTL (binaries).
set -o errexit -o nounset -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
CLUSTER=${E2E_CLUSTER:-mailplus-e2e}
NS=mailplus-system
IMAGE=mailplus:e2e
HELM=${HELM:-helm}
KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-kubectl}
CTX=kind-$CLUSTER

log() { printf '\n[e2e] %s\n' "$*" >&2; }
k() { "$KUBECTL" --context "$CTX" "$@"; }

for bin in docker "$KIND" "$KUBECTL" "$HELM"; do
  command -v "$bin" >/dev/null || { echo "[e2e] $bin not found: this test needs Docker, kind, kubectl and helm" >&2; exit 1; }
done

cleanup() {
  local rc=$?
  if ((rc != 0)); then
    log "FAILED (exit $rc); state for debugging:"
    k get pods -A -o wide || true
    k get mailroutes,tenantpolicies -A || true
    k -n "$NS" logs deploy/mailplus-operator --tail=50 || true
    k -n "$NS" logs deploy/mailplus-relay --tail=50 || true
    k -n e2e-tenant logs deploy/sink --tail=50 || true
  fi
  if [[ ${E2E_KEEP_CLUSTER:-0} == 1 ]]; then
    log "keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER)"
  else
    "$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT

log "creating kind cluster $CLUSTER"
"$KIND" create cluster --name "$CLUSTER" --wait 5m ${E2E_NODE_IMAGE:+--image "$E2E_NODE_IMAGE"}

log "building $IMAGE and loading it into the cluster"
docker build --quiet -t "$IMAGE" .
"$KIND" load docker-image "$IMAGE" --name "$CLUSTER"

log "installing the chart"
# ClusterIP: kind has no load balancer; the test sends from inside the cluster.
"$HELM" --kube-context "$CTX" upgrade --install mailplus charts/mail-plus \
  --namespace "$NS" --create-namespace \
  --set image.repository=mailplus --set image.tag=e2e --set image.pullPolicy=Never \
  --set relay.service.type=ClusterIP --set relay.replicaCount=2 \
  --wait --timeout 5m
k wait --for=condition=Established crd/mailroutes.mailplus.io crd/tenantpolicies.mailplus.io --timeout=60s

log "applying the tenant, its sink upstream and its route"
k apply --server-side -f test/e2e/fixtures.yaml
k -n e2e-tenant rollout status deploy/sink --timeout=120s
k wait --for=condition=Ready tenantpolicy --all -A --timeout=120s
k wait --for=condition=Ready mailroute --all -A --timeout=120s

log "sending a message through the relay Service"
id=e2e-$(date +%s)-$RANDOM
k -n "$NS" run swaks --image=alpine:3.20 --restart=Never --rm -i --quiet --command -- sh -ec "
  apk add --no-cache swaks >/dev/null
  swaks --server mailplus-relay.$NS.svc.cluster.local:25 --from sender@example.org \
    --to someone@e2e.example.com --header 'Subject: $id' --body 'hello from kind' --timeout 30
"

log "checking the sink received it"
for _ in $(seq 1 30); do
  if k -n e2e-tenant logs deploy/sink | grep -q 'someone@e2e.example.com'; then
    log "PASS: the message reached the sink"
    exit 0
  fi
  sleep 2
done
echo "[e2e] the sink never logged the message" >&2
exit 1
