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

{{- /*
A duration like 5m, 90s or 1h30m in seconds, for PromQL: a rule compares timestamps with
time() - N, and PromQL has no duration arithmetic. values.schema.json limits the input to
s/m/h parts; anything else stops the render here too.
*/ -}}
{{- define "sockwarden.durationSeconds" -}}
{{- if not (regexMatch "^([0-9]+[smh])+$" .) -}}
{{- fail (printf "%q is not a duration of s, m and h parts (like 5m or 1h30m)" .) -}}
{{- end -}}
{{- $unit := dict "s" 1 "m" 60 "h" 3600 -}}
{{- $total := 0 -}}
{{- range regexFindAll "[0-9]+[smh]" . -1 -}}
{{- $total = add $total (mul (atoi (regexFind "^[0-9]+" .)) (get $unit (regexFind "[smh]$" .))) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{- /*
Relabelings shared by the ServiceMonitor and the PodMonitor: a stable job per component
(the Prometheus Operator's default is the Service's name, or "<namespace>/<PodMonitor>"),
which the PrometheusRule selects on, and the node the target runs on.
*/ -}}
{{- define "sockwarden.monitorRelabelings" -}}
- action: replace
  sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_name]
  regex: (sockwarden-probe|sockwarden-operator)
  replacement: $1
  targetLabel: job
- action: replace
  sourceLabels: [__meta_kubernetes_pod_node_name]
  regex: (.+)
  replacement: $1
  targetLabel: node
{{- end -}}
