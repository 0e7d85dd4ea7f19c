//! Decoding ring-buffer records (`probe_common::Event`) into owned, typed events.
/// The kernel's operation (connect or open); findings carry it as `api::FindingOperation`,
/// converted with `From`.
pub use probe_common::Operation;
use probe_common::{kind, Event, PATH_LEN};

/// A matched syscall, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEvent {
    pub operation: Operation,
    pub tid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub mnt_ns: u32,
    pub pid_ns: u32,
    /// Kernel-encoded device and inode of the socket file (0 for opens: resolved later).
    pub dev: u64,
    pub ino: u64,
    pub flags: u32,
    pub dirfd: i32,
    pub ret: i32,
    /// Requested path, if the hook could read it.
    pub path: Option<String>,
    pub ktime_ns: u64,
    /// When the process started (ns since boot; 0 = unknown).
    pub start_ns: u64,
    /// What the kernel did about it.
    pub action: KernelAction,
}

/// What the kernel did about a touch of a watched socket (`probe_common::action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelAction {
    /// Let through.
    None,
    /// The syscall failed with EPERM.
    Refused,
    /// The caller was sent SIGKILL before the syscall returned to it.
    Killed,
}

impl KernelAction {
    fn from_code(code: u32) -> Self {
        match code {
            probe_common::action::REFUSED => KernelAction::Refused,
            probe_common::action::KILLED => KernelAction::Killed,
            _ => KernelAction::None,
        }
    }

