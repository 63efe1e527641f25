{{/*
Chart name, overridable with nameOverride. Truncated to 63 characters: Kubernetes
names and label values are DNS-1123 labels (RFC 1123 section 2.1).
*/}}
{{- define "activator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, suffixed with the chart name unless the
release name already contains it.
*/}}
{{- define "activator.fullname" -}}
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
Name of the admin Service: the full name with an "-admin" suffix, kept within 63 characters.
*/}}
{{- define "activator.adminServiceName" -}}
{{- printf "%s-admin" (include "activator.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "activator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "activator.labels" -}}
helm.sh/chart: {{ include "activator.chart" . }}
{{ include "activator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the activator pods. Immutable in a Deployment's selector: never add to them.
*/}}
{{- define "activator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "activator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount the pods run as.
*/}}
{{- define "activator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "activator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "activator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
"host:port" for a listener. IPv6 literals are bracketed as in a URI authority
(RFC 3986 section 3.2.2). Call with (list address port).
*/}}
{{- define "activator.hostPort" -}}
{{- $address := index . 0 | toString }}
{{- $port := index . 1 | int }}
{{- if contains ":" $address }}
{{- printf "[%s]:%d" $address $port }}
{{- else }}
{{- printf "%s:%d" $address $port }}
{{- end }}
{{- end }}

{{/*
The activator's config.yaml: .Values.config with listen and admin derived from
bindAddress and ports, so the container ports, probes and Services always agree with
what the activator binds.
*/}}
{{- define "activator.config" -}}
{{- if hasKey .Values.config "listen" }}
{{- fail "config.listen is derived from bindAddress and ports.data: set those instead" }}
{{- end }}
{{- if hasKey .Values.config "admin" }}
{{- fail "config.admin is derived from bindAddress and ports.admin: set those instead" }}
{{- end }}
{{- $config := deepCopy .Values.config }}
{{- $_ := set $config "listen" (include "activator.hostPort" (list .Values.bindAddress .Values.ports.data)) }}
{{- $_ = set $config "admin" (include "activator.hostPort" (list .Values.bindAddress .Values.ports.admin)) }}
{{- toYaml $config }}
{{- end }}

{{/*
Replicas the release runs at least: minReplicas under the HPA, replicaCount otherwise.
*/}}
{{- define "activator.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.minReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/*
Seconds the kubelet waits between the start of termination and SIGKILL: the preStop
sleep, then the activator's drain deadline, plus 10 s for process exit.
*/}}
{{- define "activator.terminationGracePeriodSeconds" -}}
{{- add (.Values.drain.preStopSleepSeconds | int) (.Values.drain.timeoutSeconds | int) 10 }}
{{- end }}
