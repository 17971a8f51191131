{{/*
The operator's app.kubernetes.io/name. Fixed: the NetworkPolicy the operator writes for each
SessionCache's Redis admits pods with app.kubernetes.io/name=redsess-operator.
*/}}
{{- define "redsess.name" -}}
redsess-operator
{{- end -}}

{{/*
Name of the release's objects: fullnameOverride, else the release name when it already says
redsess-operator, else <release>-operator.
*/}}
{{- define "redsess.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "redsess.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "redsess.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What selects the operator's pods: never changes over upgrades. */}}
{{- define "redsess.selectorLabels" -}}
app.kubernetes.io/name: {{ include "redsess.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The standard labels of every object of the chart. */}}
{{- define "redsess.labels" -}}
{{ include "redsess.selectorLabels" . }}
app.kubernetes.io/part-of: redsess
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "redsess.chart" . }}
{{- end -}}

{{- define "redsess.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "redsess.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "redsess.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
{{- end -}}

{{/*
Renders the rules of files/operator-rbac.yaml under key $.key ("clusterRules" or
"namespaceRules"), each reason as a comment.
*/}}
{{- define "redsess.rbacRules" -}}
{{- $all := .root.Files.Get "files/operator-rbac.yaml" | fromYaml -}}
{{- if hasKey $all "Error" -}}
{{- fail (printf "files/operator-rbac.yaml does not parse: %s" (get $all "Error")) -}}
{{- end -}}
{{- $rules := required (printf "files/operator-rbac.yaml has no %s" .key) (get $all .key) -}}
{{- range $rules }}
# {{ .reason | replace "\n" " " }}
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [{{ .resource | quote }}]
  {{- with .resourceNames }}
  resourceNames:
    {{- range . }}
    - {{ . | quote }}
    {{- end }}
  {{- end }}
  verbs:
    {{- range .verbs }}
    # {{ .verb }}: {{ .reason | replace "\n" " " }}
    - {{ .verb }}
    {{- end }}
{{- end }}
{{- end -}}
