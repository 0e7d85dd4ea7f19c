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
use k8s_openapi::{api::apps::v1::DaemonSet, apimachinery::pkg::apis::meta::v1::OwnerReference};
use serde_json::{json, Value};

pub const NAME: &str = "sockwarden-probe";
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
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
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
            cpu_request: "50m".into(),
            memory_request: "64Mi".into(),
            cpu_limit: "500m".into(),
            memory_limit: "256Mi".into(),
        }
    }
}

/// Host directories whose runtime sockets the probe stats (mounted read-only under /host).
/// Sockets elsewhere are reached through the host's `/proc/<init>/root` by the probe.
const SOCKET_DIRS: &[&str] = &["/run", "/var/run"];

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
        "--host-root=/host".into(),
        format!("--listen=0.0.0.0:{METRICS_PORT}"),
        "--format=json".into(),
        "--log-format=json".into(),
    ];
    if settings.detect_open {
        args.push("--detect-open".into());
    }

    let mut volumes = vec![
        json!({"name": "host-proc", "hostPath": {"path": "/proc", "type": "Directory"}}),
        json!({"name": "host-cgroup", "hostPath": {"path": "/sys/fs/cgroup", "type": "Directory"}}),
        json!({"name": "btf", "hostPath": {"path": "/sys/kernel/btf", "type": "Directory"}}),
        json!({"name": "tracefs", "hostPath": {"path": "/sys/kernel/tracing", "type": "Directory"}}),
        json!({"name": "bpffs", "hostPath": {"path": "/sys/fs/bpf", "type": "DirectoryOrCreate"}}),
    ];
    let mut mounts = vec![
        json!({"name": "host-proc", "mountPath": "/host/proc", "readOnly": true}),
        json!({"name": "host-cgroup", "mountPath": "/host/sys/fs/cgroup", "readOnly": true}),
        json!({"name": "btf", "mountPath": "/sys/kernel/btf", "readOnly": true}),
        json!({"name": "tracefs", "mountPath": "/sys/kernel/tracing"}),
        json!({"name": "bpffs", "mountPath": "/sys/fs/bpf"}),
    ];
    for (i, dir) in SOCKET_DIRS.iter().enumerate() {
        let name = format!("sockets-{i}");
        // Read-only: the probe stats sockets, it never connects to them. HostToContainer
        // propagation lets a socket dir recreated by a daemon restart show up.
        volumes.push(json!({"name": name, "hostPath": {"path": dir, "type": "Directory"}}));
        mounts.push(json!({"name": name, "mountPath": format!("/host{dir}"), "readOnly": true, "mountPropagation": "HostToContainer"}));
    }

    let env = vec![
        json!({"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}),
    ];
    let readiness = json!({"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 10});
    let liveness = json!({"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 20, "failureThreshold": 3});

    let mut pod_spec = json!({
        "hostPID": true,
        // Root is required: loading eBPF and reading every process's /proc entries.
        "securityContext": {"runAsUser": 0, "runAsNonRoot": false},
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": true,
        "tolerations": [{"operator": "Exists"}],
        "containers": [{
            "name": "probe",
            "image": settings.image,
            "imagePullPolicy": settings.image_pull_policy,
            "args": args,
            "env": env,
            "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
            "readinessProbe": readiness,
            "livenessProbe": liveness,
            "resources": {
                "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
                "limits": {"cpu": settings.cpu_limit, "memory": settings.memory_limit},
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
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
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
            json!([{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}])
        );
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
            "/host/run",
            "/host/var/run",
        ] {
            assert!(mounts.contains(&m), "{m} not mounted");
        }
        assert!(strings(&c["args"]).contains(&"--host-root=/host"));
        assert!(c["resources"]["limits"]["memory"].is_string());
    }

    #[test]
    fn socket_dirs_are_only_run_and_var_run_read_only_and_no_socket_flags() {
        let v = value(&probe_daemonset(
            &ProbeSettings {
                detect_open: true,
                ..Default::default()
            },
            None,
        ));
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        let args = strings(&c["args"]);
        assert!(args.contains(&"--detect-open"));
        assert!(
            !args.iter().any(|a| a.starts_with("--socket")),
            "probes arm policy sockets from their own policy watch: {args:?}"
        );
        let socket_mounts: Vec<&Value> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"].as_str().unwrap().starts_with("sockets-"))
            .collect();
        assert_eq!(socket_mounts.len(), 2, "{socket_mounts:?}");
        for (m, path) in socket_mounts.iter().zip(["/host/run", "/host/var/run"]) {
            assert_eq!(m["mountPath"], path);
            assert_eq!(m["readOnly"], true);
        }
        let host_paths: Vec<&str> = v["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["hostPath"]["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            host_paths,
            [
                "/proc",
                "/sys/fs/cgroup",
                "/sys/kernel/btf",
                "/sys/kernel/tracing",
                "/sys/fs/bpf",
                "/run",
                "/var/run"
            ]
        );
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
