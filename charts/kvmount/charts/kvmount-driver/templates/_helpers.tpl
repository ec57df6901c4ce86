{{/* The DaemonSet's name: fullnameOverride, else <release>-<chart> (the release alone when it already holds the chart's name). */}}
{{- define "kvmount-driver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kvmount-driver.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "kvmount-driver.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kvmount-driver.labels" -}}
app.kubernetes.io/name: {{ include "kvmount-driver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app: {{ include "kvmount-driver.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The service account name is fixed, as upstream's: other charts and manifests bind to it. */}}
{{- define "kvmount-driver.serviceAccount" -}}secrets-store-csi-driver{{- end -}}

{{- define "kvmount-driver.image" -}}
{{- $image := .Values.linux.image -}}
{{- if $image.digest -}}
{{ $image.repository }}@{{ $image.digest }}
{{- else -}}
{{ $image.repository }}:{{ $image.tag }}
{{- end -}}
{{- end -}}

{{/* Where the driver serves /metrics and /healthz: the port of metricsAddr (":8095" -> 8095). */}}
{{- define "kvmount-driver.metricsPort" -}}
{{- regexFind "[0-9]+$" .Values.linux.metricsAddr -}}
{{- end -}}

{{/* A ClusterRoleBinding of <name>-role to the driver's service account: (list $ "<name>"). */}}
{{- define "kvmount-driver.binding" -}}
{{- $ := index . 0 -}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ index . 1 }}-rolebinding
  labels:
    {{- include "kvmount-driver.labels" $ | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ index . 1 }}-role
subjects:
  - kind: ServiceAccount
    name: {{ include "kvmount-driver.serviceAccount" $ }}
    namespace: {{ $.Release.Namespace }}
{{- end -}}
