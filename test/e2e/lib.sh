# Steps and assertions shared by the end-to-end drivers (test/e2e/kind.sh on a kind cluster with
# Docker, test/e2e/cluster.sh on the Docker-free single-node cluster of test/cluster/). Sourced,
# not run. The driver defines:
#   k ARGS...      kubectl against the cluster
#   helm_ ARGS...  helm against the cluster
#   send_mail ID   send one message to ID@e2e.example.com through the relay Service
#                  (mailplus-relay.$E2E_NS.svc.cluster.local:25); the sink logs each recipient
# Image: mailplus:e2e (what test/e2e/fixtures.yaml runs too), already present on the node.

E2E_NS=mailplus-system
E2E_TENANT_NS=e2e-tenant
E2E_RELEASE=mailplus
# Scratch files of this run (sender reports, sink logs, Prometheus), removed at exit.
E2E_TMP=$(mktemp -d)
E2E_FLOW_PID_FILE=$E2E_TMP/mail-flow.pid

log() { printf '\n[e2e] %s\n' "$*" >&2; }
fail() {
  printf '[e2e] FAIL: %s\n' "$*" >&2
  exit 1
}

# Print each phase's wall time when it ends (and in a summary at exit).
E2E_PHASES=()
E2E_PHASE_NAME=
E2E_PHASE_START=0
phase() { # phase NAME : end the running phase, start NAME
  if [[ -n $E2E_PHASE_NAME ]]; then
    E2E_PHASES+=("$(printf '%-34s %4d s' "$E2E_PHASE_NAME" $((SECONDS - E2E_PHASE_START)))")
    log "phase '$E2E_PHASE_NAME' took $((SECONDS - E2E_PHASE_START)) s"
  fi
  E2E_PHASE_NAME=$1
  E2E_PHASE_START=$SECONDS
  [[ -n $1 ]] && log "phase '$1'"
  return 0
}
phase_summary() {
  local p
  printf '[e2e] phase times:\n' >&2
  for p in "${E2E_PHASES[@]}"; do printf '[e2e]   %s\n' "$p" >&2; done
}

e2e_debug_state() {
  k get pods -A -o wide >&2 || true
  k get mailroutes,tenantpolicies -A >&2 || true
  k -n "$E2E_NS" logs deploy/mailplus-operator --tail=50 >&2 || true
  k -n "$E2E_NS" logs deploy/mailplus-relay --tail=50 >&2 || true
  k -n "$E2E_TENANT_NS" logs deploy/sink --tail=50 >&2 || true
}

e2e_cleanup() { # e2e_cleanup RC HOW_TO_DELETE DELETE_CMD... : the drivers' exit trap
  local rc=$1 hint=$2
  shift 2
  phase ''
  e2e_stop_started
  if ((rc != 0)); then
    log "FAILED (exit $rc); state for debugging:"
    e2e_debug_state
  fi
  if [[ ${E2E_KEEP_CLUSTER:-0} == 1 ]]; then
    log "keeping the cluster ($hint removes it)"
  else
    "$@" >/dev/null 2>&1 || true
  fi
  rm -rf "$E2E_TMP"
  phase_summary
}

e2e_wait_pod_done() { # e2e_wait_pod_done NS POD SECONDS : prints Succeeded or Failed
  local phase deadline=$((SECONDS + $3))
  until phase=$(k -n "$1" get pod "$2" -o jsonpath='{.status.phase}') && [[ $phase == Succeeded || $phase == Failed ]]; do
    ((SECONDS < deadline)) || fail "pod $1/$2 did not finish within $3 s (phase '$phase')"
    sleep 1
  done
  printf '%s\n' "$phase"
}

# ClusterIP: the test sends from inside the cluster (no load balancer).
E2E_CHART_VALUES=(--set image.repository=mailplus --set image.pullPolicy=Never
  --set relay.service.type=ClusterIP --set relay.replicaCount=2)

e2e_install_chart() { # e2e_install_chart [HELM ARGS...]
  helm_ upgrade --install "$E2E_RELEASE" charts/mail-plus \
    --namespace "$E2E_NS" --create-namespace \
    --set image.tag=e2e "${E2E_CHART_VALUES[@]}" \
    --wait --timeout 5m "$@"
  k wait --for=condition=Established crd/mailroutes.mailplus.io crd/tenantpolicies.mailplus.io --timeout=60s
}

e2e_next_version() { # the chart's version with the patch number raised by one
  local v
  v=$(sed -n 's/^version: *//p' charts/mail-plus/Chart.yaml)
  printf '%s.%s\n' "${v%.*}" "$((${v##*.} + 1))"
}

