{{/*
Scrape endpoint settings shared by the ServiceMonitor and the PodMonitor. "job" is set to a fixed
name per component: the alerts (files/prometheus-rules.yaml) and the dashboard select on it.
Usage: include "mail-plus.scrapeEndpoint" (dict "ctx" $ "port" "admin" "job" "mailplus-relay")
*/}}
{{- define "mail-plus.scrapeEndpoint" -}}
{{- $s := .ctx.Values.monitoring.scrape -}}
port: {{ .port }}
path: /metrics
scheme: http
interval: {{ $s.interval }}
scrapeTimeout: {{ $s.scrapeTimeout }}
honorLabels: {{ $s.honorLabels }}
relabelings:
  - action: replace
    targetLabel: job
    replacement: {{ .job }}
  {{- with $s.relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $s.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "mail-plus.monitoringLabels" -}}
{{ include "mail-plus.labels" .ctx }}
{{- with .ctx.Values.monitoring.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- with .labels }}
{{ toYaml . }}
{{- end }}
{{- end }}
