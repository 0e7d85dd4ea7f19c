//! The decision core shared by every attach backend: given a matched event, the socket it
//! touched and where the caller lives, is this a finding, and what does it say?
use crate::{
    backend::BackendKind,
    cgroup::{parse_cgroup_path, ContainerRef},
    event::{Operation, SocketEvent},
    finding::{
        self, CgroupInfo, ContainerInfo, Finding, Namespaces, PodInfo, ProcessInfo, SocketInfo,
        TRC_1019,
    },
    procinfo::ProcDetails,
    sockets::ArmedSocket,
};

/// How the touched socket was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    Inode,
    Name,
}

/// Where the caller runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Its cgroup names a container.
    Container(ContainerRef),
    /// No container in its cgroup, but a PID namespace of its own: containerised all the same
    /// (e.g. a sandbox made with unshare).
    Namespaced,
    Host,
}

/// The cgroup decides first: a process in a container's cgroup is in that container whatever
/// namespaces it joined (a hostPID container that `nsenter`s the host's mount and PID
/// namespaces is still that container). Without a container cgroup, a PID namespace other
/// than the host's still makes it containerised. A host service with only a private mount
/// namespace (systemd's `PrivateTmp=`) is a host process.
pub fn classify(ev: &SocketEvent, cgroup_path: Option<&str>, host_pid_ns: u32) -> Origin {
    match cgroup_path.and_then(parse_cgroup_path) {
        Some(container) => Origin::Container(container),
        None if ev.pid_ns != host_pid_ns => Origin::Namespaced,
        None => Origin::Host,
    }
}

pub struct Decider {
    pub node: String,
    pub backend: BackendKind,
    pub include_host: bool,
    pub host_pid_ns: u32,
    /// The probe's own process id in the host's PID namespace, as the kernel reports callers:
    /// its own connects (to a runtime's CRI API) are not findings. Recognised by the kernel's
    /// word for who called, never by a label or name a pod could copy.
    pub own_pid: Option<u32>,
}

