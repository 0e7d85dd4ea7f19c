//! The probe DaemonSet: one per install, in the operator's namespace, rendered from the
//! operator's own configuration only ([`ProbeSettings`] and the optional owner). Policies do
//! not enter it: probes watch policies themselves and arm the sockets they name (resolving
//! paths outside the mounted directories through the host's `/proc/<init>/root`), so policy
//! changes never roll the probes.
//!
//! Narrow privileges instead of `privileged: true`: the probe needs CAP_BPF and CAP_PERFMON
//! to load and attach programs, CAP_SYS_ADMIN where the kernel still gates tracing programs
//! on it, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH to read other processes' /proc entries
//! (namespaces, root, exe). Not CAP_SYS_RESOURCE: BPF memory is charged to the cgroup since
//! Linux 5.11, the probe's memlock raise is best effort, and some runtimes' bounding sets
//! lack it, which would stop the pod from starting at all.
use std::{fmt, net::Ipv4Addr, net::Ipv6Addr, str::FromStr};

use k8s_openapi::{api::apps::v1::DaemonSet, apimachinery::pkg::apis::meta::v1::OwnerReference};
use serde_json::{json, Value};

use crate::probe_settings::ProbePodSettings;

pub const NAME: &str = api::PROBE_DAEMONSET;
pub const METRICS_PORT: u16 = 9464;

/// How the probe runs; comes from the operator's flags (the Helm chart sets them).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSettings {
    pub namespace: String,
    pub image: String,
    pub image_pull_policy: String,
    pub service_account: String,
    pub priority_class: Option<String>,
    /// Attach syscall tracepoints for open detection in the tracepoint backend (costly).
    pub detect_open: bool,
    /// Probe pods in the node's network namespace (clusters without a pod network path to
    /// the API server, e.g. no kube-proxy).
    pub host_network: bool,
    /// Where probes reach the API server, instead of the `kubernetes` Service.
    pub api_server: Option<ApiServerAddr>,
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
    /// Scheduling, resources and extras from `--probe-settings` (the chart's `probe.*`).
    pub pod: ProbePodSettings,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            namespace: "sockwarden-system".into(),
            image: format!("sockwarden-probe:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: "IfNotPresent".into(),
            service_account: "sockwarden-probe".into(),
            priority_class: Some("system-node-critical".into()),
            detect_open: false,
            host_network: false,
            api_server: None,
            cpu_request: "50m".into(),
            memory_request: "64Mi".into(),
            cpu_limit: "500m".into(),
            memory_limit: "256Mi".into(),
            pod: ProbePodSettings::default(),
        }
    }
}

/// `HOST:PORT` of the API server as probes should dial it (`[v6]:PORT` for IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServerAddr {
    /// An IPv4 address, an IPv6 address (without brackets) or a DNS name.
    pub host: String,
    pub port: u16,
}

impl FromStr for ApiServerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const EXAMPLE: &str =
            "expected HOST:PORT, e.g. 10.0.0.1:6443, api.example.internal:6443 or [fd00::1]:6443";
        if s.is_empty() {
            return Err(format!("empty; {EXAMPLE}"));
        }
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "{s:?} is not HOST:PORT (no scheme or path); {EXAMPLE}"
            ));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| format!("{s:?} lacks \"]:PORT\"; {EXAMPLE}"))?;
            host.parse::<Ipv6Addr>()
                .map_err(|_| format!("{host:?} in {s:?} is not an IPv6 address"))?;
            (host, port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?} lacks a port; {EXAMPLE}"))?;
            if host.contains(':') {
                return Err(format!(
                    "{s:?}: write an IPv6 address in brackets, e.g. [fd00::1]:6443"
                ));
            }
            check_host(host).map_err(|why| format!("{host:?} in {s:?} {why}; {EXAMPLE}"))?;
            (host, port)
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(format!(
                    "port {port:?} in {s:?} is not a number from 1 to 65535"
                ))
            }
        };
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

