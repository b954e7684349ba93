{{/*
Names and labels, as `helm create` makes them.
*/}}
{{- define "quiver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "quiver.fullname" -}}
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

{{- define "quiver.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "quiver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quiver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The hosts' pods; the internal Redis' pods carry component=redis instead.
*/}}
{{- define "quiver.hostSelectorLabels" -}}
{{ include "quiver.selectorLabels" . }}
app.kubernetes.io/component: host
{{- end }}

{{- define "quiver.labels" -}}
helm.sh/chart: {{ include "quiver.chart" . }}
{{ include "quiver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "quiver.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "quiver.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "quiver.redisName" -}}
{{- printf "%s-redis" (include "quiver.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The Secret and key holding the --redis URL (external mode).
*/}}
{{- define "quiver.redisSecretName" -}}
{{- if .Values.redis.external.existingSecret }}
{{- .Values.redis.external.existingSecret }}
{{- else }}
{{- printf "%s-redis-url" (include "quiver.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "quiver.redisSecretKey" -}}
{{- if .Values.redis.external.existingSecret }}
{{- .Values.redis.external.existingSecretKey }}
{{- else }}
{{- "url" }}
{{- end }}
{{- end }}

{{/*
Refuse what the binary cannot do yet, and combinations that cannot work. Every
template includes this, so a bad value set fails whichever template renders first.
*/}}
{{- define "quiver.validate" -}}
{{- if and .Values.registry.url (not (hasPrefix "oci://" (.Values.registry.url | toString))) }}
{{- fail (printf "registry.url=%s: expected oci://HOST[:PORT]/PATH" .Values.registry.url) }}
{{- end }}
{{- if and (or .Values.registry.existingSecret .Values.registry.precompiledKeySecret) (not .Values.registry.url) }}
{{- fail "registry.existingSecret / registry.precompiledKeySecret need registry.url" }}
{{- end }}
{{- if .Values.index.url }}
{{- fail "index.url: the shared (PostgreSQL) registry index is not built yet (quiver serve has no --index flag); each host keeps its SQLite index in its data dir. Leave index.url empty." }}
{{- end }}
{{- $hosts := int .Values.replicaCount }}
{{- if .Values.autoscaling.enabled }}{{ $hosts = max $hosts (int .Values.autoscaling.maxReplicas) }}{{ end }}
{{- if .Values.keda.enabled }}{{ $hosts = max $hosts (int .Values.keda.maxReplicaCount) }}{{ end }}
{{- if gt $hosts 1 }}
{{- fail (printf "%d hosts asked for (replicaCount / autoscaling.maxReplicas / keda.maxReplicaCount): more than one host needs the shared registry index, which is not built yet; each host would have its own registry and tokens. Keep them at 1." $hosts) }}
{{- end }}
{{- if not (has .Values.redis.mode (list "internal" "external" "none")) }}
{{- fail (printf "redis.mode=%s: one of internal, external, none" .Values.redis.mode) }}
{{- end }}
{{- if and (eq .Values.redis.mode "external") (not .Values.redis.external.url) (not .Values.redis.external.existingSecret) }}
{{- fail "redis.mode=external needs redis.external.url or redis.external.existingSecret" }}
{{- end }}
{{- if hasPrefix "rediss:" (.Values.redis.external.url | toString) }}
{{- fail "redis.external.url: rediss:// (TLS to Redis) is not built into the quiver binary (its redis client has no TLS feature); use redis://" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret with tls.crt and tls.key)" }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled both scale the host Deployment: KEDA makes and owns the HPA of its ScaledObject, so enable one of them" }}
{{- end }}
{{- if .Values.keda.enabled }}
{{- if and (not .Values.keda.streams) (not .Values.keda.http.enabled) }}
{{- fail "keda.enabled needs keda.streams or keda.http.enabled: with no trigger, KEDA would keep the hosts at zero" }}
{{- end }}
{{- if and .Values.keda.streams (eq .Values.redis.mode "none") }}
{{- fail "keda.streams needs Redis: with redis.mode=none events stay in each host's SQLite" }}
{{- end }}
{{- if and .Values.keda.streams (eq .Values.redis.mode "external") (not .Values.keda.redisAddress) }}
{{- fail "keda.streams with redis.mode=external needs keda.redisAddress (host:port of the Redis KEDA reads)" }}
{{- end }}
{{- if and .Values.keda.http.enabled (or (not .Values.keda.http.serverAddress) (not .Values.keda.http.query)) }}
{{- fail "keda.http.enabled needs keda.http.serverAddress and keda.http.query (Prometheus)" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The --redis URL's env var entry.
*/}}
{{- define "quiver.redisEnv" -}}
{{- if eq .Values.redis.mode "internal" }}
- name: QUIVER_REDIS
  value: {{ printf "redis://%s:%d/0" (include "quiver.redisName" .) (int .Values.redis.internal.port) | quote }}
{{- else if eq .Values.redis.mode "external" }}
- name: QUIVER_REDIS
  valueFrom:
    secretKeyRef:
      name: {{ include "quiver.redisSecretName" . }}
      key: {{ include "quiver.redisSecretKey" . }}
{{- end }}
{{- end }}

{{- define "quiver.probeScheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}
