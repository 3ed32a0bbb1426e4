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

{{/* A serving instance's namespace-qualified host: the pipeline's pods (KFP's namespace) and the
model server reach it by the same address, which the model updates carry. */}}
{{- define "sr.servingHost" -}}
{{- printf "%s.%s.svc" (include "sr.servingName" .) .root.Release.Namespace -}}
{{- end -}}

{{- define "sr.modelserverName" -}}
{{- printf "%s-modelserver" (include "sr.fullname" .) -}}
{{- end -}}

{{/* The bootstrap Job of this revision. Job names must fit a 63-character label (job-name), with
room for "-bootstrap-" and the revision. */}}
{{- define "sr.bootstrapJobName" -}}
{{- printf "%s-bootstrap-%d" (include "sr.fullname" . | trunc 42 | trimSuffix "-") (int .Release.Revision) -}}
{{- end -}}

{{- define "sr.pipelineConfigMapName" -}}
{{- printf "%s-pipeline" (include "sr.fullname" .) -}}
{{- end -}}

{{/* The model server's consumer group (MODELSERVER_GROUP_ID, default as in modelserver/settings.py). */}}
{{- define "sr.modelserverGroupId" -}}
{{- .Values.modelserver.env.MODELSERVER_GROUP_ID | default .Values.extraConfig.MODELSERVER_GROUP_ID | default "recommender-modelserver" -}}
{{- end -}}

{{/*
Checks the schema cannot make (JSON schema compares no two values) and values without which
nothing could run; configmap.yaml includes it, so every render stops with all the problems at once.
*/}}
{{- define "sr.validate" -}}
{{- $errors := list -}}
{{- if not .Values.image.repository -}}
{{- $errors = append $errors "image.repository is not set: set it to where you pushed the image built from the Dockerfile (README \"The image\"), e.g. --set image.repository=registry.example.com/streaming-recommender" -}}
{{- end -}}
{{- if not (or .Values.minio.existingSecret (and .Values.minio.accessKey .Values.minio.secretKey)) -}}
{{- $errors = append $errors "MinIO credentials missing: set minio.existingSecret (a Secret with the keys accessKey and secretKey), or minio.accessKey and minio.secretKey" -}}
{{- end -}}
{{- $partitions := int .Values.topics.partitions -}}
{{- $hpa := .Values.modelserver.autoscaling -}}
{{- $keda := $hpa.keda -}}
{{- if and $hpa.enabled $keda.enabled -}}
{{- $errors = append $errors "modelserver.autoscaling.enabled (HPA) and modelserver.autoscaling.keda.enabled (KEDA) are both true: KEDA makes its own HPA for the Deployment; enable one of them" -}}
{{- end -}}
{{- $idle := "replicas beyond the request topic's partitions sit idle in the consumer group" -}}
{{- if $hpa.enabled -}}
{{- if gt (int $hpa.maxReplicas) $partitions -}}
{{- $errors = append $errors (printf "modelserver.autoscaling.maxReplicas (%d) is above topics.partitions (%d): %s; lower the one or raise the other" (int $hpa.maxReplicas) $partitions $idle) -}}
{{- end -}}
{{- if gt (int $hpa.minReplicas) (int $hpa.maxReplicas) -}}
{{- $errors = append $errors (printf "modelserver.autoscaling.minReplicas (%d) is above modelserver.autoscaling.maxReplicas (%d)" (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- end -}}
{{- else if $keda.enabled -}}
{{- if gt (int $keda.maxReplicaCount) $partitions -}}
{{- $errors = append $errors (printf "modelserver.autoscaling.keda.maxReplicaCount (%d) is above topics.partitions (%d): %s; lower the one or raise the other" (int $keda.maxReplicaCount) $partitions $idle) -}}
{{- end -}}
{{- if gt (int $keda.minReplicaCount) (int $keda.maxReplicaCount) -}}
{{- $errors = append $errors (printf "modelserver.autoscaling.keda.minReplicaCount (%d) is above modelserver.autoscaling.keda.maxReplicaCount (%d)" (int $keda.minReplicaCount) (int $keda.maxReplicaCount)) -}}
{{- end -}}
{{- else if gt (int .Values.modelserver.replicaCount) $partitions -}}
{{- $errors = append $errors (printf "modelserver.replicaCount (%d) is above topics.partitions (%d): %s; lower the one or raise the other" (int .Values.modelserver.replicaCount) $partitions $idle) -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\n  - %s" (join "\n  - " $errors)) -}}
{{- end -}}
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

{{/* The MinIO keys: the whole secret environment of the components that never talk to Kafka
(the model-sync sidecars, the data publisher). */}}
{{- define "sr.minioEnv" -}}
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
{{- end -}}

{{/* Secret environment of the components that use Kafka: the MinIO keys and the Kafka secrets. */}}
{{- define "sr.env" -}}
{{ include "sr.minioEnv" . }}
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