e2e_upgrade_chart() { # e2e_upgrade_chart VERSION [HELM ARGS...] : the release upgraded to the chart packaged as VERSION
  local v=$1
  shift
  # App version too: with image.tag unset the chart runs mailplus:VERSION, as a released chart does.
  "$HELM" package charts/mail-plus --version "$v" --app-version "$v" -d "$E2E_TMP" >/dev/null
  helm_ upgrade "$E2E_RELEASE" "$E2E_TMP/mail-plus-$v.tgz" --namespace "$E2E_NS" \
    --reset-values "${E2E_CHART_VALUES[@]}" --wait --timeout 5m "$@"
}

e2e_check_upgraded() { # e2e_check_upgraded VERSION : helm reports it, every pod runs its image
  local chart images deadline=$((SECONDS + 90))
  chart=$(helm_ list --namespace "$E2E_NS" --filter "^$E2E_RELEASE\$" -o json)
  grep -q "\"chart\":\"mail-plus-$1\"" <<<"$chart" && grep -q "\"app_version\":\"$1\"" <<<"$chart" ||
    fail "helm list does not show mail-plus $1: $chart"
  # old operator pods may still be terminating (the relay drill waited for the old relays)
  until images=$(k -n "$E2E_NS" get pods -l app.kubernetes.io/name=mail-plus \
    -o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | sort | uniq -c) &&
    [[ $(grep -c . <<<"$images") == 1 && $images == *"mailplus:$1" ]]; do
    ((SECONDS < deadline)) || fail "90 s after the upgrade the pods run: $images"
    sleep 1
  done
  log "upgraded to chart and app version $1; pods: $(tr -s ' \n' ' ' <<<"$images")"
}

e2e_apply_fixtures() {
  k apply --server-side -f test/e2e/fixtures.yaml
  k -n "$E2E_TENANT_NS" rollout status deploy/sink --timeout=120s
  k wait --for=condition=Ready tenantpolicy --all -A --timeout=120s
  k wait --for=condition=Ready mailroute --all -A --timeout=120s
}

e2e_check_routes_listed_ready() { # `kubectl get mailroutes -A` shows every route Ready
  local out
  out=$(k get mailroutes -A)
  printf '%s\n' "$out" >&2
  k get mailroutes -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    while IFS='=' read -r name ready; do
      [[ -z $name || $ready == True ]] || fail "mailroute $name is not Ready ($ready)"
    done
  grep -q 'inbox' <<<"$out" || fail "kubectl get mailroutes -A does not list e2e-tenant/inbox"
}

e2e_check_leader() { # exactly one operator replica holds the Lease, and it is a running pod
  local holder pods
  holder=$(k -n "$E2E_NS" get lease mailplus-operator -o jsonpath='{.spec.holderIdentity}')
  pods=$(k -n "$E2E_NS" get pods -l app.kubernetes.io/component=operator -o jsonpath='{.items[*].metadata.name}')
  [[ -n $holder ]] || fail "the operator Lease has no holder"
  grep -qw -- "${holder%%_*}" <<<"$pods" || fail "Lease holder '$holder' is not one of the operator pods ($pods)"
  printf '%s\n' "$holder"
}

e2e_send_and_check() { # one message through the relay Service reaches the sink
  local id i
  id=e2e-$(date +%s)-$RANDOM
  send_mail "$id"
  for i in $(seq 1 30); do
    if k -n "$E2E_TENANT_NS" logs deploy/sink | grep -q "\"$id@e2e.example.com\""; then
      log "the message $id reached the sink"
      return 0
    fi
    sleep 2
  done
  fail "the sink never logged message $id"
}

