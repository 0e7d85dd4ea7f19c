//! Attach backends and how one is chosen. Every backend loads the same eBPF object and feeds
//! the same ring-buffer events into the same decision core; only how the kernel is hooked
//! differs. Auto-selection tries what actually loads here, best first.
pub mod error;
pub mod fmod_ret;
pub mod pin;
pub mod security;
pub mod tracefs;
pub mod tracepoint;

use std::{
    collections::HashSet,
    error::Error as StdError,
    fmt,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::links::FdLink,
    Ebpf, EbpfLoader,
};
use probe_common::{
    KernelOffsets, ProbeConfig, WatchedKey, COUNTER_BLOCKED, COUNTER_CONNECT_RINGBUF_DROPS,
    COUNTER_OPENS_LIMITED, COUNTER_RINGBUF_DROPS,
};

pub use error::{sentence, LoadError};

use crate::{rootfs::FileId, sockets::WatchedSet};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockwarden"));

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendRequest {
    Auto,
    Lsm,
    Fentry,
    Tracepoint,
    Kprobe,
}

/// The attach backend in use, as findings, logs and `sockwarden_probe_backend_info` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Lsm,
    Fentry,
    Tracepoint,
    Kprobe,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Lsm => "lsm",
            BackendKind::Fentry => "fentry",
            BackendKind::Tracepoint => "tracepoint",
            BackendKind::Kprobe => "kprobe",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why no backend runs: the one asked for could not, or none could.
#[derive(Debug, thiserror::Error)]
pub enum SelectError<E: StdError + 'static> {
    #[error("--backend {kind} cannot run on this node")]
    Forced {
        kind: BackendKind,
        #[source]
        source: E,
    },
    #[error("no backend can run on this node: {}", refusals(refused))]
    NoneRuns { refused: Vec<(BackendKind, E)> },
}

/// `lsm unavailable: why; fentry unavailable: why`, each why one sentence.
fn refusals<E: StdError + 'static>(refused: &[(BackendKind, E)]) -> String {
    refused
        .iter()
        .map(|(kind, why)| format!("{kind} unavailable: {}", sentence(why)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Tries backends in the order lsm > fentry > tracepoint > kprobe (or only the one asked for)
/// and returns the first that `try_load` brings up, with a sentence saying why, for logs and
/// status.
pub fn select<T, E: StdError + 'static>(
    request: BackendRequest,
    mut try_load: impl FnMut(BackendKind) -> Result<T, E>,
) -> Result<(T, BackendKind, String), SelectError<E>> {
    let forced = match request {
        BackendRequest::Auto => None,
        BackendRequest::Lsm => Some(BackendKind::Lsm),
        BackendRequest::Fentry => Some(BackendKind::Fentry),
        BackendRequest::Tracepoint => Some(BackendKind::Tracepoint),
        BackendRequest::Kprobe => Some(BackendKind::Kprobe),
    };
    if let Some(kind) = forced {
        return match try_load(kind) {
            Ok(t) => Ok((t, kind, format!("--backend {kind} was requested"))),
            Err(source) => Err(SelectError::Forced { kind, source }),
        };
    }
    let mut refused = Vec::new();
    for kind in [
        BackendKind::Lsm,
        BackendKind::Fentry,
        BackendKind::Tracepoint,
        BackendKind::Kprobe,
    ] {
        match try_load(kind) {
            Ok(t) if refused.is_empty() => {
                return Ok((
                    t,
                    kind,
                    format!("{kind} is the best backend and it loads here"),
                ))
            }
            Ok(t) => return Ok((t, kind, format!("{kind} chosen; {}", refusals(&refused)))),
            Err(why) => refused.push((kind, why)),
        }
    }
    Err(SelectError::NoneRuns { refused })
}

/// What the backend choice rests on, logged at start so a node's choice can be explained
/// from its log alone.
pub fn log_kernel_facts() {
    // SAFETY: uname fills the struct it is given.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    let (release, machine) = if unsafe { libc::uname(&mut uts) } == 0 {
        let field = |f: &[libc::c_char]| {
            // SAFETY: uname NUL-terminates each field within its array.
            unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        };
        (field(&uts.release), field(&uts.machine))
    } else {
        ("unknown".into(), "unknown".into())
    };
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm")
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|_| "unreadable (securityfs not mounted)".into());
    tracing::info!(
        kernel = %release,
        arch = %machine,
        btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        active_lsms = %lsm,
        sk_data_ready_tracepoint = tracepoint::available().is_ok(),
        "kernel facts the backend choice rests on"
    );
}

