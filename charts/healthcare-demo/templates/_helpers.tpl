{{- define "hd.name" -}}{{ .Release.Name }}{{- end -}}
{{- define "hd.labels" -}}
app.kubernetes.io/part-of: healthcare-demo
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{/* The attestation service: attestation.url, or the local one this chart deploys. */}}
{{- define "hd.attestationURL" -}}
{{- if .Values.attestation.url -}}{{ .Values.attestation.url }}{{- else -}}https://{{ .Release.Name }}-attestation.{{ .Release.Namespace }}.svc:8443{{- end -}}
{{- end -}}
{{/* The policy ConfigMap's key holding the attestation service's TLS roots ("" = system roots). */}}
{{- define "hd.attestationCAKey" -}}
{{- if or .Values.attestation.deployLocal .Values.attestation.caPEM -}}attestation-ca.pem{{- end -}}
{{- end -}}
{{- define "hd.portalTLSSecret" -}}
{{- .Values.portal.tls.secretName | default (printf "%s-portal-tls" .Release.Name) -}}
{{- end -}}
{{/* Render-time checks: invalid combinations fail here, not in the cluster. */}}
{{- define "hd.validate" -}}
{{- if not (has .Values.attester (list "sgx" "sim")) -}}{{ fail (printf "attester: %q, expected sgx or sim" .Values.attester) }}{{- end -}}
{{- if and (eq .Values.attester "sgx") .Values.attestation.deployLocal -}}{{ fail "attestation.deployLocal: the local attestation service refuses real SGX quotes; with attester sgx set deployLocal: false and attestation.url to Azure Attestation" }}{{- end -}}
{{- if and (not .Values.attestation.deployLocal) (not .Values.attestation.url) -}}{{ fail "attestation.url: required when attestation.deployLocal is false" }}{{- end -}}
{{- with .Values.attestation.url -}}{{- if not (regexMatch "^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?$" .) -}}{{ fail (printf "attestation.url: %q, expected https://host[:port] with no path or trailing slash (it is the tokens' issuer, byte for byte; the policy refuses http)" .) }}{{- end -}}{{- end -}}
{{- if and (eq .Values.attester "sim") (not .Values.identities.allowDebug) -}}{{ fail "identities.allowDebug: simulated enclaves are debuggable; a sim deployment needs allowDebug: true" }}{{- end -}}
{{- if ne (empty .Values.simPlatformKey.privateKey) (empty .Values.simPlatformKey.publicKey) -}}{{ fail "simPlatformKey: set both privateKey and publicKey (--set-file ...=platform.pem and ...=platform.pem.pub), or neither to use an existing Secret" }}{{- end -}}
{{- end -}}
{{/* Pod metadata that opts a workload into injection. args: dict root name identity inbound (list of dict name spec) outbound (list) */}}
{{- define "hd.inject" -}}
labels:
  {{- include "hd.labels" .root | nindent 2 }}
  app.kubernetes.io/name: {{ .name }}
  countersign.dev/inject: enabled
annotations:
  countersign.dev/identity: {{ .identity }}
  countersign.dev/attester: {{ .root.Values.attester }}
  countersign.dev/policy-configmap: {{ .root.Release.Name }}-policy
  countersign.dev/attestation-url: {{ include "hd.attestationURL" .root | quote }}
  countersign.dev/attestation-ca-key: {{ include "hd.attestationCAKey" .root | quote }}
  {{- if eq .root.Values.attester "sim" }}
  {{- /* Every sidecar runs the same proxy build: a sim proxy claims its identity's measurement. */}}
  {{- range $k, $id := pick .root.Values.identities "recordsApi" "inference" "redis" }}
  {{- if eq $id.name $.identity }}
  countersign.dev/sim-mrenclave: {{ first $id.mrenclave | quote }}
  {{- end }}
  {{- end }}
  {{- end }}
  {{- range .inbound }}
  {{ printf "inbound.countersign.dev/%s" .name }}: {{ .spec | quote }}
  {{- end }}
  {{- range .outbound }}
  {{ printf "outbound.countersign.dev/%s" .name }}: {{ .spec | quote }}
  {{- end }}
{{- end -}}
{{/* repository@digest; with global.imageRegistry set, <imageRegistry>/<last element of
repository>@digest. args: dict "image" "global" */}}
{{- define "hd.image" -}}
{{- $reg := "" -}}{{- with .global -}}{{- $reg = .imageRegistry | default "" -}}{{- end -}}
{{- if $reg -}}
{{- printf "%s/%s@%s" (trimSuffix "/" $reg) (base .image.repository) .image.digest -}}
{{- else -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- end -}}
{{- end -}}
