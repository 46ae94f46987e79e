{{- define "hd.name" -}}{{ .Release.Name }}{{- end -}}
{{- define "hd.labels" -}}
app.kubernetes.io/part-of: healthcare-demo
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "hd.attestationURL" -}}
{{- if .Values.attestation.url -}}{{ .Values.attestation.url }}{{- else -}}https://{{ .Release.Name }}-attestation:8443{{- end -}}
{{- end -}}
{{/* Render-time checks: invalid combinations fail here, not in the cluster. */}}
{{- define "hd.validate" -}}
{{- if not (has .Values.attester (list "sgx" "sim")) -}}{{ fail (printf "attester: %q, expected sgx or sim" .Values.attester) }}{{- end -}}
{{- if and (eq .Values.attester "sgx") .Values.attestation.deployLocal -}}{{ fail "attestation.deployLocal: the local attestation service refuses real SGX quotes; with attester sgx set deployLocal: false and attestation.url to Azure Attestation" }}{{- end -}}
{{- if and (not .Values.attestation.deployLocal) (not .Values.attestation.url) -}}{{ fail "attestation.url: required when attestation.deployLocal is false" }}{{- end -}}
{{- if and (eq .Values.attester "sim") (not .Values.identities.allowDebug) -}}{{ fail "identities.allowDebug: simulated enclaves are debuggable; a sim deployment needs allowDebug: true" }}{{- end -}}
{{- end -}}
{{/* Pod metadata that opts a workload into injection. args: dict root identity inbound outbound */}}
{{- define "hd.inject" -}}
labels:
  {{- include "hd.labels" .root | nindent 2 }}
  app.kubernetes.io/name: {{ .name }}
  countersign.dev/inject: enabled
annotations:
  countersign.dev/identity: {{ .identity }}
  countersign.dev/attester: {{ .root.Values.attester }}
  countersign.dev/policy-configmap: {{ .root.Release.Name }}-policy
  {{- with .inbound }}
  {{ printf "inbound.countersign.dev/%s" .name }}: {{ .spec | quote }}
  {{- end }}
  {{- range .outbound }}
  {{ printf "outbound.countersign.dev/%s" .name }}: {{ .spec | quote }}
  {{- end }}
{{- end -}}
