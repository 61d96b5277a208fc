# Prometheus on the single-node cluster (test/e2e/cluster.sh): Debian's prometheus, run on the node
# (its network namespace: pod IPs are reachable), scraping the release's pods with the chart's scrape
# configuration (files/prometheus-scrape-configs.yaml, through test/e2e/prometheus.ts pod-sd: Debian
# builds Prometheus without kubernetes_sd_configs) and evaluating the chart's rules rendered by
# `helm template` (PrometheusRule). Sourced after lib.sh; the driver defines k, helm_ and CL.
# Every process started here writes its PID to $E2E_TMP/*.pid; e2e_cleanup stops them.

E2E_PROM_URL=http://127.0.0.1:19090
E2E_PROM_DIR=$E2E_TMP/prometheus
# Alerts the drill makes fire, with a shorter `for:` (monitoring.prometheusRule.forOverrides): the
# expressions stay as shipped (their own 5-minute windows included), only the wait after them is cut.
E2E_PROM_FOR=(--set monitoring.prometheusRule.forOverrides.MailPlusRelayConfigReloadFailed=15s
  --set monitoring.prometheusRule.forOverrides.MailPlusRelayConfigWatchStale=15s)

prom() { bash "$CL" exec node test/e2e/prometheus.ts "$@" --url "$E2E_PROM_URL"; }

e2e_prometheus_start() { # rules rendered by the chart, scrape config as shipped, Prometheus and pod-sd started
  mkdir -p "$E2E_PROM_DIR"
  "$HELM" template "$E2E_RELEASE" charts/mail-plus --namespace "$E2E_NS" \
    --set monitoring.prometheusRule.enabled=true "${E2E_PROM_FOR[@]}" \
    --show-only templates/monitoring/prometheusrule.yaml >"$E2E_PROM_DIR/rule-manifest.yaml"
  node test/e2e/prometheus.ts config --sd-url http://127.0.0.1:19091/ \
    --rule-manifest "$E2E_PROM_DIR/rule-manifest.yaml" --out-dir "$E2E_PROM_DIR"
  promtool check config "$E2E_PROM_DIR/prometheus.yml" >/dev/null
  bash "$CL" exec node test/e2e/prometheus.ts pod-sd --listen 127.0.0.1:19091 \
    --pid-file "$E2E_TMP/pod-sd.pid" >"$E2E_PROM_DIR/pod-sd.log" 2>&1 &
  # exec: the PID written is Prometheus' own
  bash "$CL" exec sh -c 'echo $$ >"$1/prometheus.pid"; exec prometheus --config.file="$2/prometheus.yml" \
    --storage.tsdb.path="$2/data" --web.listen-address=127.0.0.1:19090' sh "$E2E_TMP" "$E2E_PROM_DIR" \
    >"$E2E_PROM_DIR/prometheus.log" 2>&1 &
  prom targets --want mailplus-relay=2,mailplus-operator=2 --timeout 90 >&2 ||
    fail "Prometheus does not scrape the release (log: $(tail -5 "$E2E_PROM_DIR/prometheus.log"))"
}

e2e_prometheus_metrics() { # every metric the alerts and the dashboard use has data (two scrapes after traffic)
  sleep 12
  prom metrics \
    --no-data 'mailplus_relay_trace_dropped_total=no message-trace store configured' \
    --no-data 'mailplus_relay_tls_certificate_reloads_total=TLS off; counted on certificate rotation only' \
    --no-data 'mailplus_relay_proxy_protocol_total=no PROXY protocol load balancer in front' \
    --no-data 'workqueue_retries_total=counted from the first retried reconcile, which may not happen' \
    --no-data 'mailplus_relay_auth_results_total=no example tenant enables sender authentication' \
    --no-data 'mailplus_relay_auth_actions_total=no example tenant enables sender authentication' >&2 ||
    fail "metrics without data (above)"
}

# The drill: relay A loses the API server (its watch goes stale), relay B is handed a config it
# refuses (the operator stopped, the ConfigMap edited by hand); both alerts fire; then the operator
# comes back and republishes the good config, A's API access returns; both alerts resolve.
e2e_prometheus_alert_drill() {
  local a b ip_a apiserver rule
  local relays
  mapfile -t relays < <(k -n "$E2E_NS" get pods -l app.kubernetes.io/component=relay -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  ((${#relays[@]} == 2)) || fail "want 2 relay pods for the alert drill, have: ${relays[*]}"
  a=${relays[0]} b=${relays[1]}
  ip_a=$(k -n "$E2E_NS" get pod "$a" -o jsonpath='{.status.podIP}')
  apiserver=$(k get endpoints kubernetes -o jsonpath='{.subsets[0].addresses[0].ip}')
  # a reset for every packet relay A sends to the API server (its open watch included)
  rule=(INPUT -s "$ip_a" -d "$apiserver" -p tcp -j REJECT --reject-with tcp-reset)
  bash "$CL" exec iptables -I "${rule[@]}"
  k -n "$E2E_NS" scale deploy/mailplus-operator --replicas=0 >/dev/null
  k -n "$E2E_NS" wait --for=delete pod -l app.kubernetes.io/component=operator --timeout=90s >/dev/null
  k -n "$E2E_NS" patch configmap mailplus-relay-config --type merge \
    -p '{"data":{"relay-config.json":"{\"apiVersion\":\"relay.mailplus.io/v1alpha1\",\"kind\":\"RelayConfig\"}"}}' >/dev/null
  log "relay $a cut off from the API server ($apiserver); relay $b handed a config it must refuse"
  prom alert --name MailPlusRelayConfigReloadFailed --pod "$b" --state firing --timeout 480 >&2 ||
    fail "MailPlusRelayConfigReloadFailed did not fire for $b"
  prom alert --name MailPlusRelayConfigWatchStale --pod "$a" --state firing --timeout 120 >&2 ||
    fail "MailPlusRelayConfigWatchStale did not fire for $a"
  k -n "$E2E_NS" scale deploy/mailplus-operator --replicas=2 >/dev/null
  prom alert --name MailPlusRelayConfigReloadFailed --pod "$b" --state inactive --timeout 180 >&2 ||
    fail "MailPlusRelayConfigReloadFailed did not resolve once the operator republished the config"
  bash "$CL" exec iptables -D "${rule[@]}"
  prom alert --name MailPlusRelayConfigWatchStale --pod "$a" --state inactive --timeout 180 >&2 ||
    fail "MailPlusRelayConfigWatchStale did not resolve once $a reached the API server again"
  k -n "$E2E_NS" rollout status deploy/mailplus-operator --timeout=120s >/dev/null
}
