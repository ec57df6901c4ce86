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

{{/* The admission webhook's name: its Service, TLS Secret and configuration. */}}
{{- define "kvmount.admissionName" -}}kvmount-admission{{- end -}}

{{/* Whether the sync controller's pods serve the webhook (both enabled) rather than a Deployment of its own. */}}
{{- define "kvmount.admissionInSyncController" -}}
{{- if and .Values.admission.enabled .Values.syncController.enabled -}}true{{- end -}}
{{- end -}}

{{/* The webhook's container (kvmount admission), in its own Deployment or in the sync controller's
pods. It needs no API access (the review carries the object): an empty directory over the
service account token's path keeps the pod's token out of it (the API server mounts the token
into no container that already has a mount there). */}}
{{- define "kvmount.admissionContainer" -}}
- name: admission
  image: {{ include "kvmount.image" . | quote }}
  imagePullPolicy: {{ .Values.linux.image.pullPolicy }}
  command: [/opt/kvmount/bin/kvmount]
  args:
    - admission
    - --port=9443
    - --tls-cert-file=/tls/tls.crt
    - --tls-private-key-file=/tls/tls.key
    - --deny-invalid={{ .Values.admission.denyInvalid }}
    {{- if .Values.logFormatJSON }}
    - --log-format-json=true
    {{- end }}
  ports:
    - name: https
      containerPort: 9443
  readinessProbe:
    httpGet:
      scheme: HTTPS
      path: /healthz
      port: 9443
  {{- with .Values.admission.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: [ALL]
  volumeMounts:
    - name: admission-tls
      mountPath: /tls
      readOnly: true
    - name: admission-no-token
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
{{- end -}}

{{/* The volumes of the webhook's container. The Secret is optional: until cert-manager has
issued it, the webhook container restarts and the pod's other containers (the sync
controller's) run. */}}
{{- define "kvmount.admissionVolumes" -}}
- name: admission-tls
  secret:
    secretName: {{ include "kvmount.admissionName" . }}-tls
    optional: true
- name: admission-no-token
  emptyDir:
    sizeLimit: 1Mi
{{- end -}}
