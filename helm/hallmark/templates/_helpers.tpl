{{/* The chart's name. */}}
{{- define "hallmark.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: the release name, prefixed with the chart name unless it holds it. */}}
{{- define "hallmark.fullname" -}}
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

{{/* Labels of every object. */}}
{{- define "hallmark.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "hallmark.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: certificate-authority
{{- end }}

{{/* Labels that select the CA's pods. */}}
{{- define "hallmark.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hallmark.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hallmark.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hallmark.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hallmark.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Service's DNS names, shortest first. */}}
{{- define "hallmark.serviceNames" -}}
{{- $svc := include "hallmark.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) | toJson }}
{{- end }}

{{/* Names of the API server certificate: the Service's DNS names and the extra ones. */}}
{{- define "hallmark.serverNames" -}}
{{- concat (include "hallmark.serviceNames" . | fromJsonArray) .Values.config.extraServerNames | uniq | toJson }}
{{- end }}

{{/* The CRL base URL: configured, or the Service's HTTP URL inside the cluster. */}}
{{- define "hallmark.crlBaseUrl" -}}
{{- if .Values.config.crlBaseUrl }}
{{- .Values.config.crlBaseUrl | trimSuffix "/" }}
{{- else }}
{{- printf "http://%s.%s.svc.%s:%d" (include "hallmark.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.service.httpPort) }}
{{- end }}
{{- end }}

{{/* Where the data dir, the config file and the passphrase live inside the pod. */}}
{{- define "hallmark.dataDir" -}}/var/lib/hallmark{{- end }}
{{- define "hallmark.configDir" -}}/etc/hallmark{{- end }}
{{- define "hallmark.passphraseDir" -}}/etc/hallmark-passphrase{{- end }}

{{/* The pod's affinity: `affinity` as given, else the podAntiAffinity preset (by host). */}}
{{- define "hallmark.affinity" -}}
{{- if .Values.affinity }}
affinity:
  {{- toYaml .Values.affinity | nindent 2 }}
{{- else if eq .Values.podAntiAffinity "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "hallmark.selectorLabels" . | nindent 12 }}
{{- else if eq .Values.podAntiAffinity "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "hallmark.selectorLabels" . | nindent 14 }}
{{- end }}
{{- end }}
