#!/usr/bin/env bash
# sockwarden end to end on a real Kubernetes (1.20.2 built from Debian's sources, one node,
# scripts/testbed/cluster.sh): helm install, the operator leads and rolls out the probe, real
# pods attack the node's real Docker socket, findings, Events, status and metrics appear as
# a user sees them, policy changes take effect, faults lose nothing, helm uninstall cleans
# up; then `kubectl apply -f deploy/` on a fresh cluster. Each check prints one line; the
# last line counts them. Needs root and a Docker Engine (run under scripts/with-dockerd.sh).
#
# Outside CI it skips, with the reason, where it cannot run; with CI=true it must run.
set -uo pipefail
cd "$(dirname "$0")/../.."
tb=scripts/testbed
ns=sockwarden-system
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
helm=/opt/sockwarden-tools/bin/helm

skip() {
  if [ "${CI:-}" = true ]; then echo "[e2e] cannot run in CI: $*" >&2; exit 1; fi
  echo "[e2e] SKIPPED: $*"
  exit 0
}
[ "$(id -u)" -eq 0 ] || skip "needs root (runs a kubelet, containerd and the eBPF probe)"
[ -d /sys/kernel/btf ] || skip "needs a kernel with BTF"
docker version >/dev/null 2>&1 || skip "needs a Docker Engine (run under scripts/with-dockerd.sh)"
[ -x "$helm" ] || skip "helm missing: run scripts/setup.sh"

t_start=$(date +%s)
passed=0
failed=0
failures=()
elapsed() { echo $(( $(date +%s) - t_start )); }
ok() { passed=$((passed + 1)); printf '  ok   %4ss %s\n' "$(elapsed)" "$1"; }
bad() {
  failed=$((failed + 1)); failures+=("$1")
  printf '  FAIL %4ss %s\n' "$(elapsed)" "$1"
  [ -n "${2:-}" ] && printf '%s\n' "$2" | tail -n 15 | sed 's/^/         | /'
}
# check DESCRIPTION COMMAND...: passes when the command succeeds
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$what"; else bad "$what" "$out"; fi
}
# eventually SECONDS DESCRIPTION COMMAND...: retries every second until it succeeds
eventually() {
  local limit=$1 what=$2 out end
  shift 2
  end=$(( $(date +%s) + limit ))
  while :; do
    if out=$("$@" 2>&1); then ok "$what"; return 0; fi
    [ "$(date +%s)" -lt "$end" ] || { bad "$what (after ${limit}s)" "$out"; return 1; }
    sleep 1
  done
}

diagnostics() {
  local d=$SW_TESTBED/logs/e2e
  mkdir -p "$d"
  k get all,daf,dsp,lease -A -o wide >"$d/objects.txt" 2>&1
  k get events -A --sort-by=.metadata.creationTimestamp >"$d/events.txt" 2>&1
  for p in $(k -n $ns get pods -o name 2>/dev/null); do
    k -n $ns logs "$p" --all-containers >"$d/${p#pod/}.log" 2>&1
    k -n $ns logs "$p" --all-containers --previous >"$d/${p#pod/}.previous.log" 2>/dev/null
  done
  echo "[e2e] diagnostics in $d" >&2
}

finish() {
  local rc=$?
  [ -n "${host_replica:-}" ] && kill "$host_replica" 2>/dev/null
  [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ] && diagnostics
  [ "${SW_E2E_KEEP:-}" = 1 ] || bash $tb/cluster.sh down
  echo "[e2e] $(elapsed) s"
  echo "e2e: $passed passed, $failed failed"
  for f in "${failures[@]}"; do echo "  failed: $f"; done
  [ "$failed" -eq 0 ] && [ "$rc" -eq 0 ] && exit 0
  exit 1
}

cluster_up() {
  bash $tb/cluster.sh up || { echo "[e2e] the test bed did not come up" >&2; exit 1; }
  # shellcheck disable=SC1090
  source <(bash $tb/cluster.sh env)
  bash $tb/images.sh "$SW_CONTAINERD_SOCK" >"$SW_TESTBED/logs/images.log" 2>&1 || { echo "[e2e] images did not import" >&2; exit 1; }
}
k() { "$SW_KUBE_BIN/kubectl" --cache-dir "$SW_TESTBED/run/kubectl-cache" "$@"; }
jp() { k get "$@" 2>/dev/null; }                   # jp KIND NAME -o jsonpath=...
metrics() { curl -fsS --max-time 3 "http://127.0.0.1:$1/metrics"; }