pub struct LoadOptions {
    pub offsets: KernelOffsets,
    pub config: ProbeConfig,
    /// Tracepoint backend only: attach syscall tracepoints for opens.
    pub detect_open: bool,
}

/// The links of the programs that enforce, by program name: held so they can be pinned.
pub type HookLinks = Vec<(&'static str, FdLink)>;

/// The loaded programs and the maps user space works with.
pub struct Backend {
    kind: BackendKind,
    ebpf: Ebpf,
    watched: BpfHashMap<MapData, WatchedKey, u32>,
    /// The kernel's inode prefilter: how many watched entries share each inode number.
    watched_inodes: BpfHashMap<MapData, u64, u32>,
    /// What is armed in the kernel, to keep the prefilter's counts.
    armed: HashSet<WatchedKey>,
    counters: PerCpuArray<MapData, u64>,
    /// Verdicts by cgroup id, and the switch the hooks read (see `crate::enforce`).
    verdicts: BpfHashMap<MapData, u64, u32>,
    enforce_switch: Array<MapData, u32>,
    heartbeat: Array<MapData, u64>,
    /// The enforcing hooks' links until they are pinned.
    hooks: HookLinks,
    /// `fentry` backend: the `fmod_ret` links that carry out its refusals, once armed.
    refusers: Vec<(String, OwnedFd)>,
    pinned: Option<pin::Pinned>,
}

/// Why a node cannot enforce.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("the fmod_ret program that refuses on {function} did not attach")]
    Refuser {
        function: &'static str,
        #[source]
        source: fmod_ret::FmodRetError,
    },
    #[error("this kernel attaches {0}'s hooks without bpf_links, which cannot be pinned (Linux 5.15 or newer)")]
    NotPinnable(BackendKind),
    #[error("pinning the enforcing programs")]
    Pin(#[from] pin::PinError),
    #[error("updating the {map} map")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// The kernel's ring buffers: connects apart from everything else, so a flood of opens or
/// cgroup events cannot crowd them out.
pub struct Rings {
    pub connects: RingBuf<MapData>,
    pub events: RingBuf<MapData>,
}

/// What the kernel counted and user space exports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounts {
    /// Reservation failures on the connect ring.
    pub connect_ring_drops: u64,
    /// Reservation failures on the ring for opens and cgroup events.
    pub event_ring_drops: u64,
    /// ENXIO opens not queued because their cgroup was over its rate.
    pub opens_limited: u64,
    /// Touches refused or stopped under an Enforce verdict.
    pub blocked: u64,
}

impl Backend {
    /// Loads the object and attaches `kind`'s programs. On failure everything attached so far
    /// is detached again (the object is dropped).
    pub fn load(kind: BackendKind, opts: &LoadOptions) -> Result<Self, LoadError> {
        let tracepoint = kind == BackendKind::Tracepoint;
        if tracepoint {
            // Before reading record layouts, so a kernel without it hears why in one clause.
            tracepoint::available()?;
        }
        let needs = tracefs::Needs {
            opens: tracepoint && opts.detect_open,
        };
        let fields = tracefs::record_fields(&tracefs::roots(), needs)?;
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &opts.offsets, true)
            .override_global("CONFIG", &opts.config, true)
            .override_global("FIELDS", &fields, true)
            .load(OBJECT)
            .map_err(|e| LoadError::Object(Box::new(e)))?;
        let mut hooks = HookLinks::new();
        match kind {
            BackendKind::Tracepoint => tracepoint::attach(&mut ebpf, opts.detect_open, &mut hooks)?,
            BackendKind::Lsm => security::attach_lsm(&mut ebpf, &mut hooks)?,
            BackendKind::Fentry => security::attach_fentry(&mut ebpf, &mut hooks)?,
            BackendKind::Kprobe => security::attach_kprobe(&mut ebpf, &mut hooks)?,
        }
        let watched = map_as(&mut ebpf, "WATCHED", BpfHashMap::try_from)?;
        let watched_inodes = map_as(&mut ebpf, "WATCHED_INODES", BpfHashMap::try_from)?;
        let counters = map_as(&mut ebpf, "COUNTERS", PerCpuArray::try_from)?;
        let verdicts = map_as(&mut ebpf, "VERDICTS", BpfHashMap::try_from)?;
        let enforce_switch = map_as(&mut ebpf, "ENFORCE", Array::try_from)?;
        let heartbeat = map_as(&mut ebpf, "HEARTBEAT", Array::try_from)?;
        Ok(Self {
            kind,
            ebpf,
            watched,
            watched_inodes,
            armed: HashSet::new(),
            counters,
            verdicts,
            enforce_switch,
            heartbeat,
            hooks,
            refusers: Vec::new(),
            pinned: None,
        })
    }

    /// How this backend stops a refused caller: `EPERM` (the syscall fails) or `SIGKILL`
    /// (the caller dies before the syscall returns to it).
    pub fn blocks_with(&self) -> &'static str {
        match self.kind {
            BackendKind::Lsm | BackendKind::Fentry => "EPERM",
            BackendKind::Tracepoint | BackendKind::Kprobe => "SIGKILL",
        }
    }

    /// Turns enforcement on: the `fentry` backend's refusing programs attach, and with
    /// `pin_dir` every enforcing link is pinned there (taking over from an earlier probe's
    /// pins) before the switch is set. Verdicts should be written first: from the switch on,
    /// a cgroup without one is refused. Returns why the links are not pinned, where this
    /// kernel cannot hold them as `bpf_link`s (perf-event links before 5.15): the node then
    /// enforces only while a probe runs.
    pub fn arm_enforcement(
        &mut self,
        btf: &Path,
        pin_dir: Option<&Path>,
    ) -> Result<Option<EnforceError>, EnforceError> {
        if self.kind == BackendKind::Fentry && self.refusers.is_empty() {
            let map = self
                .ebpf
                .map("REFUSE_NEXT")
                .and_then(|m| match m {
                    aya::maps::Map::LruHashMap(data) => Some(data),
                    _ => None,
                })
                .ok_or(EnforceError::Map {
                    map: "REFUSE_NEXT",
                    source: aya::maps::MapError::InvalidName {
                        name: "REFUSE_NEXT".into(),
                    },
                })?;
            let mut refusers = Vec::new();
            for (_, function) in security::FENTRY_FUNCTIONS {
                let link = fmod_ret::attach_refuser(btf, function, map.fd().as_fd())
                    .map_err(|source| EnforceError::Refuser { function, source })?;
                refusers.push((
                    format!("fmod_ret_{}", function.trim_start_matches("security_")),
                    link,
                ));
            }
            self.refusers = refusers;
        }
        let mut unpinned = None;
        if let Some(dir) = pin_dir.filter(|_| self.pinned.is_none()) {
            if self.hooks.is_empty() {
                unpinned = Some(EnforceError::NotPinnable(self.kind));
            } else {
                pin::prepare(dir)?;
                let pinned = pin::pin(dir, std::mem::take(&mut self.hooks), &self.refusers)?;
                self.pinned = Some(pinned);
            }
        }
        self.heartbeat()?;
        self.set_switch(1)?;
        if let Some(pinned) = &self.pinned {
            let removed = pinned.take_over();
            if removed > 0 {
                tracing::info!(
                    removed,
                    "took over enforcement from an earlier probe's pinned links"
                );
            }
        }
        Ok(unpinned)
    }

    /// Stops refusing: the switch off at once, then this probe's pins removed (its links stay
    /// attached while it runs, for [`Self::arm_enforcement`] to pin again).
    pub fn disarm_enforcement(&mut self) -> Result<(), EnforceError> {
        self.set_switch(0)?;
        if let Some(pinned) = self.pinned.take() {
            self.hooks = pinned.unpin();
        }
        Ok(())
    }

    /// Tells the kernel this probe is alive and attributing new cgroups (every housekeeping
    /// tick while enforcing): a cgroup without a verdict is refused only while this is fresh.
    pub fn heartbeat(&mut self) -> Result<(), EnforceError> {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-parameter; CLOCK_MONOTONIC is bpf_ktime_get_ns()'s clock.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let ns = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
        self.heartbeat
            .set(0, ns, 0)
            .map_err(|source| EnforceError::Map {
                map: "HEARTBEAT",
                source,
            })
    }

    fn set_switch(&mut self, on: u32) -> Result<(), EnforceError> {
        self.enforce_switch
            .set(0, on, 0)
            .map_err(|source| EnforceError::Map {
                map: "ENFORCE",
                source,
            })
    }

    pub fn set_verdict(&mut self, cgroup_id: u64, verdict: u32) -> Result<(), EnforceError> {
        self.verdicts
            .insert(cgroup_id, verdict, 0)
            .map_err(|source| EnforceError::Map {
                map: "VERDICTS",
                source,
            })
    }

    pub fn remove_verdict(&mut self, cgroup_id: u64) {
        let _ = self.verdicts.remove(&cgroup_id);
    }

    /// Where this probe pinned its links, if it did.
    pub fn pinned_dir(&self) -> Option<PathBuf> {
        self.pinned.as_ref().map(|p| p.dir().to_path_buf())
    }

    /// Takes both ring buffers (once).
    pub fn rings(&mut self) -> Result<Rings, LoadError> {
        Ok(Rings {
            connects: map_as(&mut self.ebpf, "CONNECTS", RingBuf::try_from)?,
            events: map_as(&mut self.ebpf, "EVENTS", RingBuf::try_from)?,
        })
    }

    /// Per attached program: (name, runs, total run time), from the kernel's BPF statistics
    /// (counted only while `kernel.bpf_stats_enabled` is 1).
    pub fn program_stats(&self) -> Vec<(String, u64, std::time::Duration)> {
        self.ebpf
            .programs()
            .filter_map(|(name, prog)| {
                let info = prog.info().ok()?;
                Some((name.to_string(), info.run_count(), info.run_time()))
            })
            .collect()
    }

    /// The kernel's counters, summed over CPUs.
    pub fn kernel_counts(&self) -> KernelCounts {
        let sum = |index: u32| {
            self.counters
                .get(&index, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        KernelCounts {
            connect_ring_drops: sum(COUNTER_CONNECT_RINGBUF_DROPS),
            event_ring_drops: sum(COUNTER_RINGBUF_DROPS),
            opens_limited: sum(COUNTER_OPENS_LIMITED),
            blocked: sum(COUNTER_BLOCKED),
        }
    }
}

fn key(id: &FileId) -> WatchedKey {
    WatchedKey {
        dev: id.kernel_dev,
        ino: id.ino,
    }
}

impl Backend {
    /// How many armed sockets have inode number `ino` (on any device).
    fn sharing_inode(&self, ino: u64) -> u32 {
        self.armed.iter().filter(|k| k.ino == ino).count() as u32
    }
}

impl WatchedSet for Backend {
    fn arm(&mut self, id: &FileId) -> anyhow::Result<()> {
        let key = key(id);
        if !self.armed.insert(key) {
            return Ok(());
        }
        // The prefilter first: an entry it lacks could never match.
        let result = self
            .watched_inodes
            .insert(id.ino, self.sharing_inode(id.ino), 0)
            .context("updating the WATCHED_INODES map")
            .and_then(|()| {
                self.watched
                    .insert(key, 1, 0)
                    .context("updating the WATCHED map")
            });
        if result.is_err() {
            self.armed.remove(&key);
        }
        result
    }

    fn disarm(&mut self, id: &FileId) -> anyhow::Result<()> {
        let key = key(id);
        self.armed.remove(&key);
        match self.watched.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(e).context("updating the WATCHED map"),
        }
        // Another watched socket with the same inode number on another device keeps it.
        let sharing = self.sharing_inode(id.ino);
        let result = if sharing > 0 {
            self.watched_inodes.insert(id.ino, sharing, 0)
        } else {
            match self.watched_inodes.remove(&id.ino) {
                Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                other => other,
            }
        };
        result.context("updating the WATCHED_INODES map")
    }
}

