{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "feedagent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: "<release>-feedagent", or the release name when it contains the chart name. */}}
{{- define "feedagent.fullname" -}}
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

{{- define "feedagent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "feedagent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "feedagent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "feedagent.labels" -}}
helm.sh/chart: {{ include "feedagent.chart" . }}
{{ include "feedagent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: feedagent
{{- end }}

{{- define "feedagent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "feedagent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "feedagent.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret the pod reads its environment from; empty when there is none. */}}
{{- define "feedagent.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else if .Values.secret.values }}
{{- include "feedagent.fullname" . }}
{{- end }}
{{- end }}

{{/* The admin port, from config.admin.listen (HOST:PORT); the config is the single source of truth. */}}
{{- define "feedagent.adminPort" -}}
{{- $listen := dig "admin" "listen" "127.0.0.1:9464" .Values.config | toString }}
{{- regexFind "[0-9]+$" $listen }}
{{- end }}

{{/*
Checks the values cannot express in values.schema.json; fails the render with a
message naming the key to fix. Included by the Deployment.
*/}}
{{- define "feedagent.validate" -}}
{{- $listen := dig "admin" "listen" "127.0.0.1:9464" .Values.config | toString }}
{{- $host := regexReplaceAll ":[0-9]+$" $listen "" | trimPrefix "[" | trimSuffix "]" }}
{{- if or (hasPrefix "127." $host) (eq $host "localhost") (eq $host "::1") }}
{{- fail (printf "config.admin.listen is %s: the probes, the Service and Prometheus cannot reach a loopback address; use 0.0.0.0:PORT" $listen) }}
{{- end }}
{{- $port := include "feedagent.adminPort" . | atoi }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail (printf "config.admin.listen is %s: the chart needs a fixed port (1-65535), not 0" $listen) }}
{{- end }}
{{- if and .Values.secret.existingSecret .Values.secret.values }}
{{- fail "set only one of secret.existingSecret (a Secret you manage) and secret.values (a Secret the chart creates)" }}
{{- end }}
{{- $exchanges := .Values.config.exchanges | default dict }}
{{- $demo := get $exchanges "demo" }}
{{- if and $demo (eq (get $demo "environment" | toString) "simulator") (gt (len $exchanges) 1) }}
{{- fail "config.exchanges.demo is the chart's built-in simulator demo: Helm merged it with your exchanges; remove it with `demo: null` under config.exchanges" }}
{{- end }}
{{- if not .Values.secret.existingSecret }}
{{- $provided := dict }}
{{- range $name, $_ := .Values.secret.values }}{{ $_ := set $provided $name true }}{{ end }}
{{- range .Values.extraEnv }}{{ $_ := set $provided .name true }}{{ end }}
{{- range $name, $exchange := $exchanges }}
{{- if and $exchange (ne (get $exchange "environment" | toString) "simulator") }}
{{- range $key := list "api_key_env" "api_secret_env" }}
{{- $var := dig "credentials" $key "" $exchange }}
{{- if and $var (not (hasKey $provided $var)) }}
{{- fail (printf "config.exchanges.%s.credentials.%s names %s, which neither secret.values nor extraEnv provides (or set secret.existingSecret)" $name $key $var) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