# --- helpers over findings (JSON through python, no jq on these machines) ---
# finding_field NAMESPACE POD_PREFIX EXPR: EXPR over the finding `f` of the first pod whose
# name starts with POD_PREFIX, e.g. "f['status']['count']"
finding_field() {
  k get daf -n "$1" -o json | python3 -c '
import json, sys
items = [f for f in json.load(sys.stdin)["items"] if f["spec"]["pod"]["name"].startswith(sys.argv[1])]
if not items: sys.exit("no finding for a pod named " + sys.argv[1] + "*")
f = items[0]
print(eval(sys.argv[2]))' "$2" "$3"
}
finding_count() { # NAMESPACE POD_PREFIX: the count, summed over every finding naming such a pod
  k get daf -n "$1" -o json | python3 -c '
import json, sys
print(sum(f.get("status", {}).get("count", 0) for f in json.load(sys.stdin)["items"]
          if f["spec"]["pod"]["name"].startswith(sys.argv[1])))' "$2"
}
findings_for() { # NAMESPACE POD_PREFIX: how many finding objects name such a pod
  k get daf -n "$1" -o json | python3 -c '
import json, sys
print(sum(f["spec"]["pod"]["name"].startswith(sys.argv[1]) for f in json.load(sys.stdin)["items"]))' "$2"
}
label_value() { # NAME longer than 63 characters: the label value api::label_value makes of it
  python3 -c '
import hashlib, sys
v = sys.argv[1]
print(v[:52].strip("-_.") + "-" + hashlib.sha256(v.encode()).hexdigest()[:10])' "$1"
}
expect_eq() { [ "$1" = "$2" ] || { echo "expected '$2', got '$1'"; return 1; }; }
expect_finding() { # NAMESPACE POD_PREFIX EXPR EXPECTED
  local got
  got=$(finding_field "$1" "$2" "$3") || { echo "$got"; return 1; }
  expect_eq "$got" "$4"
}
pod_named() { k get pods -n "$1" -o name | sed 's|^pod/||' | grep "^$2" | head -n1; }
leader() { jp lease -n $ns sockwarden-operator -o jsonpath='{.spec.holderIdentity}'; }
running_pod() { [ "$(jp pod -n "$1" "$2" -o jsonpath='{.status.phase}')" = Running ]; }
condition() { # KIND NAME TYPE -> status
  jp "$1" "$2" -o jsonpath="{.status.conditions[?(@.type==\"$3\")].status}"
}
abuse_events() { # NAMESPACE INVOLVED_NAME: number of DockerSocketAbuse Events (series count summed)
  k get events -n "$1" --field-selector "involvedObject.name=$2,reason=DockerSocketAbuse" -o json | python3 -c '
import json, sys
print(sum(max(e.get("count") or 1, 1) for e in json.load(sys.stdin)["items"]))'
}

# --- predicates (functions, so that check/eventually can run them) ---
ge() { [ "${1:-0}" -ge "$2" ] 2>/dev/null || { echo "expected >= $2, got '${1:-}'"; return 1; }; }
deploy_ready() { ge "$(jp deploy -n $ns sockwarden-operator -o jsonpath='{.status.readyReplicas}')" 1; }
leader_runs() { local l; l=$(leader) && [ -n "$l" ] && running_pod $ns "$l"; }
probe_ready() { expect_eq "$(jp ds -n $ns sockwarden-probe -o jsonpath='{.status.numberReady}/{.status.desiredNumberScheduled}')" 1/1; }
probe_owner() { expect_eq "$(jp ds -n $ns sockwarden-probe -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')" Deployment/sockwarden-operator; }
backend_is() { metrics 9464 | grep -q "^sockwarden_probe_backend_info{backend=\"$1\"} 1"; }
ds_generation() { jp ds -n $ns sockwarden-probe -o jsonpath='{.metadata.generation}'; }
count_grows() { # NAMESPACE POD_PREFIX FROM
  ge "$(finding_count "$1" "$2")" $(( $3 + 1 ))
}
count_is() { expect_eq "$(finding_count "$1" "$2")" "$3"; }

trap finish EXIT
cluster_up
echo "[e2e] cluster and images ready at $(elapsed) s"

