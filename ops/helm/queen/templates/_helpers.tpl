{{/* Names and labels shared by every object of the chart. */}}

{{- define "queen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "queen.fullname" -}}
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

{{/* The headless Service: it gives each pod a stable DNS name its peers sync with. */}}
{{- define "queen.peersService" -}}
{{- printf "%s-peers" (include "queen.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "queen.selectorLabels" -}}
app.kubernetes.io/name: {{ include "queen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "queen.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "queen.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Sync runs only between two or more pods. */}}
{{- define "queen.syncActive" -}}
{{- if and .Values.sync.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* QUEEN_UDP_PEERS: every pod's stable name; each pod skips its own entry. */}}
{{- define "queen.udpPeers" -}}
{{- $fullname := include "queen.fullname" . }}
{{- $domain := printf "%s.%s.svc.%s" (include "queen.peersService" .) .Release.Namespace .Values.clusterDomain }}
{{- $peers := list }}
{{- range $index := until (int .Values.replicaCount) }}
{{- $peers = append $peers (printf "%s-%d.%s:%d" $fullname $index $domain (int $.Values.queen.udpPort)) }}
{{- end }}
{{- join "," $peers }}
{{- end }}

{{- define "queen.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}
