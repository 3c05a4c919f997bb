{{- define "mergevq-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mergevq-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mergevq-operator.labels" -}}
app.kubernetes.io/name: {{ include "mergevq-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mergevq-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mergevq-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mergevq-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mergevq-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules the operator needs, and nothing more. Shared by the ClusterRole and per-namespace Roles. */}}
{{- define "mergevq-operator.rules" -}}
- apiGroups: ["mergevq.ai"]
  resources: ["tokenizertrainings", "artrainings", "samplingjobs"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: ["mergevq.ai"]
  resources: ["tokenizertrainings/status", "artrainings/status", "samplingjobs/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.gang.volcano }}
- apiGroups: ["scheduling.volcano.sh"]
  resources: ["podgroups"]
  verbs: ["create"]
{{- end }}
{{- if .Values.gang.schedulerPlugins }}
- apiGroups: ["scheduling.x-k8s.io"]
  resources: ["podgroups"]
  verbs: ["create"]
{{- end }}
{{- end -}}
