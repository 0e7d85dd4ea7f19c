{{- define "sockwarden.labels" -}}
app.kubernetes.io/part-of: sockwarden
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sockwarden.image" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- $tag := default $root.Chart.AppVersion $img.tag -}}
{{- if $root.Values.image.registry -}}
{{ printf "%s/%s:%s" $root.Values.image.registry $img.repository $tag }}
{{- else -}}
{{ printf "%s:%s" $img.repository $tag }}
{{- end -}}
{{- end -}}

{{- define "sockwarden.prometheusRuleEnabled" -}}
{{- $v := toString .Values.prometheusRule.enabled -}}
{{- if eq $v "true" -}}true
{{- else if and (eq $v "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule") -}}true
{{- end -}}
{{- end -}}
