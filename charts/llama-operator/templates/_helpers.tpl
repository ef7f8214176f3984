{{/* Names and labels shared by every template. */}}

{{- define "llama-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name; cluster-scoped objects carry it, so two releases never collide. */}}
{{- define "llama-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llama-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llama-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "llama-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "llama-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llama-operator
{{- end -}}

{{- define "llama-operator.serviceAccountName" -}}
{{- default (include "llama-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "llama-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "llama-operator.peeringName" -}}
{{- default (include "llama-operator.fullname" .) .Values.peering.name -}}
{{- end -}}
