{{- define "kvmount.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The provider DaemonSet's name, as Azure's chart names it: csi-secrets-store-provider-azure by default. */}}
{{- define "kvmount.providerName" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
csi-secrets-store-provider-azure
{{- end -}}
{{- end -}}

{{- define "kvmount.labels" -}}
app.kubernetes.io/name: {{ include "kvmount.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "kvmount.image" -}}
{{ .Values.linux.image.repository }}:{{ .Values.linux.image.tag }}
{{- end -}}

{{/* The image's non-root user (Containerfile: USER 65532:65532). */}}
{{- define "kvmount.uid" -}}65532{{- end -}}

{{/* Stale-if-error flags of a provider container (the DaemonSet's and the sync controller's), or none. */}}
{{- define "kvmount.staleArgs" -}}
{{- if ne (toString .Values.staleOnError) "0" -}}
- --serve-stale-on-error={{ .Values.staleOnError }}
- --stale-cache-bytes={{ int64 .Values.staleCacheBytes }}
{{- end -}}
{{- end -}}
