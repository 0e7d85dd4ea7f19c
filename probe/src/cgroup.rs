//! What a cgroup path says about the process inside it: which container (full id), which
//! runtime, which Kubernetes pod. Covers cgroupfs and systemd drivers, cgroup v1 and v2,
//! Docker, containerd/CRI, CRI-O, Podman and kubelet's QoS classes.
use serde::Serialize;

/// The container a cgroup path belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerRef {
    /// Full 64-hex container id.
    pub id: String,
    /// `docker`, `containerd`, `cri-o`, `podman`, or `cri` when only kubelet's layout shows.
    pub runtime: Option<String>,
    /// Pod UID from a kubepods path.
    #[serde(skip)]
    pub pod_uid: Option<String>,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runtime prefixes of systemd scope units and cgroupfs names, e.g. `docker-<id>.scope`.
const SCOPE_PREFIXES: &[(&str, &str)] = &[
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

/// The container id and runtime named by one path segment, if any.
fn container_in_segment(segment: &str) -> Option<(String, Option<&'static str>)> {
    // containerd's systemd-driver form on cgroupfs: "<slice>:cri-containerd:<id>".
    if let Some((_, id)) = segment.rsplit_once(':') {
        if is_container_id(id) {
            let runtime = segment.contains(":cri-containerd:").then_some("containerd");
            return Some((id.to_string(), runtime.or(Some("containerd"))));
        }
    }
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    for (prefix, runtime) in SCOPE_PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            if is_container_id(id) {
                return Some((id.to_string(), Some(runtime)));
            }
        }
    }
    is_container_id(name).then(|| (name.to_string(), None))
}

/// Pod UID named by one kubepods segment: `pod<uid>` (cgroupfs) or
/// `kubepods-<qos>-pod<uid with _ for ->.slice` (systemd).
fn pod_in_segment(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".slice").unwrap_or(segment);
    let uid = name
        .rsplit_once("-pod")
        .map(|(_, u)| u)
        .or_else(|| name.strip_prefix("pod"))?;
    let uid = uid.replace('_', "-");
    let valid = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    valid.then_some(uid)
}

/// Parses a cgroup path (as in `/proc/<pid>/cgroup` or a cgroupfs directory relative to the
/// hierarchy root). Nested containers (Docker in Docker) yield the innermost one.
pub fn parse_cgroup_path(path: &str) -> Option<ContainerRef> {
    let mut found: Option<ContainerRef> = None;
    let mut pod_uid = None;
    let mut under_kubepods = false;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if segment.starts_with("kubepods") {
            under_kubepods = true;
        }
        if under_kubepods {
            if let Some(uid) = pod_in_segment(segment) {
                pod_uid = Some(uid);
                continue;
            }
        }
        if segment.starts_with("crio-conmon-") {
            continue; // CRI-O's monitor process, not the container
        }
        if let Some((id, runtime)) = container_in_segment(segment) {
            let runtime = runtime
                .map(str::to_string)
                .or_else(|| parent_runtime(path, &id))
                .or_else(|| under_kubepods.then(|| "cri".to_string()));
            found = Some(ContainerRef {
                id,
                runtime,
                pod_uid: None,
            });
        }
    }
    found.map(|mut c| {
        c.pod_uid = pod_uid;
        c
    })
}

/// Runtime implied by the directory that holds a bare id (`/docker/<id>`, `/libpod_parent/...`).
fn parent_runtime(path: &str, id: &str) -> Option<String> {
    let before = path.rsplit_once(id)?.0.trim_end_matches('/');
    let parent = before.rsplit('/').next()?;
    match parent {
        "docker" => Some("docker".into()),
        p if p.starts_with("libpod") => Some("podman".into()),
        "crio" => Some("cri-o".into()),
        _ => None,
    }
}

