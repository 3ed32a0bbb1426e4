{{/* Names, labels and the settings every component container shares. */}}

{{- define "sr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sr.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sr.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels; call with (dict "root" $ "component" "modelserver"). */}}
{{- define "sr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sr.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The standard labels; call with (dict "root" $ "component" "modelserver"). */}}
{{- define "sr.labels" -}}
helm.sh/chart: {{ include "sr.chart" .root }}
{{ include "sr.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: streaming-recommender
{{- end -}}

{{- define "sr.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sr.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sr.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "sr.servingName" -}}
{{- printf "%s-serving-%s" (include "sr.fullname" .root) .instance -}}
{{- end -}}

{{/* The MinIO credentials Secret: the user's own, or the one this chart makes. */}}
{{- define "sr.minioSecretName" -}}
{{- if .Values.minio.existingSecret -}}
{{- .Values.minio.existingSecret -}}
{{- else -}}
{{- printf "%s-minio" (include "sr.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "sr.minioSecretAccessKeyKey" -}}
{{- if .Values.minio.existingSecret -}}{{ .Values.minio.existingSecretAccessKeyKey }}{{- else -}}accessKey{{- end -}}
{{- end -}}

{{- define "sr.minioSecretSecretKeyKey" -}}
{{- if .Values.minio.existingSecret -}}{{ .Values.minio.existingSecretSecretKeyKey }}{{- else -}}secretKey{{- end -}}
{{- end -}}

{{- define "sr.kafkaCaMountPath" -}}/etc/recommender/kafka-ca{{- end -}}

{{/* Environment of every component container: the ConfigMap, the MinIO keys, Kafka secrets. */}}
{{- define "sr.env" -}}
- name: MINIO_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "sr.minioSecretName" . }}
      key: {{ include "sr.minioSecretAccessKeyKey" . }}
- name: MINIO_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "sr.minioSecretName" . }}
      key: {{ include "sr.minioSecretSecretKeyKey" . }}
{{- range .Values.kafka.secretConfig }}
- name: {{ printf "KAFKA_%s" (.property | replace "." "_" | upper) }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- end -}}

{{- define "sr.envFrom" -}}
- configMapRef:
    name: {{ include "sr.fullname" . }}
{{- end -}}

{{/* Component-specific settings (a NAME: value map) as env entries. */}}
{{- define "sr.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- define "sr.kafkaCaVolumeMount" -}}
{{- if .Values.kafka.tls.caSecretName }}
- name: kafka-ca
  mountPath: {{ include "sr.kafkaCaMountPath" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "sr.kafkaCaVolume" -}}
{{- if .Values.kafka.tls.caSecretName }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecretName }}
    items:
      - key: {{ .Values.kafka.tls.caSecretKey }}
        path: ca.crt
{{- end }}
{{- end -}}
