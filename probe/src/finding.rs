//! A finding: what the probe reports when a process in a container reaches a runtime socket.
//! Carries TRC-1019's metadata so tools built around Tracee's signature read it unchanged.
use api::{FindingAction, FindingOperation};
use serde::Serialize;

use crate::backend::BackendKind;

/// TRC-1019's metadata, defined once in `api` so findings and finding objects agree.
pub use api::{Signature, TRC_1019};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SocketInfo {
    pub host_path: String,
    pub runtime: String,
    pub inode: u64,
    /// `major:minor` of the file system holding the socket file.
    pub device: String,
    /// How the socket was identified: `inode` (the kernel object itself) or `name` (an open
    /// whose caller was gone before its path could be resolved, matched by file name the way
    /// TRC-1019 does).
    pub identity: &'static str,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    /// From `/proc/<pid>/exe`; null when the process was gone before the probe looked.
    pub exe: Option<String>,
    pub cmdline: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInfo {
    /// Full container id; null for a containerised process whose cgroup names none.
    pub id: Option<String>,
    pub runtime: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Namespaces {
    pub mnt: u32,
    pub pid: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CgroupInfo {
    pub id: u64,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub signature: Signature,
    /// RFC 3339, UTC.
    pub time: String,
    pub node: String,
    /// `connect` or `open`: the API's spelling, which metric labels use too.
    pub operation: FindingOperation,
    pub socket: SocketInfo,
    /// The path the process asked for (may be an alias of `socket.hostPath`).
    pub requested_path: Option<String>,
    /// open(2) flags, for opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_flags: Option<String>,
    pub process: ProcessInfo,
    pub container: Option<ContainerInfo>,
    pub pod: Option<PodInfo>,
    pub namespaces: Namespaces,
    pub cgroup: CgroupInfo,
    pub backend: BackendKind,
    /// `Audit` (let through, reported) or `Blocked` (refused by the kernel under an Enforce
    /// verdict), as on the API object and the metrics.
    pub action: FindingAction,
    /// How a `Blocked` touch was stopped: `EPERM` (the syscall failed) or `SIGKILL` (the
    /// caller was killed before the syscall returned to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<&'static str>,
}

impl Finding {
    pub fn to_json(&self) -> String {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// One readable line for a terminal.
    pub fn to_text(&self) -> String {
        let container = self
            .container
            .as_ref()
            .and_then(|c| c.id.as_deref())
            .map(|id| &id[..id.len().min(12)])
            .unwrap_or("host");
        format!(
            "{time} {id} {op} {socket} ({runtime}) via {requested} by {comm}[{pid}] uid={uid} container={container}{pod} action={action}",
            time = self.time,
            id = self.signature.id,
            op = self.operation,
            socket = self.socket.host_path,
            runtime = self.socket.runtime,
            requested = self.requested_path.as_deref().unwrap_or("?"),
            comm = self.process.comm,
            pid = self.process.pid,
            uid = self.process.uid,
            pod = self
                .pod
                .as_ref()
                .map(|p| format!(" pod={}", p.uid))
                .unwrap_or_default(),
            action = self.action,
        )
    }
}

/// Renders open(2) access flags the way strace does.
pub fn open_flags_string(flags: u32) -> String {
    let mut parts = vec![match flags & 3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    }
    .to_string()];
    for (bit, name) in [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_CLOEXEC, "O_CLOEXEC"),
    ] {
        if flags & bit as u32 != 0 {
            parts.push(name.to_string());
        }
    }
    parts.join("|")
}

/// RFC 3339 UTC timestamp with microseconds.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

#[cfg(test)]
pub(crate) fn sample() -> Finding {
    Finding {
        signature: TRC_1019,
        time: "2026-11-29T10:00:00.123456Z".into(),
        node: "node-1".into(),
        operation: FindingOperation::Connect,
        socket: SocketInfo {
            host_path: "/run/docker.sock".into(),
            runtime: "docker".into(),
            inode: 4242,
            device: "0:25".into(),
            identity: "inode",
        },
        requested_path: Some("/tmp/innocent.sock".into()),
        open_flags: None,
        process: ProcessInfo {
            pid: 10,
            tid: 11,
            ppid: 1,
            uid: 0,
            gid: 0,
            comm: "curl".into(),
            exe: Some("/usr/bin/curl".into()),
            cmdline: Some("curl --unix-socket /tmp/innocent.sock http://x/containers/json".into()),
        },
        container: Some(ContainerInfo {
            id: Some("a".repeat(64)),
            runtime: Some("docker".into()),
        }),
        pod: None,
        namespaces: Namespaces { mnt: 1, pid: 2 },
        cgroup: CgroupInfo {
            id: 777,
            path: Some(format!("/docker/{}", "a".repeat(64))),
        },
        backend: BackendKind::Tracepoint,
        action: FindingAction::Audit,
        enforcement: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_carries_trc_1019_metadata_and_every_required_field() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["signature"]["id"], "TRC-1019");
        assert_eq!(v["signature"]["version"], "1");
        assert_eq!(v["signature"]["name"], "Docker socket abuse detected");
        assert_eq!(v["signature"]["eventName"], "docker_abuse");
        assert_eq!(v["signature"]["severity"], 2);
        assert_eq!(v["signature"]["category"], "privilege-escalation");
        assert_eq!(
            v["signature"]["technique"],
            "Exploitation for Privilege Escalation"
        );
        assert_eq!(
            v["signature"]["mitreId"],
            "attack-pattern--b21c3b2d-02e6-45b1-980b-e69051040839"
        );
        assert_eq!(v["signature"]["externalId"], "T1068");
        assert_eq!(v["operation"], "connect");
        assert_eq!(v["socket"]["hostPath"], "/run/docker.sock");
        assert_eq!(v["socket"]["runtime"], "docker");
        assert_eq!(v["socket"]["inode"], 4242);
        assert_eq!(v["socket"]["identity"], "inode");
        assert_eq!(v["requestedPath"], "/tmp/innocent.sock");
        for field in ["pid", "tid", "ppid", "uid", "gid", "comm", "exe", "cmdline"] {
            assert!(v["process"].get(field).is_some(), "process.{field} missing");
        }
        assert_eq!(v["container"]["id"].as_str().unwrap().len(), 64);
        assert_eq!(v["container"]["runtime"], "docker");
        assert!(v["pod"].is_null());
        assert_eq!(v["backend"], "tracepoint");
        assert_eq!(v["action"], "Audit");
        assert!(
            v.get("openFlags").is_none(),
            "connect findings carry no open flags"
        );
        assert!(time::OffsetDateTime::parse(
            v["time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok());
    }

    #[test]
    fn text_line_names_socket_process_and_short_container_id() {
        let line = sample().to_text();
        assert!(
            line.contains("TRC-1019 connect /run/docker.sock (docker) via /tmp/innocent.sock"),
            "{line}"
        );
        assert!(line.contains("curl[10]"), "{line}");
        assert!(line.contains("container=aaaaaaaaaaaa "), "{line}");
    }

    #[test]
    fn open_flags_render_like_strace() {
        assert_eq!(open_flags_string(2), "O_RDWR");
        assert_eq!(
            open_flags_string(1 | libc::O_CREAT as u32),
            "O_WRONLY|O_CREAT"
        );
        assert!(now_rfc3339().ends_with('Z'));
    }
}
