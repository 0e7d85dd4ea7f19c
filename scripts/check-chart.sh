#!/usr/bin/env bash
# Checks the Helm chart and the plain manifests: lint, render with default and example
# values, refuse bad values, validate everything against the Kubernetes schemas offline,
# security-lint with checkov (exceptions in charts/sockwarden/.checkov.yaml), and fail when
# charts/sockwarden/crds or deploy/ are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/sockwarden-tools/bin:$PATH"
work=$(mktemp -d /tmp/sw-chart.XXXXXX)
trap 'rm -rf "$work"' EXIT
chart=charts/sockwarden

for f in crds/*.yaml; do
  cmp -s "$f" "$chart/crds/$(basename "$f")" || { echo "$chart/crds/$(basename "$f") differs from $f: copy it" >&2; exit 1; }
done

helm lint --strict "$chart"
# README's install command, client-side (no cluster here)
helm install sockwarden "$chart" -n sockwarden-system --create-namespace --dry-run=client >/dev/null
helm template sockwarden "$chart" -n sockwarden-system >"$work/default.yaml"
for values in "$chart"/examples/*.yaml; do
  helm template sockwarden "$chart" -n sockwarden-system -f "$values" >"$work/$(basename "$values")"
  echo "[chart] renders with $values"
done
# Rendering with the Prometheus Operator present adds the PrometheusRule.
helm template sockwarden "$chart" -n sockwarden-system --api-versions monitoring.coreos.com/v1/PrometheusRule >"$work/with-prometheus.yaml"
grep -q "alert: SockwardenRuntimeSocketAbuse" "$work/with-prometheus.yaml"
grep -q 'increase(sockwarden_probe_findings_total\[5m\])) > 0' "$work/with-prometheus.yaml"

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
echo "[chart] bad values are refused"

# Kubernetes schemas (strict), the operator-rendered DaemonSet included; the default policy
# against the CRD's own schema.
operator_bin=${OPERATOR_BIN:-target/debug/sockwarden-operator}
"$operator_bin" render-daemonset >"$work/daemonset.yaml"
kubernetes-validate --strict --quiet "$work/default.yaml" "$work/with-prometheus.yaml" "$work/daemonset.yaml" crds/*.yaml
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
checkov -d "$work/lint" --framework kubernetes --compact --quiet --skip-download --config-file "$chart/.checkov.yaml"
echo "[chart] checkov: no findings beyond the documented exceptions"

bash scripts/render-deploy.sh "$work/deploy"
diff -r "$work/deploy" deploy >/dev/null || { echo "deploy/ is stale: run scripts/render-deploy.sh" >&2; exit 1; }
echo "[chart] deploy/ is current"