# ---------------------------------------------------------------- install with Helm
server_version=$(k version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
check "helm install charts/sockwarden on Kubernetes $server_version" \
  "$helm" install sockwarden charts/sockwarden -n $ns --create-namespace -f $tb/values-testbed.yaml
eventually 30 "the CRDs are established" \
  k wait --for=condition=Established --timeout=5s crd/dockersocketpolicies.sockwarden.io crd/dockerabusefindings.sockwarden.io
eventually 120 "the operator Deployment has a ready replica" deploy_ready
eventually 60 "one operator replica holds the leader Lease, and it is a running operator pod" leader_runs
eventually 120 "the operator rolls out the probe DaemonSet and its pod becomes Ready" probe_ready
check "the probe DaemonSet is owned by the operator Deployment (helm uninstall removes it)" probe_owner
check "the probe DaemonSet tolerates every taint (the chart's default probe.tolerations, read from the ConfigMap sockwarden-probe-settings)" \
  eval 'expect_eq "$(jp ds -n $ns sockwarden-probe -o jsonpath="{.spec.template.spec.tolerations[*].operator}/{.spec.template.spec.tolerations[*].key}")" Exists/'
eventually 30 "the probe reports the backend it chose (tracepoint on this kernel)" backend_is tracepoint
generation=$(ds_generation)
check "the operator applied the probe DaemonSet once (generation 1: no second rollout at start)" expect_eq "$generation" 1
crd_shape() { # no CEL rules on 1.20, and the operator's leader manages the CRD
  local crd
  crd=$(k get crd dockersocketpolicies.sockwarden.io -o json) || return 1
  ! grep -q x-kubernetes-validations <<<"$crd" || { echo "CEL rules on a 1.20 API server"; return 1; }
  grep -q '"manager": "sockwarden-operator"' <<<"$crd" || { echo "not applied by the operator"; return 1; }
}
check "the operator brought the CRDs to the shape this API server supports (no CEL on 1.20)" crd_shape

# ---------------------------------------------------------------- attacks from real pods
check "a scoped Enforce policy for app=web is created" k apply -f $tb/manifests/policies.yaml
eventually 30 "the policy is Accepted" eval '[ "$(condition dsp web-enforce Accepted)" = True ]'
# No node enforces yet: MODE is what the nodes do, the request shows only with -o wide.
enforced_gen() { # POLICY -> "<effectiveMode>/<Enforced status>/<its observedGeneration>/<metadata.generation>"
  jp dsp "$1" -o jsonpath='{.status.effectiveMode}/{.status.conditions[?(@.type=="Enforced")].status}/{.status.conditions[?(@.type=="Enforced")].observedGeneration}/{.metadata.generation}'
}
eventually 60 "the node enforces it: Enforced=True for its generation, effectiveMode Enforce" \
  eval 'g=$(jp dsp web-enforce -o jsonpath={.metadata.generation}) && expect_eq "$(enforced_gen web-enforce)" "Enforce/True/$g/$g"'
check "kubectl get dsp shows MODE Enforce (REQUESTED Enforce with -o wide)" \
  eval 'k get dsp web-enforce -o wide >"$SW_TESTBED/logs/get-dsp.txt" 2>&1 &&
    sed "s/^/    /" "$SW_TESTBED/logs/get-dsp.txt" &&
    tail -1 "$SW_TESTBED/logs/get-dsp.txt" | grep -qE "^web-enforce +Enforce +Enforce +True "'
check "the node's DockerSocketProbe says it enforces web-enforce's generation, with SIGKILL (tracepoint), pinned" \
  eval 'expect_eq "$(jp dsprobe -n $ns localhost -o jsonpath="{.spec.enforcing}/{.spec.blocksWith}/{.spec.pinned}/{.spec.policies[?(@.name==\"web-enforce\")].generation}")" "true/SIGKILL/true/$(jp dsp web-enforce -o jsonpath={.metadata.generation})"'
check "the node's enforcing links are pinned under /sys/fs/bpf/sockwarden (they outlive a probe restart)" \
  eval '[ -n "$(ls /sys/fs/bpf/sockwarden 2>/dev/null)" ]'
check "applying the policy did not roll the probe DaemonSet" expect_eq "$(ds_generation)" "$generation"
check "attacker workloads start in namespace shop" k apply -f $tb/manifests/shop.yaml
eventually 90 "a DockerAbuseFinding names the Deployment's pod, container, workload, service account and node" \
  expect_finding shop web- "'/'.join([f['spec']['container']['name'], f['spec']['workload']['kind'], f['spec']['workload']['name'], f['spec'].get('serviceAccount') or 'NONE', f['spec']['node'], f['spec']['socket']['hostPath'], f['spec']['operation']])" \
  "app/Deployment/web/web-sa/localhost//var/run/docker.sock/connect"
check "the Deployment's finding is judged by the policy that selects app=web" \
  expect_finding shop web- "f['spec']['policy'] + '/' + str(f['spec']['severity'])" "web-enforce/3"
eventually 60 "a DockerAbuseFinding names the bare pod as its own workload, with service account default" \
  expect_finding shop bare "'/'.join([f['spec']['pod']['name'], f['spec']['workload']['kind'], f['spec']['workload']['name'], f['spec'].get('serviceAccount') or 'NONE', f['spec']['policy']])" \
  "bare/Pod/bare/default/sockwarden-default"
bare_count=$(finding_count shop bare)
eventually 30 "the finding's count grows with each connect" count_grows shop bare "$bare_count"
check "one program's connects from one container are one finding object (whether or not /proc was read in time)" \
  eval '[ "$(findings_for shop web-)" = 1 ] && [ "$(findings_for shop bare)" = 1 ]'
k get daf -A >"$SW_TESTBED/logs/get-daf.txt" 2>&1
check "kubectl get daf -A shows the declared columns" \
  grep -qE '^NAMESPACE +NAME +POD +CONTAINER +SOCKET +OPERATION +ACTION +COUNT +LAST SEEN +AGE$' "$SW_TESTBED/logs/get-daf.txt"
sed 's/^/    /' "$SW_TESTBED/logs/get-daf.txt"
k get daf -A -o wide >"$SW_TESTBED/logs/get-daf-wide.txt" 2>&1
check "kubectl get daf -A -o wide adds NODE, POLICY, EXE and IMAGE" \
  grep -qE '^NAMESPACE +NAME +POD +CONTAINER +SOCKET +OPERATION +ACTION +NODE +POLICY +EXE +IMAGE +COUNT +LAST SEEN +AGE$' "$SW_TESTBED/logs/get-daf-wide.txt"
check "kubectl get sockwarden -A (the category) lists policies and findings" \
  eval 'out=$(k get sockwarden -A -o name) && grep -q "^dockersocketpolicy.sockwarden.io/web-enforce$" <<<"$out" && grep -q "^dockerabusefinding.sockwarden.io/daf-" <<<"$out"'
web_pod=$(pod_named shop web-)
eventually 30 "a Warning Event DockerSocketAbuse is on the attacking pod" \
  eval '[ "$(k get events -n shop --field-selector "involvedObject.name=$web_pod,reason=DockerSocketAbuse,type=Warning" -o name | wc -l)" -ge 1 ]'
eventually 30 "a Warning Event DockerSocketAbuse is on the policy (namespace kube-system, the policy's namespace-less reference)" \
  eval '[ "$(k get events -n kube-system --field-selector "involvedObject.kind=DockerSocketPolicy,involvedObject.name=web-enforce,reason=DockerSocketAbuse,type=Warning" -o name | wc -l)" -ge 1 ]'
eventually 30 "the policy's status: Accepted and Ready, nodes 1/1, findings counted" \
  eval '[ "$(jp dsp web-enforce -o jsonpath="{.status.conditions[?(@.type==\"Accepted\")].status}/{.status.conditions[?(@.type==\"Ready\")].status}/{.status.nodes.desired}/{.status.nodes.ready}")" = True/True/1/1 ] && ge "$(jp dsp web-enforce -o jsonpath={.status.findings.total})" 1'
check "the probe exports sockwarden_probe_findings_total for the attacking pod" \
  eval 'metrics 9464 | grep -E "^sockwarden_probe_findings_total\{.*namespace=\"shop\".*pod=\"$web_pod\"" | grep -q .'
check "the probe proved it sees: its self-test's canary connect came back through the kernel" \
  eval 'metrics 9464 | grep -qE "^sockwarden_probe_self_test_last_success_timestamp_seconds [1-9]" && metrics 9464 | grep -q "^sockwarden_probe_self_test_failures_total 0"'

# ---------------------------------------------------------------- enforcement
docker_created() { docker ps -a --filter name='^sw-escape$' -q; }
docker rm -f sw-escape >/dev/null 2>&1
# The image the request names exists, so a request that reached the daemon would create it.
docker tag sockwarden-testbed/attacker:1 sockwarden-test:latest
check "an app=web pod asks the node's Docker Engine to create a privileged container with / bound" \
  k apply -f $tb/manifests/escape.yaml
eventually 60 "it is stopped: its client is killed before the daemon answers (exit 137)" \
  eval 'out=$(k logs -n shop escape 2>&1); echo "$out"; grep -q "create exited 137" <<<"$out" && ! grep -q "HTTP/1" <<<"$out"'
check "and the Docker Engine created nothing" expect_eq "$(docker_created)" ""
eventually 30 "its finding says Blocked, under web-enforce" \
  expect_finding shop escape "f['spec']['action'] + '/' + f['spec']['policy']" "Blocked/web-enforce"
eventually 30 "a Warning Event on the pod says it was blocked" \
  eval 'grep -q "(blocked)" <<<"$(k get events -n shop --field-selector involvedObject.name=escape,reason=DockerSocketAbuse -o jsonpath="{.items[*].message}")"'
check "the probe counts the block (sockwarden_probe_blocked_total)" \
  eval 'metrics 9464 | grep -qE "^sockwarden_probe_blocked_total [1-9]"'
check "the same pod in namespace tools, exempted by web-enforce, is created" \
  eval 'k patch dsp web-enforce --type=json -p "[{\"op\":\"add\",\"path\":\"/spec/exemptions\",\"value\":[{\"namespaces\":[\"tools\"]}]}]" &&
    g=$(jp dsp web-enforce -o jsonpath={.metadata.generation}) &&
    for i in $(seq 60); do [ "$(enforced_gen web-enforce)" = "Enforce/True/$g/$g" ] && break; sleep 1; done &&
    expect_eq "$(enforced_gen web-enforce)" "Enforce/True/$g/$g" &&
    k apply -f $tb/manifests/escape-exempt.yaml'
eventually 60 "it gets through: the Docker Engine answers and creates the container" \
  eval 'out=$(k logs -n tools escape-exempt 2>&1); echo "$out"; grep -q "HTTP/1.[01] 201" <<<"$out" && [ -n "$(docker_created)" ]'
docker rm -f sw-escape >/dev/null 2>&1
check "the escape pods are deleted" k delete -f $tb/manifests/escape.yaml -f $tb/manifests/escape-exempt.yaml --wait=false

# ---------------------------------------------------------------- the first connect of a new pod
check "a pod that connects once, the instant its container starts" k apply -f $tb/manifests/oneshot.yaml
eventually 60 "its finding is judged by the app=web policy and names its service account and Deployment" \
  expect_finding shop web-once- "'/'.join([f['spec']['policy'], f['spec'].get('serviceAccount') or 'NONE', f['spec']['workload']['kind'], f['spec']['workload']['name']])" \
  "web-enforce/web-sa/Deployment/web-once"
eventually 15 "its count is exactly 1" count_is shop web-once- 1
# What SockwardenRuntimeSocketAbuse reads (promtool tests cover the rule): a series born with
# the pod's first finding, stamped with the time of that finding.
last_seen_recent() {
  metrics 9464 | awk -v now="$(date +%s)" '
    /^sockwarden_probe_finding_last_seen_timestamp_seconds\{/ && /namespace="shop"/ && /pod="web-once-/ { if ($NF + 0 > now - 600 && $NF + 0 <= now + 5) ok = 1 }
    END { exit !ok }'
}
check "its first finding is exported as a recent last-seen time for namespace shop and the web-once pod" last_seen_recent

# ---------------------------------------------------------------- policy changes
exempt='[{"op":"add","path":"/spec/exemptions","value":[{"namespaces":["shop"],"serviceAccounts":["shop/web-sa"]}]}]'
check "an exemption for namespace shop + service account web-sa is added to the policies that select it" \
  eval 'k patch dsp web-enforce --type=json -p "$exempt" && k patch dsp sockwarden-default --type=json -p "[{\"op\":\"add\",\"path\":\"/spec/exemptions/-\",\"value\":{\"namespaces\":[\"shop\"],\"serviceAccounts\":[\"shop/web-sa\"]}}]"'
sleep 8   # connects already on their way when the policies changed
web_count=$(finding_count shop web-)
bare_count=$(finding_count shop bare)
sleep 12
check "no new findings for the exempted pod (count stays $web_count over 4 connects)" count_is shop web- "$web_count"
check "the bare pod (service account default, labelled app.kubernetes.io/part-of=sockwarden) is still reported" \
  count_grows shop bare "$bare_count"
check "the policy change did not roll the probe DaemonSet" expect_eq "$(ds_generation)" "$generation"
check "an invalid policy is created (the API server accepts it: only the operator can judge it)" \
  k apply -f $tb/manifests/invalid-policy.yaml
eventually 30 "the operator marks it Accepted=False" eval '[ "$(condition dsp broken Accepted)" = False ]'
eventually 30 "and publishes an InvalidPolicy Event about it" \
  eval '[ "$(k get events -n kube-system --field-selector involvedObject.name=broken,reason=InvalidPolicy -o name | wc -l)" -ge 1 ]'
eventually 30 "a policy exempting by pod labels alone is refused too (Accepted=False: not anchored to namespaces or service accounts)" \
  eval '[ "$(condition dsp label-exempt Accepted)" = False ]'
bare_count=$(finding_count shop bare)
eventually 30 "no probe applies it: the bare pod it would exempt is still reported" count_grows shop bare "$bare_count"
# the probe follows policies through its own watch, which may lag the operator's status
eventually 30 "and each probe counts the policies it does not apply" \
  eval 'metrics 9464 | grep -E "^sockwarden_probe_policies_invalid [1-9]"'
check "the label-exempting policy is deleted" k delete dsp label-exempt

check "a policy naming a socket no default covers is created, with a daemon serving it and a client" \
  k apply -f $tb/manifests/extra-socket.yaml
eventually 60 "the probe arms that socket from the policy alone and reports the client's connects to it" \
  expect_finding shop extra-client "f['spec']['socket']['hostPath'] + ' ' + f['spec']['socket']['runtime']" "/run/sockwarden-e2e/api.sock podman"
long_policy=enforce-with-a-name-longer-than-any-label-value-may-be.sockwarden-e2e.example
long_label=$(label_value "$long_policy")
check "a policy named with ${#long_policy} characters (label values hold 63) and the client it selects are created" \
  k apply -f $tb/manifests/long-name.yaml
eventually 60 "the client's finding is written, with the policy's full name in spec.policy" \
  expect_finding shop longname-client "f['spec']['policy']" "$long_policy"
check "its sockwarden.io/policy label is the digest form $long_label" \
  expect_finding shop longname-client "f['metadata']['labels']['sockwarden.io/policy']" "$long_label"
check "kubectl get daf -l sockwarden.io/policy=$long_label selects just that client's findings" \
  expect_eq "$(jp daf -n shop -l "sockwarden.io/policy=$long_label" -o jsonpath='{range .items[*]}{.spec.pod.name}{"\n"}{end}' | sort -u)" longname-client
eventually 30 "the long-named policy's status counts its findings" \
  eval 'ge "$(jp dsp "$long_policy" -o jsonpath={.status.findings.total})" 1'
check "the long-named policy and its client are deleted" k delete -f $tb/manifests/long-name.yaml --wait=false
check "the invalid policy is deleted" k delete dsp broken
host_root_mount() { # the host's `/` read-only at /host; no socket directory as a hostPath
  jp ds -n $ns sockwarden-probe -o json | python3 -c '
import json, sys
pod = json.load(sys.stdin)["spec"]["template"]["spec"]
paths = [v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v]
assert not any(p.startswith(("/run", "/var/run")) for p in paths), paths
root = [v["name"] for v in pod["volumes"] if v.get("hostPath", {}).get("path") == "/"]
m = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] in root]
assert [(x["mountPath"], x.get("readOnly"), x.get("mountPropagation")) for x in m] == [("/host", True, "HostToContainer")], m'
}
check "the probe sees the host through one read-only mount of / (no socket directory is a hostPath)" host_root_mount
check "a policy naming a socket in a directory missing on the node is created" \
  k apply -f $tb/manifests/missing-dir-policy.yaml
