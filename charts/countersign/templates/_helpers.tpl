{{/* Name of the release's objects (also the webhook configuration and the Service). */}}
{{- define "countersign.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 53 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 53 | trimSuffix "-" -}}
{{- end -}}-injector
{{- end -}}

{{- define "countersign.selectorLabels" -}}
app.kubernetes.io/name: countersign-injector
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "countersign.labels" -}}
{{ include "countersign.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* repository@digest; with global.imageRegistry set, <imageRegistry>/<last element of
repository>@digest (a mirror holding the same images, such as the cluster of make cluster-up).
args: dict "image" (the image's values) "global" (.Values.global) */}}
{{- define "countersign.image" -}}
{{- $reg := "" -}}{{- with .global -}}{{- $reg = .imageRegistry | default "" -}}{{- end -}}
{{- if $reg -}}
{{- printf "%s/%s@%s" (trimSuffix "/" $reg) (base .image.repository) .image.digest -}}
{{- else -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- end -}}
{{- end -}}

{{/* Namespaces never injected nor checked: the release's own and the configured ones. */}}
{{- define "countersign.excluded" -}}
{{- $ns := list .Release.Namespace -}}
{{- range .Values.injection.excludedNamespaces }}{{ if ne . $.Release.Namespace }}{{ $ns = append $ns . }}{{ end }}{{ end -}}
{{- toJson $ns -}}
{{- end -}}

{{- define "countersign.secretName" -}}
{{- include "countersign.fullname" . }}-tls
{{- end -}}

{{/* Serving certificate hosts: the Service's names plus extraHosts. */}}
{{- define "countersign.hosts" -}}
{{- $svc := include "countersign.fullname" . -}}
{{- $h := list (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- range .Values.webhook.certs.extraHosts }}{{ $h = append $h . }}{{ end -}}
{{- join "," $h -}}
{{- end -}}

{{/* The control plane's serving certificate and client CA Secret. */}}
{{- define "countersign.xdsSecretName" -}}
{{- .Values.xds.tls.existingSecret | default (printf "%s-xds" (include "countersign.fullname" .)) -}}
{{- end -}}
