{{/* The prefix of every object's name: the release name, cut to fit a DNS label. */}}
{{- define "flywheel.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "flywheel.labels" -}}
app.kubernetes.io/part-of: embedding-flywheel
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "indexer") */}}
{{- define "flywheel.selector" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "flywheel.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-settings" (include "flywheel.fullname" .)) -}}
{{- end -}}

{{- define "flywheel.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* Every service reads the same settings, as under compose. */}}
{{- define "flywheel.envFrom" -}}
- configMapRef:
    name: {{ include "flywheel.fullname" . }}-settings
- secretRef:
    name: {{ include "flywheel.secretName" . }}
{{- end -}}
