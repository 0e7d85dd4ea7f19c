#!/usr/bin/env bash
# Checks the Helm chart and the plain manifests: lint, render with default and example
# values, assert what each value renders, refuse bad values, render as an umbrella chart's
# dependency, validate everything against the Kubernetes schemas offline, security-lint with
# checkov (exceptions in charts/sockwarden/.checkov.yaml), fail when deploy/ or the chart
# README's values table is stale, and check the alerts and dashboard (scripts/check-alerts.sh).
#
# The last part checks the chart against the operator binary (OPERATOR_BIN, default
# target/debug/sockwarden-operator) and the probe binary (PROBE_BIN, default
# target/debug/sockwarden-probe): every flag the chart passes must exist, and the probe
# DaemonSet rendered from the chart's own operator arguments is validated and scanned. It
# runs after everything else and reports on its own, so "the chart is wrong" and "this
# operator lacks a flag the chart passes" are told apart.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/sockwarden-tools/bin:$PATH"
work=$(mktemp -d /tmp/sw-chart.XXXXXX)
trap 'rm -rf "$work"' EXIT
chart=charts/sockwarden
operator_bin=${OPERATOR_BIN:-target/debug/sockwarden-operator}
probe_bin=${PROBE_BIN:-target/debug/sockwarden-probe}

