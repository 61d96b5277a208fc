{{/* vim: set filetype=mustache: */}}
{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "mail-plus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart>, or <release> when it already contains the chart name
(or "mailplus": `helm install mailplus` gives mailplus-operator, mailplus-relay and the ConfigMap
mailplus-relay-config, the names the CLI defaults to).
Truncated to 63 characters minus room for the longest suffix we add ("-relay-config").
*/}}
{{- define "mail-plus.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if or (contains $name .Release.Name) (contains "mailplus" .Release.Name) }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mail-plus.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels. Never put these on generated objects of the operator (see operator-notes on Argo CD tracking).
*/}}
{{- define "mail-plus.labels" -}}
helm.sh/chart: {{ include "mail-plus.chart" . }}
app.kubernetes.io/name: {{ include "mail-plus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mail-plus
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "mail-plus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mail-plus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Per component: include "mail-plus.componentLabels" (dict "ctx" $ "component" "relay") */}}
{{- define "mail-plus.componentLabels" -}}
{{ include "mail-plus.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mail-plus.componentSelectorLabels" -}}
{{ include "mail-plus.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The relay pods' selector labels as a label selector string (k=v,k=v), for --relay-selector. */}}
{{- define "mail-plus.relay.selector" -}}
{{- $labels := include "mail-plus.componentSelectorLabels" (dict "ctx" . "component" "relay") | fromYaml }}
{{- $pairs := list }}
{{- range $k := keys $labels | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%s" $k (get $labels $k)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{- define "mail-plus.operator.fullname" -}}
{{- printf "%s-operator" (include "mail-plus.fullname" .) }}
{{- end }}

{{- define "mail-plus.relay.fullname" -}}
{{- printf "%s-relay" (include "mail-plus.fullname" .) }}
{{- end }}

{{- define "mail-plus.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "mail-plus.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mail-plus.relay.serviceAccountName" -}}
{{- if .Values.relay.serviceAccount.create }}
{{- default (include "mail-plus.relay.fullname" .) .Values.relay.serviceAccount.name }}
{{- else }}
{{- required "relay.serviceAccount.name is required when relay.serviceAccount.create is false" .Values.relay.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ConfigMap the operator publishes and the relays watch. */}}
{{- define "mail-plus.relay.configMapName" -}}
{{- default (printf "%s-relay-config" (include "mail-plus.fullname" .)) .Values.relay.configMapName }}
{{- end }}

{{- define "mail-plus.operator.leaseName" -}}
{{- default (include "mail-plus.operator.fullname" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{- define "mail-plus.relay.tlsSecretName" -}}
{{- default (printf "%s-relay-tls" (include "mail-plus.fullname" .)) .Values.relay.tls.secretName }}
{{- end }}

{{- define "mail-plus.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds of the relay: preStop + drain + margin, unless set. */}}
{{- define "mail-plus.relay.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.relay.terminationGracePeriodSeconds }}
{{- add .Values.relay.preStopSleepSeconds .Values.relay.drainTimeoutSeconds 10 }}
{{- else }}
{{- .Values.relay.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Namespace of a monitoring object: its own value, else the release namespace. */}}
{{- define "mail-plus.monitoringNamespace" -}}
{{- default .ctx.Release.Namespace .namespace }}
{{- end }}

{{/*
RBAC rules from files/operator-rbac-rules.yaml and files/relay-rbac-rules.yaml: written with the
operator and relay code (the one source of truth for what each component calls), never copied
into templates. A file holds YAML documents `{kind: ClusterRole | Role, rules: [PolicyRule...]}`:
ClusterRole rules become a ClusterRole, Role rules a Role in the release namespace. resourceNames
naming the defaults (mailplus-relay-config, mailplus-operator) become this release's names; with
operator.configShards > 1 the relay ConfigMap's name also brings every shard's name.
Usage: include "mail-plus.rbacRules" (dict "ctx" $ "file" "files/relay-rbac-rules.yaml" "kind" "Role")
Prints a YAML list (possibly empty: "[]").
*/}}
{{- define "mail-plus.rbacRules" -}}
{{- $raw := .ctx.Files.Get .file }}
{{- if not $raw }}
{{- fail (printf "%s is missing from the chart" .file) }}
{{- end }}
{{- $names := dict
  "mailplus-relay-config" (include "mail-plus.relay.configMapName" .ctx)
  "mailplus-operator" (include "mail-plus.operator.leaseName" .ctx) }}
{{- $out := list }}
{{- range $i, $text := regexSplit "(?m)^---[ \t]*$" $raw -1 }}
{{- $doc := $text | fromYaml }}
{{- if hasKey $doc "Error" }}
{{- fail (printf "%s document %d: %s" $.file $i (get $doc "Error")) }}
{{- end }}
{{- if $doc }}
{{- if not (has (get $doc "kind") (list "ClusterRole" "Role")) }}
{{- fail (printf "%s document %d: kind must be ClusterRole or Role" $.file $i) }}
{{- end }}
{{- if eq (get $doc "kind") $.kind }}
{{- range (get $doc "rules") }}
{{- $rule := deepCopy . }}
{{- if hasKey $rule "resourceNames" }}
{{- $mapped := list }}
{{- range $rule.resourceNames }}
{{- $mapped = append $mapped (get $names . | default .) }}
{{- if and (eq . "mailplus-relay-config") (gt (int $.ctx.Values.operator.configShards) 1) }}
{{- range $i := until (int $.ctx.Values.operator.configShards) }}
{{- $mapped = append $mapped (printf "%s-shard-%d" (include "mail-plus.relay.configMapName" $.ctx) $i) }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := set $rule "resourceNames" $mapped }}
{{- end }}
{{- $out = append $out $rule }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
API versions by server version, so the chart installs on the oldest supported Kubernetes (1.20):
PodDisruptionBudget policy/v1 is GA in 1.21, HorizontalPodAutoscaler autoscaling/v2 in 1.23.
*/}}
{{- define "mail-plus.pdbApiVersion" -}}
{{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version }}policy/v1{{ else }}policy/v1beta1{{ end }}
{{- end }}

{{- define "mail-plus.hpaApiVersion" -}}
{{- if semverCompare ">=1.23-0" .Capabilities.KubeVersion.Version }}autoscaling/v2{{ else }}autoscaling/v2beta2{{ end }}
{{- end }}