e2e_wait_route_observed() { # e2e_wait_route_observed SECONDS : inbox's status caught up with its spec and is Ready
  local deadline=$((SECONDS + $1)) gen obs ready
  while :; do
    gen=$(k -n "$E2E_TENANT_NS" get mailroute inbox -o jsonpath='{.metadata.generation}')
    obs=$(k -n "$E2E_TENANT_NS" get mailroute inbox -o jsonpath='{.status.observedGeneration}')
    ready=$(k -n "$E2E_TENANT_NS" get mailroute inbox -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')
    [[ $gen == "$obs" && $ready == True ]] && return 0
    ((SECONDS < deadline)) || fail "mailroute inbox: generation $gen, observedGeneration '$obs', Ready '$ready' after $1 s"
    sleep 1
  done
}

e2e_leader_failover() { # deleting the leader pod hands the Lease to the other replica, which then reconciles
  local old new deadline
  old=$(e2e_check_leader)
  k -n "$E2E_NS" delete pod "${old%%_*}" --wait=false >/dev/null
  deadline=$((SECONDS + 60))
  until new=$(e2e_check_leader 2>/dev/null) && [[ ${new%%_*} != "${old%%_*}" ]]; do
    ((SECONDS < deadline)) || fail "no other operator took the Lease within 60 s of deleting leader ${old%%_*}"
    sleep 1
  done
  log "leader ${old%%_*} deleted; ${new%%_*} took over after $((60 - deadline + SECONDS)) s"
  # The new leader acts: a spec change is observed and reported Ready.
  k -n "$E2E_TENANT_NS" patch mailroute inbox --type merge -p '{"spec":{"priority":101}}' >/dev/null
  e2e_wait_route_observed 60
}

e2e_uninstall_reinstall() { # helm uninstall keeps CRDs and resources (keep policy); reinstalling serves them again
  helm_ uninstall "$E2E_RELEASE" --namespace "$E2E_NS" --wait --timeout 2m
  k get crd mailroutes.mailplus.io tenantpolicies.mailplus.io >/dev/null ||
    fail "helm uninstall removed the CRDs (crds.keep should keep them)"
  k -n "$E2E_TENANT_NS" get mailroute inbox >/dev/null || fail "helm uninstall removed the MailRoute"
  k -n "$E2E_TENANT_NS" get tenantpolicy e2e >/dev/null || fail "helm uninstall removed the TenantPolicy"
  [[ -z $(k -n "$E2E_NS" get deploy -o name) ]] || fail "helm uninstall left Deployments: $(k -n "$E2E_NS" get deploy -o name)"
  log "uninstalled: CRDs, the TenantPolicy and the MailRoute kept, Deployments gone"
  e2e_install_chart
  k -n "$E2E_TENANT_NS" patch mailroute inbox --type merge -p '{"spec":{"priority":100}}' >/dev/null
  e2e_wait_route_observed 120
}

# --- drills under continuous mail (drivers that define mail_flow) ---------------------------------
# The driver defines mail_flow ARGS... (runs `node test/e2e/mail-flow.ts ARGS...` where the relay
# Service name resolves) and mail_flow_check ARGS... (`node test/e2e/mail-flow.ts check ARGS...`).

e2e_stop_started() { # the exit trap's part: stop what the drills started (each wrote $E2E_TMP/*.pid)
  local f
  for f in "$E2E_TMP"/*.pid; do
    [[ -f $f ]] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

e2e_relay_pods() { k -n "$E2E_NS" get pods -l app.kubernetes.io/component=relay -o name; }

# e2e_under_mail NAME MIN CMD... : runs CMD while a sender keeps mail flowing through the relay
# Service (a fresh connection per message, 8 at a time; 4xx and lost connections are retried as an
# MTA would). A drill window lasts until CMD returned and every relay pod that existed before it is
# gone (drained and deleted). While fewer than MIN messages got their 250 inside the windows so far
# (a busy machine sends slower), CMD runs again, at most 4 times in all. Then: every Message-ID the
# sender got 250 for is at the sink exactly once, nothing else of this run is, nothing failed
# permanently, and at least MIN messages got their 250 inside the windows.
e2e_under_mail() {
  local name=$1 min=$2 d=$E2E_TMP/$1 old from until n=0 n0 rc=0 round inside=0 windows=()
  shift 2
  mkdir -p "$d"
  mail_flow send --server "mailplus-relay.$E2E_NS.svc.cluster.local:25" --to-domain e2e.example.com \
    --min "$min" --stop-file "$d/stop" --out "$d/sent.json" --progress "$d/progress" \
    --pid-file "$E2E_FLOW_PID_FILE" --prefix "$name" --concurrency 8 --rate 120 --max-seconds 900 >"$d/sender.out" 2>&1 &
  local sender=$!
  # mail is flowing before the drill starts
  until [[ -s $d/progress ]] && read -r n _ <"$d/progress" && ((n >= 50)); do
    kill -0 "$sender" 2>/dev/null || fail "$name: the sender ended before the drill: $(cat "$d/sender.out")"
    sleep 0.2
  done
  for round in 1 2 3 4; do
    old=$(e2e_relay_pods)
    read -r n0 _ <"$d/progress"
    from=$(date +%s%3N)
    "$@"
    # shellcheck disable=SC2086 # one argument per pod name
    k -n "$E2E_NS" wait --for=delete $old --timeout=180s >/dev/null 2>&1 || true
    until=$(date +%s%3N)
    read -r n _ <"$d/progress"
    windows+=(--window "$from-$until")
    inside=$((inside + n - n0))
    log "$name: round $round, drill window $(((until - from) / 1000)) s, about $((n - n0)) accepted in it ($inside in all); relay pods now: $(e2e_relay_pods | tr '\n' ' ')"
    ((inside >= min + min / 10)) && break # progress is sampled every 0.5 s: keep a margin
  done
  touch "$d/stop"
  wait "$sender" || rc=$?
  cat "$d/sender.out" >&2
  ((rc == 0)) || fail "$name: the sender failed (exit $rc)"
  k -n "$E2E_TENANT_NS" logs deploy/sink >"$d/sink.log"
  mail_flow_check --sent "$d/sent.json" --sink-log "$d/sink.log" "${windows[@]}" --min "$min" >&2 ||
    fail "$name: mail was lost, duplicated or refused (above)"
}