eventually 30 "it is Accepted" eval '[ "$(condition dsp missing-dir Accepted)" = True ]'
sleep 5
check "the probe stays Ready with it (and the DaemonSet is not rolled)" \
  eval 'probe_ready && [ "$(ds_generation)" = "$generation" ]'
bare_count=$(finding_count shop bare)
eventually 30 "findings are still written with it in place" count_grows shop bare "$bare_count"
check "creating and deleting policies never rolled the probe DaemonSet" expect_eq "$(ds_generation)" "$generation"

# ---------------------------------------------------------------- faults
# A second live replica. The pod replicas share the host's network here, so the second pod
# cannot bind the same port on this one node and stays Pending; so the same binary also runs
# on the host with the operator's own ServiceAccount token and the Deployment's arguments.
host_replica_start() {
  local secret token args
  secret=$(jp sa -n $ns sockwarden-operator -o jsonpath='{.secrets[0].name}') || return 1
  token=$(jp secret -n $ns "$secret" -o jsonpath='{.data.token}' | base64 -d) || return 1
  cat >"$SW_TESTBED/operator-sa.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: testbed, cluster: {server: "https://127.0.0.1:$SW_API_PORT", certificate-authority: "$SW_TESTBED/pki/ca.crt"}}]
users: [{name: operator, user: {token: "$token"}}]
contexts: [{name: operator, context: {cluster: testbed, user: operator}}]
current-context: operator
KC
  # The probe settings the pods read from their ConfigMap mount, as a file on the host, so
  # this replica renders the same DaemonSet (taking over must not roll the probes).
  jp cm -n $ns sockwarden-probe-settings -o jsonpath='{.data.settings\.yaml}' >"$SW_TESTBED/probe-settings.yaml" || return 1
  mapfile -t args < <(jp deploy -n $ns sockwarden-operator -o json | python3 -c '
import json, sys
args = json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]["args"]
for a in args:
    if a.startswith("--probe-settings="):
        print("--probe-settings=" + sys.argv[1])
    elif not a.startswith("--listen"):
        print(a)' "$SW_TESTBED/probe-settings.yaml")
  KUBECONFIG=$SW_TESTBED/operator-sa.kubeconfig POD_NAMESPACE=$ns POD_NAME=host-replica \
    target/x86_64-unknown-linux-musl/release/sockwarden-operator "${args[@]}" --listen=127.0.0.1:18080 \
    >"$SW_TESTBED/logs/host-replica.log" 2>&1 &
  host_replica=$!
}
host_replica=""
check "a second operator replica starts (on the host, with the operator's ServiceAccount)" host_replica_start
eventually 30 "it waits: the Lease stays with the leader, the second replica does not lead" \
  eval 'metrics 18080 | grep -q "^sockwarden_operator_leader 0" && [ "$(leader)" != host-replica ]'