/// The cgroup v2 path of a process from `/proc/<pid>/cgroup` content (the `0::` line).
pub fn unified_path_from_proc(content: &str) -> Option<&str> {
    content
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e1c0b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";
    const UID: &str = "0d6f1c2e-3b4a-4c5d-8e9f-a0b1c2d3e4f5";

    #[test]
    fn table_of_real_world_cgroup_paths() {
        let uid_us = UID.replace('-', "_");
        // (cgroup path, expected (container id, runtime, pod uid))
        type Expected<'a> = Option<(&'a str, Option<&'a str>, Option<&'a str>)>;
        let cases: Vec<(String, Expected)> = vec![
            // Docker, cgroupfs driver (v1 and v2 look alike)
            (format!("/docker/{ID}"), Some((ID, Some("docker"), None))),
            // Docker, systemd driver
            (format!("/system.slice/docker-{ID}.scope"), Some((ID, Some("docker"), None))),
            // kubelet cgroupfs driver, each QoS class, runtime not visible
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), Some((ID, Some("cri"), Some(UID)))),
            (format!("/kubepods/burstable/pod{UID}/{ID}"), Some((ID, Some("cri"), Some(UID)))),
            (format!("/kubepods/pod{UID}/{ID}"), Some((ID, Some("cri"), Some(UID)))),
            // kubelet systemd driver with containerd
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_us}.slice/cri-containerd-{ID}.scope"),
                Some((ID, Some("containerd"), Some(UID))),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{uid_us}.slice/cri-containerd-{ID}.scope"),
                Some((ID, Some("containerd"), Some(UID))),
            ),
            // CRI-O, systemd driver; its conmon scope is not the container
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_us}.slice/crio-{ID}.scope"),
                Some((ID, Some("cri-o"), Some(UID))),
            ),
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_us}.slice/crio-conmon-{ID}.scope"),
                None,
            ),
            // containerd with systemd cgroup naming on cgroupfs (k3s)
            (
                format!("/system.slice/containerd.service/kubepods-besteffort-pod{uid_us}.slice:cri-containerd:{ID}"),
                Some((ID, Some("containerd"), None)),
            ),
            // Docker with kubelet (cri-dockerd, systemd)
            (
                format!("/kubepods.slice/kubepods-pod{uid_us}.slice/docker-{ID}.scope"),
                Some((ID, Some("docker"), Some(UID))),
            ),
            // Podman, systemd and cgroupfs
            (format!("/machine.slice/libpod-{ID}.scope"), Some((ID, Some("podman"), None))),
            (format!("/libpod_parent/libpod-{ID}"), Some((ID, Some("podman"), None))),
            (format!("/machine.slice/libpod-{ID}.scope/container"), Some((ID, Some("podman"), None))),
            // Docker in Docker: the innermost container
            (
                format!("/docker/{}/docker/{ID}", "a".repeat(64)),
                Some((ID, Some("docker"), None)),
            ),
            // Host processes and look-alikes
            ("/".to_string(), None),
            ("/user.slice/user-0.slice/session-1.scope".to_string(), None),
            ("/system.slice/docker.service".to_string(), None),
            ("/system.slice/containerd.service".to_string(), None),
            (format!("/docker/{}", &ID[..12]), None),
            (format!("/docker/{}x", &ID[..63]), None),
            ("/kubepods/besteffort".to_string(), None),
        ];
        for (path, want) in cases {
            let got = parse_cgroup_path(&path);
            let got = got
                .as_ref()
                .map(|c| (c.id.as_str(), c.runtime.as_deref(), c.pod_uid.as_deref()));
            assert_eq!(got, want, "path {path}");
        }
    }

    #[test]
    fn unified_line_is_found_among_v1_lines() {
        let content =
            format!("12:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/docker/{ID}\n");
        assert_eq!(
            unified_path_from_proc(&content),
            Some(format!("/docker/{ID}").as_str())
        );
        assert_eq!(unified_path_from_proc("1:cpu:/\n"), None);
    }
}