# The chart's crds/ hold the base shape of crds/ (no CEL rules; api::crds): crdgen writes
# both, and the generator test (cargo test -p api) fails when either is stale.
if grep -q x-kubernetes-validations "$chart"/crds/*.yaml; then
  echo "$chart/crds must not carry CEL rules (Kubernetes < 1.25 refuses them): run crdgen" >&2; exit 1
fi

helm lint --strict "$chart"
# README's install command, client-side (no cluster here)
helm install sockwarden "$chart" -n sockwarden-system --create-namespace --dry-run=client >/dev/null
helm template sockwarden "$chart" -n sockwarden-system >"$work/default.yaml"
for values in "$chart"/examples/*.yaml; do
  helm template sockwarden "$chart" -n sockwarden-system -f "$values" >"$work/$(basename "$values")"
  echo "[chart] renders with $values"
done
# Rendering with the Prometheus Operator present adds the PrometheusRule. The detection alert
# compares the probe's last-seen gauge with the window in seconds (an increase() of the counter
# never sees a pod's first finding); scripts/check-alerts.sh tests how it behaves.
helm template sockwarden "$chart" -n sockwarden-system --api-versions monitoring.coreos.com/v1/PrometheusRule >"$work/with-prometheus.yaml"
grep -q "alert: SockwardenRuntimeSocketAbuse" "$work/with-prometheus.yaml"
grep -qF '(sockwarden_probe_finding_last_seen_timestamp_seconds) > time() - 300' "$work/with-prometheus.yaml"
if grep -q 'increase(sockwarden_probe_findings_total' "$work/with-prometheus.yaml"; then
  echo "a rule uses increase() of sockwarden_probe_findings_total: it misses every pod's first finding" >&2; exit 1
fi

# What each value renders. `expect NAME 'python'` runs the assertions on $work/NAME.yaml, with
# `objs` keyed by (kind, name), the operator Deployment (`deploy`), its pod spec (`pod`), its
# container (`op`, `args`, `env`) and the PodDisruptionBudget (`pdb`, None if absent). Every
# render also has to give each Service and container port a protocol: server-side apply on
# 1.20 keys those lists by port and protocol and refuses a port without one.
render() { # name helm-args...
  local name=$1; shift
  helm template sockwarden "$chart" -n sockwarden-system "$@" >"$work/$name.yaml"
}
expect() { # name python-assertions
  python3 - "$work/$1.yaml" "$2" <<'PY' || { echo "[chart] render '$1' is not as expected" >&2; exit 1; }
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
objs = {(d["kind"], d["metadata"]["name"]): d for d in docs}
deploy = objs[("Deployment", "sockwarden-operator")]
pod = deploy["spec"]["template"]["spec"]
op = next(c for c in pod["containers"] if c["name"] == "operator")
args = op["args"]
env = {e["name"]: e.get("value") for e in op.get("env", [])}
pdb = objs.get(("PodDisruptionBudget", "sockwarden-operator"))
for d in docs:
    spec = d.get("spec") or {}
    ports = list(spec.get("ports", [])) if d["kind"] == "Service" else []
    for c in spec.get("template", {}).get("spec", {}).get("containers", []):
        ports += c.get("ports", [])
    for p in ports:
        assert p.get("protocol") == "TCP", f"{d['kind']}/{d['metadata']['name']}: port without protocol: {p}"
exec(sys.argv[2])
PY
}
expect default '
assert "--owner-deployment=sockwarden-operator" in args, args
assert not any(a.startswith(("--probe-api-server", "--probe-host-network")) for a in args), args
assert "KUBERNETES_SERVICE_HOST" not in env and "KUBERNETES_SERVICE_PORT" not in env, env
assert "hostNetwork" not in pod and "dnsPolicy" not in pod and "strategy" not in deploy["spec"], pod
assert "host" not in op["livenessProbe"]["httpGet"] and "host" not in op["readinessProbe"]["httpGet"]
assert pdb["apiVersion"] == "policy/v1", pdb["apiVersion"]
own = [r for r in objs[("Role", "sockwarden-operator")]["rules"] if "deployments" in r["resources"]]
assert own == [{"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["sockwarden-operator"], "verbs": ["get"]}], own
events = [r for r in objs[("ClusterRole", "sockwarden-operator")]["rules"] if "events" in r["resources"]]
assert events == [{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]}], events
crds = [r for r in objs[("ClusterRole", "sockwarden-operator")]["rules"] if "customresourcedefinitions" in r["resources"]]
assert crds == [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                 "resourceNames": ["dockersocketpolicies.sockwarden.io", "dockerabusefindings.sockwarden.io",
                                   "dockersocketprobes.sockwarden.io"],
                 "verbs": ["get", "patch"]}], crds
'
render api-server --set apiServer.host=127.0.0.1 --set apiServer.port=16443
expect api-server '
assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1" and env["KUBERNETES_SERVICE_PORT"] == "16443", env
assert "--probe-api-server=127.0.0.1:16443" in args, args
assert "hostNetwork" not in pod and "--probe-host-network" not in args
'
printf 'apiServer:\n  host: "fd00::1"\n  port: 6443\n' >"$work/ipv6-values.yaml"
render api-server-ipv6 -f "$work/ipv6-values.yaml"
expect api-server-ipv6 '
assert env["KUBERNETES_SERVICE_HOST"] == "fd00::1" and env["KUBERNETES_SERVICE_PORT"] == "6443", env
assert "--probe-api-server=[fd00::1]:6443" in args, args
'
render operator-host-network --set operator.hostNetwork=true
expect operator-host-network '
assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet", pod
assert op["livenessProbe"]["httpGet"]["host"] == "127.0.0.1" and op["readinessProbe"]["httpGet"]["host"] == "127.0.0.1"
assert deploy["spec"]["strategy"] == {"type": "Recreate"}, deploy["spec"]["strategy"]
assert "--probe-host-network" not in args and "KUBERNETES_SERVICE_HOST" not in env
'
render probe-host-network --set probe.hostNetwork=true
expect probe-host-network '
assert "--probe-host-network" in args, args
assert "hostNetwork" not in pod
'
# The test bed's shape (KUBE-TESTBED.md): Kubernetes 1.20, host network, API server on
# loopback; two replicas so that the PodDisruptionBudget is rendered too.
render testbed --kube-version 1.20.2 -f "$chart/examples/host-network.yaml" --set operator.replicas=2
expect testbed '
assert pod["hostNetwork"] is True and "--probe-host-network" in args and "--probe-api-server=127.0.0.1:16443" in args, args
assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1" and env["KUBERNETES_SERVICE_PORT"] == "16443", env
assert pdb["apiVersion"] == "policy/v1beta1", pdb["apiVersion"]
'
echo "[chart] apiServer.*, operator.hostNetwork and probe.hostNetwork render as documented"

# Keeping the operator apart from ordinary workloads: the scheduling values render as given;
# a user's affinity replaces the default spread of replicas over nodes.
cat >"$work/scheduling-values.yaml" <<'YAML'
operator:
  nodeSelector: {node-role.kubernetes.io/control-plane: ""}
  tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: In, values: [system]}]}]
  priorityClassName: system-cluster-critical
YAML
render scheduling -f "$work/scheduling-values.yaml"
expect scheduling '
assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}, pod.get("nodeSelector")
assert pod["tolerations"] == [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}], pod.get("tolerations")
assert pod["priorityClassName"] == "system-cluster-critical", pod.get("priorityClassName")
assert list(pod["affinity"]) == ["nodeAffinity"], pod["affinity"]
'
expect default '
assert "priorityClassName" not in pod and "nodeSelector" not in pod and "tolerations" not in pod, pod
assert pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
'
echo "[chart] operator.nodeSelector, tolerations, affinity and priorityClassName render as given"

# Monitoring: both monitors keep the probe's labels and set job/node (check-alerts.sh tests
# the rules through them); objects go where asked, with the labels a Prometheus selects on.
cat >"$work/monitoring-values.yaml" <<'YAML'
metrics:
  serviceMonitor: {enabled: true, namespace: monitoring, labels: {release: kps}, scrapeTimeout: 10s}
  podMonitor: {enabled: true, labels: {release: kps}, interval: 15s}
prometheusRule: {enabled: true, namespace: monitoring, labels: {release: kps}, findingWindow: 1h30m}
dashboard: {enabled: true, namespace: grafana, annotations: {grafana_folder: Security}}
YAML
render monitoring -f "$work/monitoring-values.yaml"
expect monitoring '
sm, pm = objs[("ServiceMonitor", "sockwarden")], objs[("PodMonitor", "sockwarden")]
rule, dash = objs[("PrometheusRule", "sockwarden")], objs[("ConfigMap", "sockwarden-dashboard")]
assert sm["metadata"]["namespace"] == "monitoring" and pm["metadata"]["namespace"] == "sockwarden-system"
assert rule["metadata"]["namespace"] == "monitoring" and dash["metadata"]["namespace"] == "grafana"
for o in (sm, pm, rule):
    assert o["metadata"]["labels"]["release"] == "kps", o["metadata"]["labels"]
for m, eps in ((sm, sm["spec"]["endpoints"]), (pm, pm["spec"]["podMetricsEndpoints"])):
    assert m["spec"]["namespaceSelector"] == {"matchNames": ["sockwarden-system"]}, m["spec"]
    assert len(eps) == 1 and eps[0]["honorLabels"] is True, eps
    assert {r["targetLabel"] for r in eps[0]["relabelings"]} == {"job", "node"}, eps[0]["relabelings"]
assert sm["spec"]["endpoints"][0]["scrapeTimeout"] == "10s" and "scrapeTimeout" not in pm["spec"]["podMetricsEndpoints"][0]
assert pm["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"
abuse = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "SockwardenRuntimeSocketAbuse"][0]
assert abuse["expr"].endswith("> time() - 5400"), abuse["expr"]
assert dash["metadata"]["labels"]["grafana_dashboard"] == "1" and dash["metadata"]["annotations"] == {"grafana_folder": "Security"}
'
expect default '
assert not [k for k in objs if k[0] in ("ServiceMonitor", "PodMonitor", "PrometheusRule") or k == ("ConfigMap", "sockwarden-dashboard")], list(objs)
'
for w in 45s 5m 2h 1h1m1s; do
  helm template sockwarden "$chart" --set prometheusRule.enabled=true --set prometheusRule.findingWindow=$w >"$work/window.yaml"
  want=$(python3 -c 'import re,sys; print(sum(int(n)*{"s":1,"m":60,"h":3600}[u] for n,u in re.findall(r"(\d+)([smh])", sys.argv[1])))' $w)
  grep -qF "> time() - $want" "$work/window.yaml" || { echo "findingWindow=$w does not render as $want seconds" >&2; exit 1; }
done
echo "[chart] monitors, PrometheusRule and dashboard render as the values say; findingWindow in seconds"

# The probe pods' values go into the ConfigMap the operator reads (--probe-settings); its
# checksum on the operator's pod template restarts the operator when they change. What the
# operator renders from them is asserted against the binary at the end (render_ds).
cat >"$work/probe-settings-values.yaml" <<'YAML'
image:
  pullSecrets: [{name: regcred}]
probe:
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: security, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: NotIn, values: [gpu]}]}]
  resources:
    requests: {cpu: 20m, memory: 32Mi}
    limits: {cpu: 1, memory: 128Mi}
  podAnnotations: {example.com/team: security}
  podLabels: {team: security}
  extraArgs: ["--write-rate=10"]
  extraEnv: [{name: RUST_LOG, value: debug}]
  httpOutput: {url: "https://collector.example:8443/v1/findings", queue: 500}
YAML
render probe-settings -f "$work/probe-settings-values.yaml"
expect default '
cm = objs[("ConfigMap", "sockwarden-probe-settings")]
assert "--probe-settings=/etc/sockwarden/probe-settings.yaml" in args, args
assert {"name": "probe-settings", "mountPath": "/etc/sockwarden", "readOnly": True} in op["volumeMounts"], op["volumeMounts"]
assert pod["volumes"] == [{"name": "probe-settings", "configMap": {"name": "sockwarden-probe-settings", "items": [{"key": "settings.yaml", "path": "probe-settings.yaml"}]}}], pod["volumes"]
assert len(deploy["spec"]["template"]["metadata"]["annotations"]["checksum/probe-settings"]) == 64
assert "imagePullSecrets" not in pod, pod
settings = yaml.safe_load(cm["data"]["settings.yaml"])
assert settings["tolerations"] == [{"operator": "Exists"}], settings
'
expect probe-settings '
assert pod["imagePullSecrets"] == [{"name": "regcred"}], pod.get("imagePullSecrets")
settings = yaml.safe_load(objs[("ConfigMap", "sockwarden-probe-settings")]["data"]["settings.yaml"])
assert settings["imagePullSecrets"] == [{"name": "regcred"}] and settings["extraArgs"] == ["--write-rate=10"], settings
assert settings["httpOutput"] == {"url": "https://collector.example:8443/v1/findings", "queue": 500}, settings
'
python3 - "$work/default.yaml" "$work/probe-settings.yaml" <<'PY' || { echo "[chart] the operator is not restarted when probe values change" >&2; exit 1; }
import sys, yaml
def checksum(path):
    for d in yaml.safe_load_all(open(path)):
        if d and d["kind"] == "Deployment":
            return d["spec"]["template"]["metadata"]["annotations"]["checksum/probe-settings"]
assert checksum(sys.argv[1]) != checksum(sys.argv[2])
PY
echo "[chart] probe.* and image.pullSecrets reach the ConfigMap sockwarden-probe-settings; a change restarts the operator"

# The findings admission policy: rendered only where the API server serves
# ValidatingAdmissionPolicy (1.30+), never on the test bed's 1.20; the expressions
# themselves are evaluated against allowed and forged requests by api/tests/admission.rs.
vap=admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy
render vap --api-versions "$vap"
expect vap '
vap = objs[("ValidatingAdmissionPolicy", "sockwarden-probe-findings")]
binding = objs[("ValidatingAdmissionPolicyBinding", "sockwarden-probe-findings")]
assert vap["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
assert binding["spec"] == {"policyName": "sockwarden-probe-findings", "validationActions": ["Deny"]}, binding["spec"]
assert vap["spec"]["matchConditions"][0]["expression"] == "request.userInfo.username == \x27system:serviceaccount:sockwarden-system:sockwarden-probe\x27", vap["spec"]["matchConditions"]
assert vap["spec"]["failurePolicy"] == "Fail"
'
for args in "" "--kube-version 1.20.2" "--api-versions $vap --set admissionPolicy.enabled=false"; do
  # shellcheck disable=SC2086
  render no-vap $args
  expect no-vap 'assert not [k for k in objs if k[0].startswith("ValidatingAdmissionPolicy")], [k for k in objs if k[0].startswith("Validating")]'
done
echo "[chart] the findings ValidatingAdmissionPolicy renders only where the API server serves it"

# PodDisruptionBudget API: what discovery reports wins; offline (Helm's default capabilities
# list groups, not kinds), the Kubernetes version decides.
pdb_is() { # want helm-args...
  local want=$1; shift
  render pdb "$@"
  expect pdb "assert pdb and pdb['apiVersion'] == '$want', (pdb or {}).get('apiVersion')"
}
pdb_is policy/v1
pdb_is policy/v1beta1 --kube-version 1.20.2
pdb_is policy/v1beta1 --kube-version 1.20.2 --api-versions policy/v1beta1/PodDisruptionBudget
pdb_is policy/v1 --api-versions policy/v1/PodDisruptionBudget
pdb_is policy/v1 --kube-version 1.23.0 --api-versions policy/v1/PodDisruptionBudget --api-versions policy/v1beta1/PodDisruptionBudget
render pdb --set operator.replicas=1
expect pdb 'assert pdb is None, pdb'
if helm template sockwarden "$chart" --kube-version 1.19.16 >/dev/null 2>&1; then
  echo "the chart renders for Kubernetes 1.19, below its kubeVersion" >&2; exit 1
fi
echo "[chart] PodDisruptionBudget: policy/v1 from 1.21, policy/v1beta1 on 1.20"

# Bad values are refused by values.schema.json, with the offending key named.
refuse() { # expected-message helm-set-args...
  local want=$1; shift
  if helm template sockwarden "$chart" "$@" >"$work/bad.out" 2>&1; then
    echo "values $* were accepted" >&2; exit 1
  fi
  grep -q -- "$want" "$work/bad.out" || { echo "refusal of $* does not mention $want:" >&2; cat "$work/bad.out" >&2; exit 1; }
}
refuse "/defaultPolicy/mode" --set defaultPolicy.mode=Block
refuse "/defaultPolicy/findingsTTL" --set defaultPolicy.findingsTTL=-1h
refuse "/operator/replicas" --set operator.replicas=0
refuse "/image/pullPolicy" --set image.pullPolicy=Sometimes
refuse "additional properties" --set operator.replica=2
refuse "/apiServer/port" --set apiServer.host=127.0.0.1
refuse "/apiServer/port" --set apiServer.port=16443
refuse "/apiServer/port" --set apiServer.host=127.0.0.1 --set apiServer.port=0
refuse "/apiServer/host" --set apiServer.host=https://127.0.0.1 --set apiServer.port=16443
refuse "/operator/hostNetwork" --set operator.hostNetwork=yes
refuse "/probe/hostNetwork" --set probe.hostNetwork=yes
refuse "/operator/priorityClassName" --set operator.priorityClassName=Not_A_Name
refuse "/operator/tolerations" --set operator.tolerations=none
refuse "/admissionPolicy/enabled" --set admissionPolicy.enabled=yes
refuse "additional properties" --set admissionPolicy.enable=true
refuse "/prometheusRule/findingWindow" --set prometheusRule.findingWindow=1d
refuse "/prometheusRule/findingWindow" --set prometheusRule.findingWindow=5
refuse "/metrics/serviceMonitor/scrapeTimeout" --set metrics.serviceMonitor.scrapeTimeout=ten
refuse "/metrics/podMonitor/labels" --set metrics.podMonitor.labels=release
refuse "/dashboard/namespace" --set dashboard.namespace=Not_A_Namespace
refuse "additional properties" --set dashboard.enable=true
refuse "/probe/nodeSelector" --set probe.nodeSelector.pool=1
refuse "/probe/tolerations" --set probe.tolerations=all
refuse "/probe/affinity" --set probe.affinity=none
refuse "additional properties" --set probe.resources.limit.cpu=1
refuse "/probe/podAnnotations" --set probe.podAnnotations.a=1
refuse "/probe/podLabels" --set probe.podLabels.app\\.kubernetes\\.io/name=other
refuse "/probe/extraArgs/0" --set "probe.extraArgs={run}"
refuse "/probe/extraEnv/0" --set "probe.extraEnv[0].value=x"
refuse "/probe/httpOutput/url" --set probe.httpOutput.url=ftp://collector
refuse "/probe/httpOutput/queue" --set probe.httpOutput.url=http://c --set probe.httpOutput.queue=0
refuse "/probe/httpOutput/queue" --set probe.httpOutput.queue=100
refuse "/image/pullSecrets/0" --set "image.pullSecrets[0].nam=regcred"
echo "[chart] bad values are refused"

# As a dependency: an umbrella chart passes `global` to every subchart and this chart's
# values under its name; the schema must accept the first and the second must take effect.
umbrella="$work/umbrella"
mkdir -p "$umbrella"
version=$(python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["version"])' "$chart/Chart.yaml")
cat >"$umbrella/Chart.yaml" <<YAML
apiVersion: v2
name: umbrella
version: 0.0.1
dependencies:
- name: sockwarden
  version: "$version"
  repository: "file://$PWD/$chart"
YAML
cat >"$umbrella/values.yaml" <<'YAML'
global: {foo: bar}
sockwarden:
  operator: {replicas: 3}
  defaultPolicy: {mode: Enforce}
YAML
helm dependency build "$umbrella" >/dev/null
helm template sockwarden "$umbrella" -n sockwarden-system >"$work/umbrella.yaml"
expect umbrella '
assert deploy["spec"]["replicas"] == 3, deploy["spec"]["replicas"]
assert objs[("DockerSocketPolicy", "sockwarden-default")]["spec"]["mode"] == "Enforce"
'
echo "[chart] renders as a dependency, with global values and its own overrides"

# Kubernetes schemas (strict), the operator-rendered DaemonSet included; the default policy
# against the CRD's own schema.
"$operator_bin" render-daemonset >"$work/daemonset.yaml"
kubernetes-validate --strict --quiet "$work/default.yaml" "$work/with-prometheus.yaml" "$work/daemonset.yaml" crds/*.yaml \
  "$work/api-server.yaml" "$work/api-server-ipv6.yaml" "$work/operator-host-network.yaml" "$work/probe-host-network.yaml" \
  "$work/scheduling.yaml" "$work/vap.yaml" "$work/monitoring.yaml" "$work/probe-settings.yaml"
# The 1.20 render: no schema set here knows policy/v1beta1 (the oldest is 1.25, which removed
# it), so the rest is validated against 1.25 and the PodDisruptionBudget may only use fields
# v1beta1 has.
python3 - "$work/testbed.yaml" "$work/testbed-without-pdb.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
assert [d["apiVersion"] for d in pdbs] == ["policy/v1beta1"], pdbs
assert set(pdbs[0]["spec"]) <= {"minAvailable", "maxUnavailable", "selector"}, pdbs[0]["spec"]
yaml.safe_dump_all([d for d in docs if d["kind"] != "PodDisruptionBudget"], open(sys.argv[2], "w"))
PY
kubernetes-validate --strict --quiet -k 1.25.0 "$work/testbed-without-pdb.yaml"
python3 - "$work/default.yaml" crds/dockersocketpolicies.yaml <<'PY'
import sys, yaml, jsonschema
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "DockerSocketPolicy"]
crd = yaml.safe_load(open(sys.argv[2]))
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
assert docs, "the default policy is rendered"
for d in docs:
    jsonschema.validate(d, schema)
print(f"[chart] {len(docs)} DockerSocketPolicy valid against its CRD schema")
PY

# Security lint: rendered chart and the probe DaemonSet.
mkdir -p "$work/lint"
cp "$work/default.yaml" "$work/daemonset.yaml" "$work/lint/"
helm template sockwarden "$chart" -n sockwarden-system -f "$work/monitoring-values.yaml" \
  --show-only templates/monitoring.yaml --show-only templates/dashboard.yaml >"$work/lint/monitoring.yaml"
checkov -d "$work/lint" --framework kubernetes --compact --quiet --skip-download --config-file "$chart/.checkov.yaml"
# With operator.hostNetwork/probe.hostNetwork the host-network check (CKV_K8S_19) fails by
# design; it is skipped for those renders only (README.md, "Security posture").
host_network_skips=$(python3 -c 'import sys, yaml; print(",".join(yaml.safe_load(open(sys.argv[1]))["skip-check"] + ["CKV_K8S_19"]))' "$chart/.checkov.yaml")
mkdir -p "$work/lint-host-network"
cp "$work/testbed.yaml" "$work/lint-host-network/"
checkov -d "$work/lint-host-network" --framework kubernetes --compact --quiet --skip-download \
  --config-file "$chart/.checkov.yaml" --skip-check "$host_network_skips"
echo "[chart] checkov: no findings beyond the documented exceptions"

bash scripts/render-deploy.sh "$work/deploy"
diff -r "$work/deploy" deploy >/dev/null || { echo "deploy/ is stale: run scripts/render-deploy.sh" >&2; exit 1; }
echo "[chart] deploy/ is current"

# The values table in the chart's README is generated from values.yaml's comments.
python3 scripts/chart-readme.py --check
# Alerts (promtool check and unit tests, through the rendered monitors) and the dashboard.
bash scripts/check-alerts.sh

# --- Against the operator binary: the flags the chart passes, and the DaemonSets they give. ---
problems=()
"$operator_bin" run --help >"$work/run-help.txt" 2>&1
while IFS= read -r line; do problems+=("$line"); done < <(python3 - "$work/run-help.txt" "$operator_bin" \
  "$work"/{default,api-server,operator-host-network,probe-host-network,testbed,probe-settings}.yaml <<'PY'
import re, sys, yaml
known = set(re.findall(r"--[a-z0-9][a-z0-9-]*", open(sys.argv[1]).read()))
missing = {}
for path in sys.argv[3:]:
    for d in yaml.safe_load_all(open(path)):
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "sockwarden-operator":
            for a in d["spec"]["template"]["spec"]["containers"][0]["args"]:
                flag = a.split("=", 1)[0]
                if flag.startswith("--") and flag not in known:
                    missing.setdefault(flag, []).append(path.rsplit("/", 1)[-1].removesuffix(".yaml"))
for flag, renders in missing.items():
    print(f"`{sys.argv[2]} run` has no {flag} (the chart passes it in renders: {', '.join(renders)})")
PY
)
# The DaemonSet the operator renders from the chart's own arguments (minus those only `run`
# takes: render-daemonset takes the probe's settings) and its ConfigMap
# sockwarden-probe-settings, written to a file that --probe-settings names instead of the
# operator pod's mount.
render_ds() { # chart-render-name
  python3 - "$work/$1.yaml" "$work/$1.probe-settings.yaml" >"$work/$1.ds-args" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sockwarden-probe-settings":
        open(sys.argv[2], "w").write(d["data"]["settings.yaml"])
for d in docs:
    if d["kind"] == "Deployment" and d["metadata"]["name"] == "sockwarden-operator":
        for a in d["spec"]["template"]["spec"]["containers"][0]["args"][1:]:
            flag = a.split("=", 1)[0]
            if flag == "--probe-settings":
                print(f"--probe-settings={sys.argv[2]}")
            elif flag not in ("--listen", "--no-leader-election", "--identity"):
                print(a)
PY
  local ds_args
  mapfile -t ds_args <"$work/$1.ds-args"
  "$operator_bin" render-daemonset --namespace sockwarden-system "${ds_args[@]}" >"$work/$1.ds.yaml" 2>"$work/$1.ds.err"
}
scan_ds() { # chart-render-name checkov-skips
  # With the chart render beside it, as installed (its NetworkPolicy covers the probe pods).
  mkdir -p "$work/lint-ds-$1"
  cp "$work/$1.yaml" "$work/$1.ds.yaml" "$work/lint-ds-$1/"
  kubernetes-validate --strict --quiet "$work/$1.ds.yaml" >"$work/$1.kv.out" 2>&1 \
    || problems+=("$1: its DaemonSet fails kubernetes-validate: $(cat "$work/$1.kv.out")")
  checkov -d "$work/lint-ds-$1" --framework kubernetes --compact --quiet --skip-download \
    --config-file "$chart/.checkov.yaml" --skip-check "$2" >"$work/$1.checkov.out" 2>&1 \
    || problems+=("$1: checkov on its DaemonSet: $(cat "$work/$1.checkov.out")")
}
base_skips=$(python3 -c 'import sys, yaml; print(",".join(yaml.safe_load(open(sys.argv[1]))["skip-check"]))' "$chart/.checkov.yaml")
if render_ds default; then
  scan_ds default "$base_skips"
  # The chart's default probe values are the operator's built-in DaemonSet.
  python3 - "$work/default.ds.yaml" "$work/daemonset.yaml" >"$work/default.ds.check" 2>&1 <<'PY' || problems+=("default: its DaemonSet differs from render-daemonset without settings: $(tail -1 "$work/default.ds.check")")
import sys, yaml
a, b = (yaml.safe_load(open(p)) for p in sys.argv[1:])
assert a == b, [k for k in a["spec"]["template"]["spec"] if a["spec"]["template"]["spec"][k] != b["spec"]["template"]["spec"].get(k)]
PY
else
  problems+=("default: render-daemonset $(tr '\n' ' ' <"$work/default.ds-args")failed: $(cat "$work/default.ds.err")")
fi
if render_ds testbed; then
  python3 - "$work/testbed.ds.yaml" >"$work/testbed.ds.check" 2>&1 <<'PY' || problems+=("testbed: its DaemonSet: $(tail -1 "$work/testbed.ds.check")")
import sys, yaml
ds = yaml.safe_load(open(sys.argv[1]))
pod = ds["spec"]["template"]["spec"]
env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
assert pod.get("hostNetwork") is True, f"hostNetwork is {pod.get('hostNetwork')!r}, want true"
assert env.get("KUBERNETES_SERVICE_HOST") == "127.0.0.1" and env.get("KUBERNETES_SERVICE_PORT") == "16443", f"env {env}"
PY
  scan_ds testbed "$host_network_skips"
else
  problems+=("testbed: render-daemonset $(tr '\n' ' ' <"$work/testbed.ds-args")failed: $(cat "$work/testbed.ds.err")")
fi
if render_ds probe-settings; then
  python3 - "$work/probe-settings.ds.yaml" >"$work/probe-settings.ds.check" 2>&1 <<'PY' || problems+=("probe-settings: its DaemonSet: $(tail -1 "$work/probe-settings.ds.check")")
import sys, yaml
ds = yaml.safe_load(open(sys.argv[1]))
tpl = ds["spec"]["template"]
pod = tpl["spec"]
c = pod["containers"][0]
assert pod.get("nodeSelector") == {"kubernetes.io/os": "linux"}, f"nodeSelector {pod.get('nodeSelector')}"
assert pod.get("tolerations") == [{"key": "dedicated", "operator": "Equal", "value": "security", "effect": "NoSchedule"}], f"tolerations {pod.get('tolerations')}"
assert pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms") == [{"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["gpu"]}]}], f"affinity {pod.get('affinity')}"
assert c.get("resources") == {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}, f"resources {c.get('resources')}"
assert tpl["metadata"].get("annotations") == {"example.com/team": "security"}, f"annotations {tpl['metadata'].get('annotations')}"
assert tpl["metadata"]["labels"].get("team") == "security" and tpl["metadata"]["labels"]["app.kubernetes.io/name"] == "sockwarden-probe", f"labels {tpl['metadata']['labels']}"
assert ds["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "sockwarden-probe"}}, f"selector {ds['spec']['selector']}"
assert pod.get("imagePullSecrets") == [{"name": "regcred"}], f"imagePullSecrets {pod.get('imagePullSecrets')}"
assert c["args"][-3:] == ["--http-output=https://collector.example:8443/v1/findings", "--http-output-queue=500", "--write-rate=10"], f"args {c['args']}"
assert {"name": "RUST_LOG", "value": "debug"} in c.get("env", []), f"env {c.get('env')}"
PY
  scan_ds probe-settings "$base_skips"
else
  problems+=("probe-settings: render-daemonset $(tr '\n' ' ' <"$work/probe-settings.ds-args")failed: $(cat "$work/probe-settings.ds.err")")
fi
# Every flag a rendered DaemonSet gives the probe (the operator's own and the chart's
# extraArgs and httpOutput) must exist in the probe binary, or the probes crash-loop.
if "$probe_bin" run --help >"$work/probe-run-help.txt" 2>&1; then
  while IFS= read -r line; do problems+=("$line"); done < <(python3 - "$work/probe-run-help.txt" "$probe_bin" \
    "$work"/{default,testbed,probe-settings}.ds.yaml <<'PY'
import re, sys, yaml
known = set(re.findall(r"--[a-z0-9][a-z0-9-]*", open(sys.argv[1]).read()))
for path in sys.argv[3:]:
    args = yaml.safe_load(open(path))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "run", args
    for a in args[1:]:
        flag = a.split("=", 1)[0]
        if flag not in known:
            print(f"`{sys.argv[2]} run` has no {flag} (the DaemonSet of {path.rsplit('/', 1)[-1]} passes it)")
PY
  )
else
  problems+=("$probe_bin run --help failed: $(head -3 "$work/probe-run-help.txt")")
fi
# Settings the schema lets through but the operator refuses (a flag it sets itself) stop it
# before it starts, naming the field.
render probe-settings-bad --set "probe.extraArgs={--listen=0.0.0.0:1}"
if render_ds probe-settings-bad; then
  problems+=("probe-settings-bad: render-daemonset accepted extraArgs --listen")
elif ! grep -q "extraArgs\[0\]" "$work/probe-settings-bad.ds.err"; then
  problems+=("probe-settings-bad: the refusal does not name extraArgs[0]: $(cat "$work/probe-settings-bad.ds.err")")
fi
if ((${#problems[@]})); then
  echo "[chart] FAILED against $operator_bin (every check above passed):" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
fi
echo "[chart] $operator_bin takes every flag the chart passes; the DaemonSets it renders from them validate and scan clean"
