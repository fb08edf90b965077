{{/*
The chart name, or nameOverride.
*/}}
{{- define "quorate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the objects: fullnameOverride, or the release name when it already holds the
chart name, or release-chart. Cut to 63 characters (the DNS label limit).
*/}}
{{- define "quorate.fullname" -}}
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

{{/*
The labels that select the operator Pods. Member Pods carry app.kubernetes.io/name=zookeeper,
so they never match.
*/}}
{{- define "quorate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quorate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The labels on every object the chart renders.
*/}}
{{- define "quorate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "quorate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "quorate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "quorate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "quorate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The watched namespaces, checked: each a DNS label, none twice. Empty means cluster-wide.
*/}}
{{- define "quorate.watchNamespaces" -}}
{{- $seen := dict }}
{{- range .Values.watchNamespaces }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .) }}
{{- fail (printf "watchNamespaces: %q is not a namespace name" .) }}
{{- end }}
{{- if hasKey $seen . }}
{{- fail (printf "watchNamespaces: %q is listed twice" .) }}
{{- end }}
{{- $_ := set $seen . true }}
{{- end }}
{{- join "," .Values.watchNamespaces }}
{{- end }}