# The leader goes away: another replica takes over within the lease duration (15 s) plus a
# start; nothing is published twice and the probe DaemonSet is not rolled.
old_leader=$(leader)
web_events=$(abuse_events shop "$web_pod")
check "the leading operator pod ($old_leader) is deleted" k delete pod -n $ns "$old_leader" --wait=false
takeover() { # the Pending pod replica, once scheduled, or the host replica
  local l
  l=$(leader) && [ -n "$l" ] && [ "$l" != "$old_leader" ] && { [ "$l" = host-replica ] || running_pod $ns "$l"; }
}
eventually 60 "another operator replica takes the lease" takeover
sleep 10
check "no Event re-published for a finding that did not change" expect_eq "$(abuse_events shop "$web_pod")" "$web_events"
check "the new leader did not roll the probe DaemonSet" expect_eq "$(ds_generation)" "$generation"
echo "[e2e] the new leader is $(leader)"

# The API server is down for 30 s while a pod connects exactly 20 times: afterwards the
# finding's count is exactly 20.
check "a pod that will connect exactly 20 times starts" k apply -f $tb/manifests/counter.yaml
eventually 60 "it runs" eval 'p=$(pod_named shop counter-) && running_pod shop "$p"'
check "the API server is stopped" bash $tb/cluster.sh apiserver-stop
sleep 30
check "the API server is started again after 30 s" bash $tb/cluster.sh apiserver-start
eventually 120 "the counter's finding reaches exactly 20" count_is shop counter- 20
sleep 5
check "and stays at 20, in one object" eval 'count_is shop counter- 20 && [ "$(findings_for shop counter-)" = 1 ]'