    /// How a blocked touch was stopped, in the finding's words.
    pub fn how(self) -> Option<&'static str> {
        match self {
            KernelAction::None => None,
            KernelAction::Refused => Some("EPERM"),
            KernelAction::Killed => Some("SIGKILL"),
        }
    }

    /// The finding's `action`.
    pub fn finding_action(self) -> api::FindingAction {
        match self {
            KernelAction::None => api::FindingAction::Audit,
            KernelAction::Refused | KernelAction::Killed => api::FindingAction::Blocked,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Socket(SocketEvent),
    CgroupMkdir { id: u64, path: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring-buffer record of {0} bytes is shorter than an event ({1} bytes)")]
    Short(usize, usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

fn c_string(bytes: &[u8], len: Option<usize>) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let end = len.map_or(end, |l| l.min(end));
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let size = std::mem::size_of::<Event>();
    if bytes.len() < size {
        return Err(DecodeError::Short(bytes.len(), size));
    }
    // SAFETY: length checked; Event is plain-old-data; the record may be unaligned.
    let e: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let path_len = (e.path_len as usize).min(PATH_LEN);
    let path = (path_len > 0).then(|| c_string(&e.path, Some(path_len)));
    if e.kind == kind::CGROUP_MKDIR {
        return Ok(Decoded::CgroupMkdir {
            id: e.cgroup_id,
            path: path.unwrap_or_default(),
        });
    }
    let operation = Operation::try_from(e.kind).map_err(DecodeError::UnknownKind)?;
    Ok(Decoded::Socket(SocketEvent {
        operation,
        tid: e.tid,
        pid: e.pid,
        ppid: e.ppid,
        uid: e.uid,
        gid: e.gid,
        comm: c_string(&e.comm, None),
        cgroup_id: e.cgroup_id,
        mnt_ns: e.mnt_ns,
        pid_ns: e.pid_ns,
        dev: e.dev,
        ino: e.ino,
        flags: e.flags,
        dirfd: e.dirfd,
        ret: e.ret,
        path,
        ktime_ns: e.ktime_ns,
        start_ns: e.start_ns,
        action: KernelAction::from_code(e.action),
    }))
}

/// The ring-buffer bytes of an event, as the kernel writes them (tests and benchmarks).
pub fn encode(event: &Event) -> Vec<u8> {
    // SAFETY: Event is plain-old-data.
    unsafe {
        std::slice::from_raw_parts(
            (event as *const Event).cast::<u8>(),
            std::mem::size_of::<Event>(),
        )
    }
    .to_vec()
}

#[cfg(test)]
pub(crate) fn raw_event(kind: u32, path: &str) -> Event {
    let mut e: Event = unsafe { std::mem::zeroed() };
    e.kind = kind;
    e.tid = 11;
    e.pid = 10;
    e.ppid = 1;
    e.uid = 1000;
    e.gid = 1001;
    e.mnt_ns = 4026532000;
    e.pid_ns = 4026532001;
    e.cgroup_id = 777;
    e.dev = 25;
    e.ino = 4242;
    e.comm[..4].copy_from_slice(b"curl");
    e.path[..path.len()].copy_from_slice(path.as_bytes());
    e.path_len = path.len() as u32;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_record_decodes_every_field() {
        let e = raw_event(kind::CONNECT, "/var/run/docker.sock");
        let Decoded::Socket(s) = decode(&encode(&e)).unwrap() else {
            panic!("not a socket event")
        };
        assert_eq!(s.operation, Operation::Connect);
        assert_eq!(
            (s.tid, s.pid, s.ppid, s.uid, s.gid),
            (11, 10, 1, 1000, 1001)
        );
        assert_eq!(
            (s.mnt_ns, s.pid_ns, s.cgroup_id),
            (4026532000, 4026532001, 777)
        );
        assert_eq!((s.dev, s.ino), (25, 4242));
        assert_eq!(s.comm, "curl");
        assert_eq!(s.path.as_deref(), Some("/var/run/docker.sock"));
    }

    #[test]
    fn path_len_bounds_the_path_and_zero_means_unknown() {
        let mut e = raw_event(kind::CONNECT, "/x.sock-garbage");
        e.path_len = 7;
        let Decoded::Socket(s) = decode(&encode(&e)).unwrap() else {
            panic!()
        };
        assert_eq!(s.path.as_deref(), Some("/x.sock"));
        e.path_len = 0;
        let Decoded::Socket(s) = decode(&encode(&e)).unwrap() else {
            panic!()
        };
        assert_eq!(s.path, None);
        e.path_len = 100_000; // corrupt length is clamped, not trusted
        assert!(decode(&encode(&e)).is_ok());
    }

    #[test]
    fn cgroup_mkdir_and_bad_records() {
        let mut e = raw_event(kind::CGROUP_MKDIR, "/docker/abc");
        e.cgroup_id = 99;
        assert_eq!(
            decode(&encode(&e)).unwrap(),
            Decoded::CgroupMkdir {
                id: 99,
                path: "/docker/abc".into()
            }
        );
        e.kind = 42;
        assert_eq!(decode(&encode(&e)), Err(DecodeError::UnknownKind(42)));
        assert!(matches!(decode(&[0u8; 8]), Err(DecodeError::Short(8, _))));
    }

    /// The kernel side fills a reserved record field by field (`addr_of_mut!` writes, see
    /// probe-ebpf's `helpers::fill_task`), never as a whole struct: build the bytes the same
    /// way, at the offsets probe-common asserts, and every field must decode from its place.
    #[test]
    fn record_written_field_by_field_decodes_every_field() {
        use std::mem::{offset_of, size_of};
        let mut bytes = vec![0u8; size_of::<Event>()];
        let mut put = |offset: usize, value: &[u8]| {
            bytes[offset..offset + value.len()].copy_from_slice(value)
        };
        put(offset_of!(Event, kind), &kind::OPEN.to_ne_bytes());
        put(offset_of!(Event, flags), &0o101u32.to_ne_bytes());
        put(offset_of!(Event, tid), &21u32.to_ne_bytes());
        put(offset_of!(Event, pid), &20u32.to_ne_bytes());
        put(offset_of!(Event, ppid), &2u32.to_ne_bytes());
        put(offset_of!(Event, uid), &1000u32.to_ne_bytes());
        put(offset_of!(Event, gid), &1001u32.to_ne_bytes());
        put(offset_of!(Event, mnt_ns), &4026532010u32.to_ne_bytes());
        put(offset_of!(Event, pid_ns), &4026532011u32.to_ne_bytes());
        put(offset_of!(Event, ret), &(-6i32).to_ne_bytes());
        put(offset_of!(Event, dirfd), &7i32.to_ne_bytes());
        put(offset_of!(Event, path_len), &11u32.to_ne_bytes());
        put(
            offset_of!(Event, action),
            &probe_common::action::KILLED.to_ne_bytes(),
        );
        put(offset_of!(Event, cgroup_id), &778u64.to_ne_bytes());
        put(offset_of!(Event, ktime_ns), &123_456_789u64.to_ne_bytes());
        put(offset_of!(Event, start_ns), &987_654_321u64.to_ne_bytes());
        put(offset_of!(Event, dev), &26u64.to_ne_bytes());
        put(offset_of!(Event, ino), &4343u64.to_ne_bytes());
        put(offset_of!(Event, comm), b"docker\0");
        put(offset_of!(Event, path), b"docker.sock\0");
        // A record at an odd address, as a ring-buffer sample may be.
        let mut unaligned = vec![0u8];
        unaligned.extend_from_slice(&bytes);
        let Decoded::Socket(s) = decode(&unaligned[1..]).unwrap() else {
            panic!("not a socket event")
        };
        assert_eq!(
            s,
            SocketEvent {
                operation: Operation::Open,
                tid: 21,
                pid: 20,
                ppid: 2,
                uid: 1000,
                gid: 1001,
                comm: "docker".into(),
                cgroup_id: 778,
                mnt_ns: 4026532010,
                pid_ns: 4026532011,
                dev: 26,
                ino: 4343,
                flags: 0o101,
                dirfd: 7,
                ret: -6,
                path: Some("docker.sock".into()),
                ktime_ns: 123_456_789,
                start_ns: 987_654_321,
                action: KernelAction::Killed,
            }
        );
    }
}