/// An IPv4 address or a DNS name (RFC 1123 labels).
fn check_host(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("is empty");
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if host.len() > 253 {
        return Err("is longer than 253 characters");
    }
    let labels: Vec<&str> = host.split('.').collect();
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err("is neither an IPv4 address nor a DNS name");
        }
    }
    if labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err("is not a valid IPv4 address");
    }
    Ok(())
}

impl fmt::Display for ApiServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where the host's `/` is mounted in the probe container (`--host-root`).
const HOST_ROOT: &str = "/host";

/// The DaemonSet exactly as the operator applies it. `owner` (the operator's Deployment)
/// lets the garbage collector delete the probes with the operator.
pub fn probe_daemonset(settings: &ProbeSettings, owner: Option<&OwnerReference>) -> DaemonSet {
    let labels = json!({
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/part-of": "sockwarden",
        "app.kubernetes.io/managed-by": "sockwarden-operator",
    });
    let mut args = vec![
        "run".to_string(),
        format!("--host-root={HOST_ROOT}"),
        format!("--listen=0.0.0.0:{METRICS_PORT}"),
        "--format=json".into(),
        "--log-format=json".into(),
    ];
    if settings.detect_open {
        args.push("--detect-open".into());
    }
    // HTTP output, then the user's extra arguments (never one of the above: see
    // probe_settings::OWN_FLAGS).
    args.extend(settings.pod.args());

    let mut volumes = vec![
        json!({"name": "host-proc", "hostPath": {"path": "/proc", "type": "Directory"}}),
        json!({"name": "host-cgroup", "hostPath": {"path": "/sys/fs/cgroup", "type": "Directory"}}),
        json!({"name": "btf", "hostPath": {"path": "/sys/kernel/btf", "type": "Directory"}}),
        json!({"name": "tracefs", "hostPath": {"path": "/sys/kernel/tracing", "type": "Directory"}}),
        json!({"name": "bpffs", "hostPath": {"path": "/sys/fs/bpf", "type": "DirectoryOrCreate"}}),
        // Which LSMs are active, for the start-up log; the choice itself rests on the
        // self-test (a canary connect the backend must report), not on this file.
        json!({"name": "securityfs", "hostPath": {"path": "/sys/kernel/security", "type": "Directory"}}),
        // The canary socket of the self-test (the root file system is read-only).
        json!({"name": "state", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}),
    ];
    let mut mounts = vec![
        json!({"name": "host-proc", "mountPath": "/host/proc", "readOnly": true}),
        json!({"name": "host-cgroup", "mountPath": "/host/sys/fs/cgroup", "readOnly": true}),
        json!({"name": "btf", "mountPath": "/sys/kernel/btf", "readOnly": true}),
        json!({"name": "tracefs", "mountPath": "/sys/kernel/tracing"}),
        json!({"name": "bpffs", "mountPath": "/sys/fs/bpf"}),
        json!({"name": "securityfs", "mountPath": "/sys/kernel/security", "readOnly": true}),
        json!({"name": "state", "mountPath": "/run/sockwarden-probe"}),
    ];
    // The host's whole `/`, read-only, instead of one mount per socket directory: `/`
    // exists on every node, so no policy socket path can keep the pod from starting (a
    // hostPath of type `Directory` for `/run` or `/var/run` did on a node without it), and
    // every absolute socket path is visible as the kubelet's mount namespace sees it, with
    // symlinks such as `/var/run -> /run` resolved inside `/host` by the probe. It grants
    // nothing new: with hostPID and CAP_SYS_PTRACE the probe already reaches the host's
    // root through `/proc/1/root`. HostToContainer (rslave) lets a socket directory that is
    // created or remounted later show up, and lets other pods' volume mounts that appear
    // under `/` be unmounted on the host instead of being pinned by this container.
    // First, so that `/host/proc` and `/host/sys/fs/cgroup` are mounted on top of it.
    volumes.insert(
        0,
        json!({"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}}),
    );
    mounts.insert(0, json!({"name": "host-root", "mountPath": HOST_ROOT, "readOnly": true, "mountPropagation": "HostToContainer"}));

    // The node, and the pod that owns the node's DockerSocketProbe report.
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut env = vec![
        field("NODE_NAME", "spec.nodeName"),
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("POD_UID", "metadata.uid"),
    ];
    if let Some(api) = &settings.api_server {
        // Explicit container env wins over the kubelet's service variables.
        env.push(json!({"name": "KUBERNETES_SERVICE_HOST", "value": api.host}));
        env.push(json!({"name": "KUBERNETES_SERVICE_PORT", "value": api.port.to_string()}));
    }
    env.extend(settings.pod.extra_env.iter().map(|e| json!(e)));
    let mut readiness =
        json!({"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 10});
    let mut liveness = json!({"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 20, "failureThreshold": 3});
    if settings.host_network {
        // The probe listens on every host address; the kubelet checks it over loopback.
        readiness["httpGet"]["host"] = json!("127.0.0.1");
        liveness["httpGet"]["host"] = json!("127.0.0.1");
    }

    let mut pod_spec = json!({
        "hostPID": true,
        // Root is required: loading eBPF and reading every process's /proc entries.
        "securityContext": {"runAsUser": 0, "runAsNonRoot": false},
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": true,
        "containers": [{
            "name": "probe",
            "image": settings.image,
            "imagePullPolicy": settings.image_pull_policy,
            "args": args,
            "env": env,
            "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
            "readinessProbe": readiness,
            "livenessProbe": liveness,
            "resources": match &settings.pod.resources {
                Some(r) => json!(r),
                None => json!({
                    "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
                    "limits": {"cpu": settings.cpu_limit, "memory": settings.memory_limit},
                }),
            },
            "securityContext": {
                "privileged": false,
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "runAsUser": 0,
                "capabilities": {
                    "drop": ["ALL"],
                    "add": ["BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"],
                },
                // The runtimes' default profiles allow bpf(2) and perf_event_open(2) to a
                // container holding CAP_SYS_ADMIN (or CAP_BPF/CAP_PERFMON).
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    });
    if let Some(pc) = &settings.priority_class {
        pod_spec["priorityClassName"] = json!(pc);
    }
    let pod = &settings.pod;
    // Empty lists and maps are left out, as the API server would store them.
    if !pod.tolerations.is_empty() {
        pod_spec["tolerations"] = json!(pod.tolerations);
    }
    if !pod.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(pod.node_selector);
    }
    if let Some(affinity) = &pod.affinity {
        pod_spec["affinity"] = json!(affinity);
    }
    if !pod.image_pull_secrets.is_empty() {
        pod_spec["imagePullSecrets"] = json!(pod.image_pull_secrets);
    }
    // The user's labels first, ours over them (the settings refuse a clash already).
    let mut pod_labels = json!(pod.pod_labels);
    for (k, v) in labels.as_object().into_iter().flatten() {
        pod_labels[k] = v.clone();
    }
    let mut pod_metadata = json!({"labels": pod_labels});
    if !pod.pod_annotations.is_empty() {
        pod_metadata["annotations"] = json!(pod.pod_annotations);
    }
    if settings.host_network {
        pod_spec["hostNetwork"] = json!(true);
        // Keep cluster DNS for names (the API server's, if given by name).
        pod_spec["dnsPolicy"] = json!("ClusterFirstWithHostNet");
    }
    let mut metadata = json!({"name": NAME, "namespace": settings.namespace, "labels": labels});
    if let Some(owner) = owner {
        metadata["ownerReferences"] = json!([owner]);
    }
    let ds = json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {"metadata": pod_metadata, "spec": pod_spec},
        },
    });
    // The literal above matches the DaemonSet schema; a mismatch is a programming error the
    // tests catch.
    serde_json::from_value(ds).unwrap_or_default()
}

/// Whether `observed` differs from `desired` in a field the operator sets. The API server
/// adds defaults (and status), so `observed` may hold more; only what `desired` names is
/// compared — the fields a forced server-side apply would put back.
pub fn drifted(desired: &DaemonSet, observed: &DaemonSet) -> bool {
    let (Ok(desired), Ok(observed)) = (
        serde_json::to_value(desired),
        serde_json::to_value(observed),
    ) else {
        return true;
    };
    !contains(&observed, &desired)
}

fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(k, w)| have.get(k).is_some_and(|h| contains(h, w))),
        (Value::Array(have), Value::Array(want)) => {
            have.len() == want.len() && have.iter().zip(want).all(|(h, w)| contains(h, w))
        }
        _ => have == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(ds: &DaemonSet) -> Value {
        serde_json::to_value(ds).unwrap()
    }

    fn strings(v: &Value) -> Vec<&str> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect()
    }

    #[test]
    fn probe_runs_on_every_node_with_narrow_privileges_and_host_mounts() {
        let v = value(&probe_daemonset(&ProbeSettings::default(), None));
        assert_eq!(v["metadata"]["name"], NAME);
        assert!(v["metadata"]["ownerReferences"].is_null());
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["hostPID"], true);
        assert!(pod["hostNetwork"].is_null(), "pod network by default");
        assert!(pod["dnsPolicy"].is_null());
        assert_eq!(pod["tolerations"][0]["operator"], "Exists");
        assert_eq!(pod["priorityClassName"], "system-node-critical");
        let c = &pod["containers"][0];
        assert_eq!(c["securityContext"]["privileged"], false);
        let caps = strings(&c["securityContext"]["capabilities"]["add"]);
        for cap in ["BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"] {
            assert!(caps.contains(&cap), "{cap} missing");
        }
        assert!(
            !caps.contains(&"SYS_RESOURCE"),
            "memlock is charged to the cgroup on current kernels"
        );
        assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(
            c["env"],
            json!([
                {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            ])
        );
        assert!(c["readinessProbe"]["httpGet"]["host"].is_null());
        let mounts: Vec<&str> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        for m in [
            "/host/proc",
            "/host/sys/fs/cgroup",
            "/sys/kernel/btf",
            "/sys/fs/bpf",
            "/host",
        ] {
            assert!(mounts.contains(&m), "{m} not mounted");
        }
        assert!(strings(&c["args"]).contains(&"--host-root=/host"));
        assert!(c["resources"]["limits"]["memory"].is_string());
    }

    #[test]
    fn no_socket_directory_is_a_hostpath_the_host_root_is_one_read_only_mount_and_no_socket_flags()
    {
        let v = value(&probe_daemonset(
            &ProbeSettings {
                detect_open: true,
                ..Default::default()
            },
            None,
        ));
        let pod = &v["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let args = strings(&c["args"]);
        assert!(args.contains(&"--detect-open"));
        assert!(args.contains(&"--host-root=/host"));
        assert!(
            !args.iter().any(|a| a.starts_with("--socket")),
            "probes arm policy sockets from their own policy watch: {args:?}"
        );
        // Every hostPath the kubelet checks before starting the pod: `/` and kernel
        // interfaces the probe cannot work without; no socket directory, which a node may
        // lack (a policy may name a socket anywhere).
        let host_paths: Vec<(&str, &str)> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| {
                Some((
                    v["hostPath"]["path"].as_str()?,
                    v["hostPath"]["type"].as_str().unwrap(),
                ))
            })
            .collect();
        assert_eq!(
            host_paths,
            [
                ("/", "Directory"),
                ("/proc", "Directory"),
                ("/sys/fs/cgroup", "Directory"),
                ("/sys/kernel/btf", "Directory"),
                ("/sys/kernel/tracing", "Directory"),
                ("/sys/fs/bpf", "DirectoryOrCreate"),
                ("/sys/kernel/security", "Directory"),
            ]
        );
        // The self-test's canary lives in memory, on a read-only root file system.
        let state = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "state")
            .unwrap();
        assert_eq!(state["emptyDir"]["medium"], "Memory");
        assert!(c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "state" && m["mountPath"] == "/run/sockwarden-probe"));
        assert!(c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "securityfs" && m["readOnly"] == true));
        for (path, _) in &host_paths {
            assert!(
                !["/run", "/var/run"].iter().any(|d| path.starts_with(d)),
                "{path} may be missing on a node"
            );
        }
        // The host's `/`, read-only, propagating later host mounts (a socket directory
        // made after the probe started), mounted before the paths nested in it.
        let mounts = c["volumeMounts"].as_array().unwrap();
        assert_eq!(
            mounts[0],
            json!({"name": "host-root", "mountPath": "/host", "readOnly": true, "mountPropagation": "HostToContainer"})
        );
        assert_eq!(pod["volumes"][0]["name"], "host-root");
        for m in mounts {
            let path = m["mountPath"].as_str().unwrap();
            if path.starts_with("/host") {
                assert_eq!(m["readOnly"], true, "{path} must be read-only");
            }
        }
    }

    fn with_pod(yaml: &str) -> Value {
        let settings = ProbeSettings {
            pod: ProbePodSettings::parse(yaml).unwrap(),
            ..Default::default()
        };
        value(&probe_daemonset(&settings, None))
    }

    #[test]
    fn pod_settings_reach_the_pod_template_and_the_defaults_are_todays_daemonset() {
        assert_eq!(
            with_pod("{}"),
            value(&probe_daemonset(&ProbeSettings::default(), None))
        );
        // What the chart's default values render is the built-in DaemonSet.
        assert_eq!(
            with_pod("{nodeSelector: {}, tolerations: [{operator: Exists}], affinity: null, resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {cpu: 500m, memory: 256Mi}}, podAnnotations: {}, podLabels: {}, imagePullSecrets: [], extraArgs: [], extraEnv: [], httpOutput: {url: '', queue: null}}"),
            with_pod("{}")
        );
        let v = with_pod(
            r#"
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: NotIn, values: [gpu]}]}]}}}
resources: {requests: {cpu: 20m, memory: 32Mi}, limits: {memory: 128Mi}}
podAnnotations: {example.com/team: security}
podLabels: {team: security}
imagePullSecrets: [{name: regcred}]
extraArgs: ["--write-rate=10"]
extraEnv: [{name: RUST_LOG, value: debug}]
httpOutput: {url: "https://collector.example/v1", queue: 500}
"#,
        );
        let tpl = &v["spec"]["template"];
        let pod = &tpl["spec"];
        assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
        assert_eq!(
            pod["tolerations"],
            json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}])
        );
        assert_eq!(
            pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchExpressions"][0]["key"],
            "pool"
        );
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
        assert_eq!(
            tpl["metadata"]["annotations"],
            json!({"example.com/team": "security"})
        );
        assert_eq!(tpl["metadata"]["labels"]["team"], "security");
        assert_eq!(tpl["metadata"]["labels"]["app.kubernetes.io/name"], NAME);
        assert_eq!(
            v["spec"]["selector"]["matchLabels"],
            json!({"app.kubernetes.io/name": NAME}),
            "the selector never moves"
        );
        let c = &pod["containers"][0];
        assert_eq!(
            c["resources"],
            json!({"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}})
        );
        let args = strings(&c["args"]);
        assert_eq!(
            args[args.len() - 3..],
            [
                "--http-output=https://collector.example/v1",
                "--http-output-queue=500",
                "--write-rate=10"
            ]
        );
        assert!(args.contains(&"--host-root=/host"));
        assert_eq!(c["env"][0]["name"], "NODE_NAME");
        assert_eq!(c["env"][4], json!({"name": "RUST_LOG", "value": "debug"}));
        // No tolerations at all when asked for none (and no empty list the server drops).
        let none = with_pod("tolerations: []");
        assert!(none["spec"]["template"]["spec"]["tolerations"].is_null());
        // Same settings, same DaemonSet: a new leader's first apply is the steady state.
        let again = with_pod(
            &serde_yaml_ng::to_string(
                &ProbePodSettings::parse(
                    "podAnnotations: {b: '2', a: '1'}\nnodeSelector: {z: '1', y: '2'}",
                )
                .unwrap(),
            )
            .unwrap(),
        );
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&with_pod(
                "nodeSelector: {y: '2', z: '1'}\npodAnnotations: {a: '1', b: '2'}"
            ))
            .unwrap()
        );
    }

    #[test]
    fn host_network_puts_probes_on_the_node_network_with_loopback_health_checks() {
        let v = value(&probe_daemonset(
            &ProbeSettings {
                host_network: true,
                ..Default::default()
            },
            None,
        ));
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true);
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
        let c = &pod["containers"][0];
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(c[probe]["httpGet"]["host"], "127.0.0.1", "{probe}");
            assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
        }
    }

    #[test]
    fn api_server_address_becomes_the_probes_kubernetes_service_env() {
        for (flag, host, port) in [
            ("127.0.0.1:16443", "127.0.0.1", "16443"),
            ("[fd00::1]:6443", "fd00::1", "6443"),
            ("api.cluster.internal:443", "api.cluster.internal", "443"),
        ] {
            let settings = ProbeSettings {
                api_server: Some(flag.parse().unwrap()),
                ..Default::default()
            };
            let v = value(&probe_daemonset(&settings, None));
            let env = &v["spec"]["template"]["spec"]["containers"][0]["env"];
            assert_eq!(
                env,
                &json!([
                    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                    {"name": "KUBERNETES_SERVICE_HOST", "value": host},
                    {"name": "KUBERNETES_SERVICE_PORT", "value": port},
                ]),
                "{flag}"
            );
            assert_eq!(settings.api_server.unwrap().to_string(), flag);
        }
    }

    #[test]
    fn malformed_api_server_addresses_are_refused_with_the_reason() {
        for (bad, says) in [
            ("", "empty"),
            ("10.0.0.1", "lacks a port"),
            ("https://10.0.0.1:6443", "no scheme"),
            ("10.0.0.1:0", "1 to 65535"),
            ("10.0.0.1:70000", "1 to 65535"),
            ("10.0.0.1:https", "1 to 65535"),
            ("fd00::1:6443", "in brackets"),
            ("[fd00::zz]:6443", "not an IPv6 address"),
            ("[fd00::1]6443", "]:PORT"),
            ("10.0.0.999:6443", "not a valid IPv4"),
            ("bad_host:6443", "neither an IPv4 address nor a DNS name"),
            ("-api:6443", "neither"),
            (":6443", "is empty"),
        ] {
            let err = bad.parse::<ApiServerAddr>().unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_owner_deployment_is_a_non_controller_owner_of_the_daemonset() {
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "sockwarden-operator".into(),
            uid: "0b6f-uid".into(),
            controller: Some(false),
            block_owner_deletion: None,
        };
        let v = value(&probe_daemonset(&ProbeSettings::default(), Some(&owner)));
        assert_eq!(
            v["metadata"]["ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "sockwarden-operator", "uid": "0b6f-uid", "controller": false}])
        );
    }

    #[test]
    fn server_defaults_and_status_are_not_drift_but_a_changed_field_is() {
        let desired = probe_daemonset(&ProbeSettings::default(), None);
        let mut observed = value(&desired);
        observed["metadata"]["resourceVersion"] = json!("7");
        observed["metadata"]["generation"] = json!(1);
        observed["status"] = json!({"desiredNumberScheduled": 3, "numberReady": 1, "currentNumberScheduled": 3, "numberMisscheduled": 0});
        let pod = &mut observed["spec"]["template"]["spec"];
        pod["restartPolicy"] = json!("Always");
        pod["dnsPolicy"] = json!("ClusterFirst");
        pod["containers"][0]["terminationMessagePath"] = json!("/dev/termination-log");
        pod["containers"][0]["readinessProbe"]["httpGet"]["scheme"] = json!("HTTP");
        let as_ds = |v: &Value| serde_json::from_value::<DaemonSet>(v.clone()).unwrap();
        assert!(!drifted(&desired, &as_ds(&observed)));

        let mut edited = observed.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:latest");
        assert!(drifted(&desired, &as_ds(&edited)));
        let mut extra_mount = observed.clone();
        extra_mount["spec"]["template"]["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "root", "hostPath": {"path": "/"}}));
        assert!(drifted(&desired, &as_ds(&extra_mount)));
    }
}