# The probe is killed outright (SIGKILL: no drain, no goodbye): the kubelet restarts it and
# the counts continue in the same objects.
eventually 120 "the probe is Ready again after the outage" probe_ready
probe_pod=$(pod_named $ns sockwarden-probe)
restart_count() { k get pod -n $ns "$probe_pod" -o jsonpath='{.status.containerStatuses[0].restartCount}'; }
restarts=$(restart_count)
bare_count=$(finding_count shop bare)
check "the probe process is killed with SIGKILL" pkill -KILL -f "sockwarden-probe run"
eventually 120 "the kubelet restarts it and it is Ready again (self-test passed, caches synced)" \
  eval '[ "$(restart_count)" -gt "$restarts" ] && probe_ready'
eventually 60 "after the kill the bare pod's finding continues from its count (same object, count grows)" \
  eval 'count_grows shop bare "$bare_count" && [ "$(findings_for shop bare)" = 1 ]'

# The probe pod is deleted: the DaemonSet's new pod continues the counts in the same objects.
bare_count=$(finding_count shop bare)
check "the probe pod is deleted" k delete pod -n $ns "$probe_pod" --wait=false
eventually 120 "the DaemonSet's new probe pod is Ready" eval 'p=$(pod_named $ns sockwarden-probe) && [ "$p" != "$probe_pod" ] && probe_ready'
eventually 60 "the bare pod's finding continues from its count (same object, count grows)" \
  eval 'count_grows shop bare "$bare_count" && [ "$(findings_for shop bare)" = 1 ]'
