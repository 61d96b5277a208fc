{{/* Egress rules shared by the relay and operator NetworkPolicies: API server and DNS. */}}
{{- define "mail-plus.np.apiServerEgress" -}}
- ports:
    {{- range .apiServer.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with .apiServer.cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- if .dns.enabled }}
- ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
  to:
    - namespaceSelector:
        {{- toYaml .dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .dns.podSelector | nindent 8 }}
{{- end }}
{{- end }}