/// Takes map `name` out of the object as the type user space works with.
fn map_as<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<M, aya::maps::MapError>,
) -> Result<M, LoadError> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| LoadError::missing("map", name))?;
    convert(map).map_err(|e| LoadError::mismatch("map", name, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_is_spelled_the_same_on_findings_logs_and_metrics() {
        for (kind, name) in [
            (BackendKind::Lsm, "lsm"),
            (BackendKind::Fentry, "fentry"),
            (BackendKind::Tracepoint, "tracepoint"),
            (BackendKind::Kprobe, "kprobe"),
        ] {
            assert_eq!(kind.as_str(), name);
            assert_eq!(kind.to_string(), name);
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
    }

    fn only(
        ok: &'static [BackendKind],
    ) -> impl FnMut(BackendKind) -> Result<BackendKind, std::io::Error> {
        move |k| {
            if ok.contains(&k) {
                Ok(k)
            } else {
                Err(std::io::Error::other(format!("{k} refused")))
            }
        }
    }

    #[test]
    fn auto_prefers_lsm_then_fentry_then_tracepoint_then_kprobe_and_says_why() {
        use BackendKind::*;
        let table: &[(&'static [BackendKind], Option<BackendKind>)] = &[
            (&[Lsm, Fentry, Tracepoint, Kprobe], Some(Lsm)),
            (&[Fentry, Tracepoint, Kprobe], Some(Fentry)),
            (&[Tracepoint, Kprobe], Some(Tracepoint)),
            (&[Kprobe], Some(Kprobe)),
            (&[Lsm], Some(Lsm)),
            (&[Fentry], Some(Fentry)),
            (&[], None),
        ];
        for (ok, want) in table {
            let got = select(BackendRequest::Auto, only(ok));
            assert_eq!(
                got.as_ref().ok().map(|(_, k, _)| *k),
                *want,
                "available {ok:?}"
            );
            if let Ok((loaded, kind, _)) = got {
                assert_eq!(loaded, kind, "the loaded backend is the one reported");
            }
        }
        let (_, _, why) = select(BackendRequest::Auto, only(&[Tracepoint])).unwrap();
        assert_eq!(
            why,
            "tracepoint chosen; lsm unavailable: lsm refused; fentry unavailable: fentry refused"
        );
        let (_, _, why) = select(BackendRequest::Auto, only(&[Lsm, Tracepoint])).unwrap();
        assert_eq!(why, "lsm is the best backend and it loads here");
        let err = select(BackendRequest::Auto, only(&[])).unwrap_err();
        assert!(
            matches!(&err, SelectError::NoneRuns { refused } if refused.len() == 4),
            "{err:?}"
        );
        assert_eq!(
            sentence(&err),
            "no backend can run on this node: lsm unavailable: lsm refused; \
             fentry unavailable: fentry refused; tracepoint unavailable: tracepoint refused; \
             kprobe unavailable: kprobe refused"
        );
        let (_, _, why) = select(BackendRequest::Auto, only(&[Kprobe])).unwrap();
        assert!(why.starts_with("kprobe chosen; lsm unavailable"), "{why}");
    }

    #[test]
    fn a_forced_backend_is_the_only_one_tried_and_fails_clearly() {
        let mut tried = Vec::new();
        let err = select(BackendRequest::Lsm, |k| {
            tried.push(k);
            Err::<(), _>(std::io::Error::from_raw_os_error(libc::EPERM))
        })
        .unwrap_err();
        assert_eq!(tried, [BackendKind::Lsm]);
        let SelectError::Forced { kind, source } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (*kind, source.raw_os_error()),
            (BackendKind::Lsm, Some(libc::EPERM))
        );
        assert_eq!(
            sentence(&err),
            "--backend lsm cannot run on this node: Operation not permitted (os error 1)"
        );
        let (_, kind, _) =
            select(BackendRequest::Tracepoint, only(&[BackendKind::Tracepoint])).unwrap();
        assert_eq!(kind, BackendKind::Tracepoint);
        let (_, kind, _) = select(BackendRequest::Kprobe, only(&[BackendKind::Kprobe])).unwrap();
        assert_eq!(kind, BackendKind::Kprobe);
    }
}