check "the new probe pod started with the missing-directory policy in place" \
  eval 'k get dsp missing-dir >/dev/null'
eventually 60 "the new probe pod took the node's pinned enforcement over and reports it (web-enforce still Enforced)" \
  eval '[ -n "$(ls /sys/fs/bpf/sockwarden 2>/dev/null)" ] && g=$(jp dsp web-enforce -o jsonpath={.metadata.generation}) && expect_eq "$(enforced_gen web-enforce)" "Enforce/True/$g/$g"'

# ---------------------------------------------------------------- helm upgrade: CRDs and probe settings
# Helm never updates crds/. The cluster's findings CRD is set back to an older shape (its
# COUNT column gone, as in a release before that column); `helm upgrade` then changes a
# probe value, which reaches the DaemonSet through the ConfigMap the operator reads at start:
# the operator restarts (checksum of its probe settings), its new leader brings the CRD to
# this release's shape and applies the DaemonSet with the value — one rollout.
count_column() { jp crd dockerabusefindings.sockwarden.io -o jsonpath='{.spec.versions[0].additionalPrinterColumns[*].name}' | tr ' ' '\n' | grep -qx COUNT; }
old_crd() {
  local i
  i=$(jp crd dockerabusefindings.sockwarden.io -o json | python3 -c '
import json, sys
cols = json.load(sys.stdin)["spec"]["versions"][0]["additionalPrinterColumns"]
print([c["name"] for c in cols].index("COUNT"))') || return 1
  k patch crd dockerabusefindings.sockwarden.io --type=json -p "[{\"op\":\"remove\",\"path\":\"/spec/versions/0/additionalPrinterColumns/$i\"}]" && ! count_column
}
# Only the Deployment's pods may lead from here: the host replica (from the faults above)
# would keep running the old release.
[ -n "$host_replica" ] && kill "$host_replica" 2>/dev/null && wait "$host_replica" 2>/dev/null
host_replica=""
eventually 90 "an operator pod of the Deployment leads" leader_runs
check "the findings CRD is set back to an older shape (no COUNT column)" old_crd
generation=$(ds_generation)
# The default policy was edited with kubectl above (an exemption); Helm 4 applies server-side
# and stops at such a conflict unless told to take the fields back (README: "Upgrades").
check "helm upgrade with a new probe value (a pod annotation), taking back the edited default policy" \
  "$helm" upgrade sockwarden charts/sockwarden -n $ns -f $tb/values-testbed.yaml --set-string probe.podAnnotations.e2e-upgrade=yes --force-conflicts
check "the default policy is the chart's again (the kubectl-added exemption is gone)" \
  eval '! jp dsp sockwarden-default -o json | grep -q web-sa'
eventually 180 "the new operator's leader brought the CRD back to this release's shape (COUNT column)" count_column
eventually 120 "the probe DaemonSet carries the new value, after exactly one rollout" \
  eval '[ "$(jp ds -n $ns sockwarden-probe -o jsonpath="{.spec.template.metadata.annotations.e2e-upgrade}")" = yes ] && expect_eq "$(ds_generation)" $((generation + 1))'
eventually 120 "the rolled probe pod carries it and is Ready" \
  eval 'p=$(pod_named $ns sockwarden-probe) && expect_eq "$(jp pod -n $ns "$p" -o jsonpath="{.metadata.annotations.e2e-upgrade}")" yes && probe_ready'
check "the probe DaemonSet is still owned by the operator Deployment" probe_owner
eventually 60 "after the upgrade the node is still pinned and web-enforce still Enforced" \
  eval '[ -n "$(ls /sys/fs/bpf/sockwarden 2>/dev/null)" ] && g=$(jp dsp web-enforce -o jsonpath={.metadata.generation}) && expect_eq "$(enforced_gen web-enforce)" "Enforce/True/$g/$g"'

# ---------------------------------------------------------------- uninstall
check "helm uninstall" "$helm" uninstall sockwarden -n $ns --wait
nothing_left() {
  local left
  left=$(k get deploy,ds,rs,pods,sa,svc,cm,networkpolicy,role,rolebinding,lease -n $ns -o name 2>&1 | grep -v -e '^serviceaccount/default$' -e '^configmap/kube-root-ca.crt$' -e '^No resources')
  left+=$(k get clusterrole,clusterrolebinding -o name | grep sockwarden)
  left+=$(k get dsp -o name | grep sockwarden-default)
  [ -z "$left" ] || { echo "left behind: $left"; return 1; }
}
eventually 90 "no sockwarden workload, RBAC or default policy is left (the probe DaemonSet included)" nothing_left
check "the node's pinned enforcement went with the probe DaemonSet (an Enforce policy is still there)" \
  eval '[ -z "$(ls /sys/fs/bpf/sockwarden 2>/dev/null)" ] && k get dsp web-enforce >/dev/null'
eventually 30 "its DockerSocketProbe report went with the probe's pod" \
  eval '[ -z "$(k get dsprobe -n $ns -o name 2>/dev/null)" ]'
check "what Helm keeps by design is still there: the CRDs, the findings, the policies users made" \
  eval 'k get crd dockersocketpolicies.sockwarden.io dockerabusefindings.sockwarden.io >/dev/null && [ "$(findings_for shop bare)" = 1 ] && k get dsp web-enforce >/dev/null'

# ---------------------------------------------------------------- kubectl apply -f deploy/
# A fresh start for sockwarden on the same cluster: its namespace and CRDs go (with every
# finding and policy), then the plain manifests are applied as README says, with the test
# bed's overlay (scripts/testbed/deploy-overlay).
check "sockwarden's namespace, CRDs and objects are removed" \
  eval 'k delete ns $ns --wait=true --timeout=90s && k delete crd dockersocketpolicies.sockwarden.io dockerabusefindings.sockwarden.io dockersocketprobes.sockwarden.io --wait=true --timeout=60s'
overlay=$(mktemp -d /tmp/sw-deploy.XXXXXX)
cp deploy/*.yaml $tb/deploy-overlay/*.yaml "$overlay/"
python3 - "$overlay/02-sockwarden.yaml" <<'PY'
import sys
path = sys.argv[1]
docs = open(path).read().split("\n---\n")
open(path, "w").write("\n---\n".join(d for d in docs if "kind: PodDisruptionBudget" not in d))
PY
apply_deploy() { k apply -k "$overlay"; }
eventually 60 "kubectl apply -f deploy/ (applied again until the new CRDs are served)" apply_deploy
eventually 120 "the operator from deploy/ has a ready replica and leads" eval 'deploy_ready && leader_runs'
eventually 120 "it rolls out the probe, which becomes Ready" probe_ready
eventually 90 "the bare pod's attack becomes a finding again, under the default policy from deploy/" \
  expect_finding shop bare "f['spec']['policy']" sockwarden-default
rm -rf "$overlay"
