//! Pinned links: what keeps a node enforcing while no probe runs (a restart, a crash, an
//! upgrade). Pinned on a BPF file system, a link stays attached after the probe's descriptors
//! close; its programs keep their maps, so the last verdicts stay in force. Each probe pins
//! under its own generation (`<dir>/<generation>-<program>`; bpffs refuses
//! names with a dot) and, once its own programs are
//! attached and pinned, removes the older generations, whose links then detach: there is no
//! moment without an enforcing program. Uninstalling removes them all.
use std::{
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::programs::links::{FdLink, PinnedLink};

use super::fmod_ret;

/// Where the links are pinned unless told otherwise.
pub const DEFAULT_DIR: &str = "/sys/fs/bpf/sockwarden";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{0} is not on a BPF file system (mount -t bpf bpf /sys/fs/bpf)")]
    NotBpffs(PathBuf),
    #[error("creating {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning {program} at {path}")]
    Pin {
        program: String,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The links this probe pinned (closing the descriptors keeps them attached).
pub struct Pinned {
    generation: String,
    dir: PathBuf,
    links: Vec<(&'static str, PinnedLink)>,
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-parameter; c_path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c_path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Makes `dir` on a BPF file system, mounting one on its parent when the parent is an empty
/// `/sys/fs/bpf` without one (as on hosts whose init does not mount it).
pub fn prepare(dir: &Path) -> Result<(), PinError> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    if !is_bpffs(parent) && parent == Path::new("/sys/fs/bpf") {
        let target = c"/sys/fs/bpf";
        // SAFETY: constant NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "mounting bpffs on /sys/fs/bpf failed");
        }
    }
    if !is_bpffs(parent) {
        return Err(PinError::NotBpffs(parent.to_path_buf()));
    }
    std::fs::create_dir_all(dir).map_err(|source| PinError::Dir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Pins `hooks` (aya links, consumed) and `refusers` (our own fmod_ret links) under a new
/// generation in `dir` ([`prepare`]d).
pub fn pin(
    dir: &Path,
    hooks: Vec<(&'static str, FdLink)>,
    refusers: &[(String, OwnedFd)],
) -> Result<Pinned, PinError> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let generation = format!("g{}_{}", std::process::id(), since_epoch.as_nanos());
    let path_of = |program: &str| dir.join(format!("{generation}-{program}"));
    let mut links = Vec::with_capacity(hooks.len());
    for (program, link) in hooks {
        let path = path_of(program);
        let pinned = link.pin(&path).map_err(|e| PinError::Pin {
            program: program.to_string(),
            path,
            source: Box::new(e),
        })?;
        links.push((program, pinned));
    }
    for (program, fd) in refusers {
        let path = path_of(program);
        fmod_ret::pin(fd.as_fd(), &path).map_err(|e| PinError::Pin {
            program: program.clone(),
            path,
            source: Box::new(e),
        })?;
    }
    Ok(Pinned {
        generation,
        dir: dir.to_path_buf(),
        links,
    })
}

impl Pinned {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes this probe's pins (the refusers' too) and gives the links back, still attached
    /// through their descriptors: the node then enforces only while this probe runs. The
    /// directory goes when nothing else is pinned in it.
    pub fn unpin(self) -> Vec<(&'static str, FdLink)> {
        let links = self
            .links
            .into_iter()
            .filter_map(|(program, link)| match link.unpin() {
                Ok(fd) => Some((program, fd)),
                Err(e) => {
                    tracing::warn!(program, error = %e, "could not unpin a link");
                    None
                }
            })
            .collect();
        remove_where(&self.dir, |name| {
            name.starts_with(&format!("{}-", self.generation))
        });
        let _ = std::fs::remove_dir(&self.dir);
        links
    }

    /// Removes every other generation's pins (an earlier probe's): their links detach now
    /// that this probe's programs enforce. Returns how many were removed.
    pub fn take_over(&self) -> usize {
        remove_where(&self.dir, |name| {
            !name.starts_with(&format!("{}-", self.generation))
        })
    }
}

/// Removes every pinned link in `dir` and the directory: uninstall. Returns how many.
/// "Uninstalled" must mean "not enforcing" when this returns, but a link whose last reference
/// was its pin detaches asynchronously (after RCU grace periods: an LSM link on 6.12 under
/// emulation still refused for up to 3 s). So the programs' enforcement switch is turned off
/// first, which takes effect at once, and then this waits for the programs to be released.
pub fn remove_all(dir: &Path) -> std::io::Result<usize> {
    if !dir.exists() {
        return Ok(0);
    }
    let programs = linked_programs(dir);
    switch_off(&programs);
    let removed = remove_where(dir, |_| true);
    std::fs::remove_dir(dir)?;
    wait_unloaded(&programs);
    Ok(removed)
}

/// The ids of the programs the links pinned in `dir` attach.
fn linked_programs(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| PinnedLink::from_pin(e.path()).ok())
        .filter_map(|pinned| FdLink::from(pinned).info().ok().map(|i| i.program_id()))
        .collect()
}

/// The maps named `name` that `programs` use.
fn maps_named(programs: &[u32], name: &str) -> Vec<aya::maps::MapData> {
    let ids: std::collections::HashSet<u32> = aya::programs::loaded_programs()
        .flatten()
        .filter(|p| programs.contains(&p.id()))
        .filter_map(|p| p.map_ids().ok().flatten())
        .flatten()
        .collect();
    ids.into_iter()
        .filter(|id| aya::maps::MapInfo::from_id(*id).is_ok_and(|m| m.name_as_str() == Some(name)))
        .filter_map(|id| aya::maps::MapData::from_id(id).ok())
        .collect()
}

/// Lets cgroup `id` (a new probe's own) through the programs an earlier probe left pinned in
/// `dir`, before it touches a runtime socket itself (the CRI socket): its container is new,
/// so those programs have no verdict for it and would refuse it — a probe that could never
/// start again. Returns how many programs' verdict maps took it.
pub fn allow_in_pinned(dir: &Path, id: u64) -> usize {
    if !dir.exists() {
        return 0;
    }
    let programs = linked_programs(dir);
    let mut allowed = 0;
    for data in maps_named(&programs, "VERDICTS") {
        let set = aya::maps::HashMap::<_, u64, u32>::try_from(aya::maps::Map::HashMap(data))
            .and_then(|mut verdicts| verdicts.insert(id, probe_common::verdict::ALLOW_EXACT, 0));
        match set {
            Ok(()) => allowed += 1,
            Err(e) => {
                tracing::warn!(error = %e, "could not let this probe through an earlier probe's pinned programs")
            }
        }
    }
    allowed
}

/// Sets to 0 the `ENFORCE` switch in the maps `programs` use: they stop refusing at once.
fn switch_off(programs: &[u32]) {
    let mut switched = 0;
    for data in maps_named(programs, "ENFORCE") {
        let set = aya::maps::Array::<_, u32>::try_from(aya::maps::Map::Array(data))
            .and_then(|mut switch| switch.set(0, 0, 0));
        match set {
            Ok(()) => switched += 1,
            Err(e) => {
                tracing::warn!(error = %e, "could not turn a pinned program's enforcement off")
            }
        }
    }
    if switched == 0 && !programs.is_empty() {
        tracing::warn!(
            ?programs,
            "no enforcement switch found for the pinned programs"
        );
    }
}

/// Waits (10 s at most) until none of `programs` is loaded: a link releases its program only
/// after detaching it. (A link's own id is no proof: it stops resolving as soon as its count
/// drops, before it detaches.)
fn wait_unloaded(programs: &[u32]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let still = aya::programs::loaded_programs()
            .flatten()
            .any(|p| programs.contains(&p.id()));
        if !still {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    tracing::warn!(
        ?programs,
        "programs still loaded 10 s after their pins were removed"
    );
}

fn remove_where(dir: &Path, pick: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if pick(&name) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}