impl Decider {
    pub fn decide(
        &self,
        ev: &SocketEvent,
        socket: &ArmedSocket,
        identity: Identity,
        cgroup_path: Option<String>,
        details: impl FnOnce() -> ProcDetails,
    ) -> Option<Finding> {
        if self.own_pid == Some(ev.pid) {
            return None;
        }
        let origin = classify(ev, cgroup_path.as_deref(), self.host_pid_ns);
        // The kernel hands over host processes too (see `classify`): they stop here, before
        // `/proc` is read for them.
        if origin == Origin::Host && !self.include_host {
            return None;
        }
        let details = details();
        let (container, pod) = match origin {
            Origin::Container(c) => (
                Some(ContainerInfo {
                    id: Some(c.id),
                    runtime: c.runtime,
                }),
                c.pod_uid.map(|uid| PodInfo { uid }),
            ),
            Origin::Namespaced => (
                Some(ContainerInfo {
                    id: None,
                    runtime: None,
                }),
                None,
            ),
            Origin::Host => (None, None),
        };
        Some(Finding {
            signature: TRC_1019,
            time: finding::now_rfc3339(),
            node: self.node.clone(),
            operation: ev.operation.into(),
            socket: SocketInfo {
                host_path: socket.host_path.display().to_string(),
                runtime: socket.runtime.clone(),
                inode: socket.id.ino,
                device: socket.id.dev_string(),
                identity: match identity {
                    Identity::Inode => "inode",
                    Identity::Name => "name",
                },
            },
            requested_path: ev.path.clone(),
            open_flags: (ev.operation == Operation::Open)
                .then(|| finding::open_flags_string(ev.flags)),
            process: ProcessInfo {
                pid: ev.pid,
                tid: ev.tid,
                ppid: ev.ppid,
                uid: ev.uid,
                gid: ev.gid,
                comm: ev.comm.clone(),
                exe: details.exe,
                cmdline: details.cmdline,
            },
            container,
            pod,
            namespaces: Namespaces {
                mnt: ev.mnt_ns,
                pid: ev.pid_ns,
            },
            cgroup: CgroupInfo {
                id: ev.cgroup_id,
                path: cgroup_path,
            },
            backend: self.backend,
            // What the kernel did, not what user space thinks it should have done.
            action: ev.action.finding_action(),
            enforcement: ev.action.how(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{decode, encode, raw_event, Decoded},
        rootfs::FileId,
    };
    use api::FindingOperation;

    const HOST_PID_NS: u32 = 4026531836;
    const OWN_PID: u32 = 999_999;

    fn event(pid_ns: u32) -> SocketEvent {
        let mut raw = raw_event(probe_common::kind::CONNECT, "/tmp/x.sock");
        raw.pid_ns = pid_ns;
        match decode(&encode(&raw)).unwrap() {
            Decoded::Socket(s) => s,
            _ => unreachable!(),
        }
    }

    fn socket() -> ArmedSocket {
        ArmedSocket {
            id: FileId {
                kernel_dev: 25,
                ino: 4242,
                is_socket: true,
            },
            host_path: "/run/docker.sock".into(),
            runtime: "docker".into(),
        }
    }

    fn decider(include_host: bool) -> Decider {
        Decider {
            node: "n1".into(),
            backend: BackendKind::Tracepoint,
            include_host,
            host_pid_ns: HOST_PID_NS,
            own_pid: Some(OWN_PID),
        }
    }

    fn no_details() -> ProcDetails {
        ProcDetails {
            exe: None,
            cmdline: None,
        }
    }

    #[test]
    fn container_finding_names_full_container_id_pod_and_requested_alias() {
        let id = "b".repeat(64);
        let uid = "0d6f1c2e-3b4a-4c5d-8e9f-a0b1c2d3e4f5";
        let path = format!("/kubepods/besteffort/pod{uid}/{id}");
        let f = decider(false)
            .decide(
                &event(HOST_PID_NS),
                &socket(),
                Identity::Inode,
                Some(path),
                no_details,
            )
            .expect("a container process is a finding");
        let c = f.container.unwrap();
        assert_eq!(c.id.as_deref(), Some(id.as_str()));
        assert_eq!(f.pod.unwrap().uid, uid);
        assert_eq!(f.requested_path.as_deref(), Some("/tmp/x.sock"));
        assert_eq!(f.socket.host_path, "/run/docker.sock");
        assert_eq!(f.socket.device, "0:25");
        assert_eq!(f.operation, FindingOperation::Connect);
    }

    #[test]
    fn host_processes_are_findings_only_with_include_host() {
        let host_cgroup = Some("/system.slice/ssh.service".to_string());
        assert!(decider(false)
            .decide(
                &event(HOST_PID_NS),
                &socket(),
                Identity::Inode,
                host_cgroup.clone(),
                no_details
            )
            .is_none());
        let f = decider(true)
            .decide(
                &event(HOST_PID_NS),
                &socket(),
                Identity::Inode,
                host_cgroup,
                no_details,
            )
            .unwrap();
        assert!(f.container.is_none());
    }

    #[test]
    fn container_cgroup_wins_over_the_hosts_namespaces() {
        let id = "d".repeat(64);
        let f = decider(false)
            .decide(
                &event(HOST_PID_NS),
                &socket(),
                Identity::Inode,
                Some(format!("/docker/{id}")),
                no_details,
            )
            .expect("a container process that joined the host's namespaces is reported");
        assert_eq!(f.container.unwrap().id.as_deref(), Some(id.as_str()));
        assert_eq!(f.namespaces.pid, HOST_PID_NS);
    }

    #[test]
    fn host_processes_cost_no_proc_reads() {
        let dropped = decider(false).decide(
            &event(HOST_PID_NS),
            &socket(),
            Identity::Inode,
            Some("/system.slice/containerd.service".into()),
            || panic!("/proc must not be read for a host process that is not reported"),
        );
        assert!(dropped.is_none());
    }

    #[test]
    fn own_pid_namespace_without_container_cgroup_is_still_containerised() {
        let f = decider(false)
            .decide(
                &event(HOST_PID_NS + 7),
                &socket(),
                Identity::Inode,
                Some("/user.slice".into()),
                no_details,
            )
            .expect("a process in its own PID namespace is not a host process");
        assert_eq!(f.container.unwrap().id, None);
    }

    #[test]
    fn the_probes_own_process_is_no_finding_whatever_its_cgroup() {
        let id = "c".repeat(64);
        let cgroup = Some(format!("/kubepods/besteffort/pod1/{id}"));
        let mut own = event(HOST_PID_NS);
        own.pid = OWN_PID;
        let decide = |ev: &SocketEvent| {
            decider(false).decide(ev, &socket(), Identity::Inode, cgroup.clone(), no_details)
        };
        assert!(decide(&own).is_none());
        let mut other = own.clone();
        other.pid = OWN_PID + 1;
        assert!(
            decide(&other).is_some(),
            "another process of the same container is"
        );
    }
}
