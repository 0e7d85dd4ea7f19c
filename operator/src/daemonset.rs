//! The probe DaemonSet: one per cluster, in the operator's namespace, applied by server-side
//! apply. Narrow privileges instead of `privileged: true`: the probe needs CAP_BPF and
//! CAP_PERFMON to load and attach programs, CAP_SYS_ADMIN where the kernel still gates
//! tracing programs on it, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH to read other processes'
//! /proc entries (namespaces, root, exe). Not CAP_SYS_RESOURCE: BPF memory is charged to the
//! cgroup since Linux 5.11, the probe's memlock raise is best effort, and some runtimes'
//! bounding sets lack it, which would stop the pod from starting at all.
use std::collections::BTreeSet;

use api::DockerSocketPolicy;
use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::json;

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

/// Directories whose sockets the default probe configuration covers (mounted under /host).
const SOCKET_DIRS: &[&str] = &["/run", "/var/run"];

/// Host directories a policy's extra sockets need, beyond the default ones.
fn extra_socket_dirs(policies: &[&DockerSocketPolicy]) -> BTreeSet<String> {
    policies
        .iter()
        .flat_map(|p| p.spec.sockets.iter())
        .filter_map(|s| {
            let parent = std::path::Path::new(&s.path)
                .parent()?
                .to_str()?
                .to_string();
            let covered = SOCKET_DIRS
                .iter()
                .any(|d| parent == *d || parent.starts_with(&format!("{d}/")));
            (!covered && parent != "/").then_some(parent)
        })
        .collect()
}

pub fn probe_daemonset(settings: &ProbeSettings, policies: &[&DockerSocketPolicy]) -> DaemonSet {
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
    let sockets: BTreeSet<String> = policies
        .iter()
        .flat_map(|p| p.spec.sockets.iter())
        .map(|s| {
            let runtime = serde_json::to_value(s.runtime)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "other".into());
            format!("--socket={}={runtime}", s.path)
        })
        .collect();
    args.extend(sockets);

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
    let socket_dirs = SOCKET_DIRS
        .iter()
        .map(|d| d.to_string())
        .chain(extra_socket_dirs(policies));
    for (i, dir) in socket_dirs.enumerate() {
        let name = format!("sockets-{i}");
        // Read-only: the probe stats sockets, it never connects to them. Bidirectional
        // propagation lets a socket dir recreated by a daemon restart show up.
        volumes.push(json!({"name": name, "hostPath": {"path": dir, "type": "Directory"}}));
        mounts.push(json!({"name": name, "mountPath": format!("/host{dir}"), "readOnly": true, "mountPropagation": "HostToContainer"}));
    }

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
            "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 10},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 20, "failureThreshold": 3},
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
    let ds = json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NAME, "namespace": settings.namespace, "labels": labels},
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

#[cfg(test)]
mod tests {
    use super::*;
    use api::{DockerSocketPolicySpec, Runtime, SocketRef};

    fn policy_with_socket(path: &str, runtime: Runtime) -> DockerSocketPolicy {
        DockerSocketPolicy::new(
            "p",
            DockerSocketPolicySpec {
                sockets: vec![SocketRef {
                    path: path.into(),
                    runtime,
                }],
                ..Default::default()
            },
        )
    }

    #[test]
    fn probe_runs_on_every_node_with_narrow_privileges_and_host_mounts() {
        let ds = probe_daemonset(&ProbeSettings::default(), &[]);
        let v = serde_json::to_value(&ds).unwrap();
        assert_eq!(v["metadata"]["name"], NAME);
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["hostPID"], true);
        assert_eq!(pod["tolerations"][0]["operator"], "Exists");
        assert_eq!(pod["priorityClassName"], "system-node-critical");
        let c = &pod["containers"][0];
        assert_eq!(c["securityContext"]["privileged"], false);
        let caps: Vec<&str> = c["securityContext"]["capabilities"]["add"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        for cap in ["BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"] {
            assert!(caps.contains(&cap), "{cap} missing");
        }
        assert!(
            !caps.contains(&"SYS_RESOURCE"),
            "memlock is charged to the cgroup on current kernels"
        );
        assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(
            c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "spec.nodeName"
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
        assert!(c["args"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("--host-root=/host")));
        assert!(c["resources"]["limits"]["memory"].is_string());
    }

    #[test]
    fn policy_sockets_become_flags_and_outside_dirs_are_mounted() {
        let a = policy_with_socket("/srv/docker/api.sock", Runtime::Docker);
        let b = policy_with_socket("/run/podman/podman.sock", Runtime::Podman);
        let ds = probe_daemonset(
            &ProbeSettings {
                detect_open: true,
                ..Default::default()
            },
            &[&a, &b],
        );
        let v = serde_json::to_value(&ds).unwrap();
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert!(args.contains(&"--socket=/srv/docker/api.sock=docker"));
        assert!(args.contains(&"--socket=/run/podman/podman.sock=podman"));
        assert!(args.contains(&"--detect-open"));
        let mounts: Vec<&str> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert!(mounts.contains(&"/host/srv/docker"));
        assert!(!mounts.contains(&"/host/run/podman"), "already under /run");
    }
}
