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

{{- /*
PodDisruptionBudget API: policy/v1 since Kubernetes 1.21, policy/v1beta1 before (1.20 has
only v1beta1; 1.25 removed it). Against a cluster, discovery answers. Offline (helm template)
Helm lists API groups but not kinds, so the (--kube-version) Kubernetes version decides.
*/ -}}
{{- define "sockwarden.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget" -}}policy/v1
{{- else if .Capabilities.APIVersions.Has "policy/v1beta1/PodDisruptionBudget" -}}policy/v1beta1
{{- else if semverCompare ">=1.21.0-0" .Capabilities.KubeVersion.Version -}}policy/v1
{{- else -}}policy/v1beta1
{{- end -}}
{{- end -}}

{{- /*
apiServer.host and .port as HOST:PORT (an IPv6 address in brackets); empty when unset.
values.schema.json refuses one without the other.
*/ -}}
{{- define "sockwarden.apiServer" -}}
{{- with .Values.apiServer.host -}}
{{- if contains ":" . -}}[{{ . }}]{{- else -}}{{ . }}{{- end -}}:{{ $.Values.apiServer.port | toString }}
{{- end -}}
{{- end -}}
