{{/* Name of the chart, or nameOverride. */}}
{{- define "kube-dss.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name used as the prefix of every resource: fullnameOverride, else <release>-<name> (just the
release name when it already contains the chart name). */}}
{{- define "kube-dss.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: name-version. */}}
{{- define "kube-dss.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that say which chart and version manage a resource (no selector labels). */}}
{{- define "kube-dss.metaLabels" -}}
helm.sh/chart: {{ include "kube-dss.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kube-dss
{{- end }}

{{/* Labels of every resource. */}}
{{- define "kube-dss.labels" -}}
app.kubernetes.io/name: {{ include "kube-dss.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "kube-dss.metaLabels" . }}
{{- end }}

{{/* Selector labels of the operator pods. */}}
{{- define "kube-dss.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-dss.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector labels of the emulator pods. */}}
{{- define "kube-dss.emulator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-dss.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: emulator
{{- end }}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "kube-dss.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kube-dss.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository, then @digest or :tag (default appVersion). */}}
{{- define "kube-dss.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: leaderElection.enabled, or when null replicaCount > 1. */}}
{{- define "kube-dss.leaderElection" -}}
{{- if kindIs "bool" .Values.leaderElection.enabled }}
{{- .Values.leaderElection.enabled }}
{{- else }}
{{- gt (int .Values.replicaCount) 1 }}
{{- end }}
{{- end }}

{{/* Name of the leader-election Lease. */}}
{{- define "kube-dss.leaseName" -}}
{{- default (include "kube-dss.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* Names of the emulator's resources. */}}
{{- define "kube-dss.emulator.fullname" -}}
{{- printf "%s-emulator" (include "kube-dss.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "kube-dss.emulator.secretName" -}}
{{- printf "%s-emulator-api-key" (include "kube-dss.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The default connection (URL and API key Secret name/key), from the emulator when it is enabled,
else from defaultConnection. Returns YAML: {url, secretName, secretKey}; url is empty for none. */}}
{{- define "kube-dss.defaultConnection" -}}
{{- if .Values.emulator.enabled }}
{{- if .Values.defaultConnection.url }}
{{- fail "set either defaultConnection.url or emulator.enabled, not both: the emulator sandbox is the default connection when enabled" }}
{{- end }}
url: {{ printf "http://%s.%s.svc:%d" (include "kube-dss.emulator.fullname" .) .Release.Namespace (int .Values.emulator.port) | quote }}
secretName: {{ include "kube-dss.emulator.secretName" . | quote }}
secretKey: apiKey
{{- else if .Values.defaultConnection.url }}
url: {{ .Values.defaultConnection.url | quote }}
secretName: {{ required "defaultConnection.apiKeySecret.name is required when defaultConnection.url is set" .Values.defaultConnection.apiKeySecret.name | quote }}
secretKey: {{ .Values.defaultConnection.apiKeySecret.key | quote }}
{{- else }}
url: ""
{{- end }}
{{- end }}

{{/* Where the default connection's API key and CA are mounted in the operator container. */}}
{{- define "kube-dss.apiKeyDir" -}}/var/run/secrets/kube-dss/dss-api-key{{- end }}
{{- define "kube-dss.caDir" -}}/var/run/secrets/kube-dss/dss-ca{{- end }}
