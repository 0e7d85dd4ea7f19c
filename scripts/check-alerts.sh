#!/usr/bin/env bash
# Checks the chart's alerts and dashboard with promtool (scripts/setup.sh installs it):
#  - the rendered PrometheusRule is valid (`promtool check rules`);
#  - its alerts behave as tests/alerts/*.yaml say (`promtool test rules`): detections from a
#    pod's first finding, silence after the window, every health alert and its silent case;
#  - under the rendered ServiceMonitor and PodMonitor the alerts still match: the job, node
#    and honorLabels of each are derived from the render by simulating their relabelings, so
#    a monitor that loses them fails here, not silently in a cluster;
#  - the dashboard is valid JSON and every query parses;
#  - every metric a rule or panel names is one the probe or operator exports.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/sockwarden-tools/bin:$PATH"
command -v promtool >/dev/null || { echo "promtool not found: run scripts/setup.sh" >&2; exit 1; }
work=$(mktemp -d /tmp/sw-alerts.XXXXXX)
trap 'rm -rf "$work"' EXIT
chart=charts/sockwarden
support=scripts/alerts-support.py

# Both monitors at once, so the one render holds everything the tests derive from.
helm template sockwarden "$chart" -n sockwarden-system \
  --api-versions monitoring.coreos.com/v1/PrometheusRule \
  --set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true \
  --set dashboard.enabled=true >"$work/render.yaml"
python3 "$support" rules "$work/render.yaml" "$work/rules.yaml"
promtool check rules "$work/rules.yaml"

# The tests name rules.yaml next to themselves.
mkdir "$work/tests"
cp "$work/rules.yaml" "$chart"/tests/alerts/*.yaml "$work/tests/"
python3 "$support" monitor-tests "$work/render.yaml" "$work/tests/generated-monitors.yaml"
tests=()
for t in "$chart"/tests/alerts/*.yaml; do tests+=("$(basename "$t")"); done
(cd "$work/tests" && promtool test rules "${tests[@]}" generated-monitors.yaml)

# The dashboard: what the ConfigMap ships is the file, and every query parses.
python3 - "$work/render.yaml" "$chart/dashboards/sockwarden.json" <<'PY'
import json, sys, yaml
cm = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sockwarden-dashboard"]
assert len(cm) == 1, "dashboard.enabled renders one ConfigMap sockwarden-dashboard"
assert json.loads(cm[0]["data"]["sockwarden.json"]) == json.load(open(sys.argv[2])), "the ConfigMap holds dashboards/sockwarden.json"
PY
python3 "$support" dashboard-rules "$chart/dashboards/sockwarden.json" "$work/dashboard-rules.yaml"
promtool check rules "$work/dashboard-rules.yaml"

python3 "$support" metric-names "$work/rules.yaml" "$chart/dashboards/sockwarden.json"
echo "[alerts] rules, alert tests, monitors and dashboard: all checks passed"
