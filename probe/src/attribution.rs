//! Maps a task's cgroup v2 id to its cgroup path, and so to a container.
//!
//! Filled from `cgroup_mkdir` events as cgroups appear (so a container that attacked and
//! vanished before we looked is still attributed), from a walk of the cgroup v2 tree at
//! start-up and on a miss, and last from `/proc/<pid>/cgroup` while the process lives.
use std::{
    collections::{HashMap, VecDeque},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::cgroup::unified_path_from_proc;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// Bound on remembered cgroups; the oldest are forgotten first.
const MAX_ENTRIES: usize = 65_536;
/// Bound on directories one tree walk visits.
const MAX_WALK: usize = 200_000;

pub struct CgroupIndex {
    /// Where the cgroup v2 hierarchy is mounted (None: this host has none).
    mount: Option<PathBuf>,
    proc_root: PathBuf,
    paths: HashMap<u64, String>,
    order: VecDeque<u64>,
    /// When the tree was last walked: a miss walks it at most once per `WALK_INTERVAL`, so a
    /// flood of events from a cgroup that is gone does not walk the tree for each event.
    last_walk: Option<Instant>,
}

const WALK_INTERVAL: Duration = Duration::from_secs(1);

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-parameter; c_path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe {
        libc::statfs(c_path.as_ptr(), &mut st) == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
    }
}

/// The cgroup v2 mount under `host_root`: `/sys/fs/cgroup` (unified) or
/// `/sys/fs/cgroup/unified` (hybrid, as with Docker's cgroupfs driver on v1).
pub fn find_cgroup2_mount(host_root: &Path) -> Option<PathBuf> {
    ["sys/fs/cgroup", "sys/fs/cgroup/unified"]
        .iter()
        .map(|p| host_root.join(p))
        .find(|p| is_cgroup2(p))
}

impl CgroupIndex {
    pub fn new(host_root: &Path) -> Self {
        Self {
            mount: find_cgroup2_mount(host_root),
            proc_root: host_root.join("proc"),
            paths: HashMap::new(),
            order: VecDeque::new(),
            last_walk: None,
        }
    }

    pub fn mount(&self) -> Option<&Path> {
        self.mount.as_deref()
    }

    pub fn record(&mut self, id: u64, path: String) {
        if self.paths.insert(id, path).is_none() {
            self.order.push_back(id);
            while self.order.len() > MAX_ENTRIES {
                if let Some(old) = self.order.pop_front() {
                    self.paths.remove(&old);
                }
            }
        }
    }

    /// Records every cgroup in the v2 tree.
    pub fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        let Some(mount) = self.mount.clone() else {
            return;
        };
        for (id, path) in walk_tree(&mount) {
            self.record(id, path);
        }
    }

    /// The cgroup path of cgroup `id`, to which process `pid` belonged at the event.
    pub fn path_of(&mut self, id: u64, pid: u32) -> Option<String> {
        if let Some(path) = self.paths.get(&id) {
            return Some(path.clone());
        }
        if self.last_walk.is_none_or(|t| t.elapsed() >= WALK_INTERVAL) {
            self.walk();
            if let Some(path) = self.paths.get(&id) {
                return Some(path.clone());
            }
        }
        let content =
            std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup")).ok()?;
        unified_path_from_proc(&content).map(str::to_string)
    }
}

/// Every cgroup under a cgroup v2 `mount`, as (id, path from the root): a cgroup's id is its
/// directory's inode number. Bounded by [`MAX_WALK`] directories.
pub fn walk_tree(mount: &Path) -> Vec<(u64, String)> {
    let mut found = Vec::new();
    let mut stack = vec![mount.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if found.len() >= MAX_WALK {
            tracing::warn!(
                visited = found.len(),
                "cgroup tree walk stopped at its bound"
            );
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        let rel = dir
            .strip_prefix(mount)
            .map(|p| format!("/{}", p.display()))
            .unwrap_or_default();
        let rel = if rel == "/" {
            rel
        } else {
            rel.trim_end_matches('/').to_string()
        };
        found.push((meta.ino(), rel));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(entry.path());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkdir_records_win_and_the_index_stays_bounded() {
        let mut index = CgroupIndex::new(Path::new("/nonexistent-root"));
        index.record(5, "/docker/abc".into());
        assert_eq!(index.path_of(5, 0), Some("/docker/abc".into()));
        for id in 0..(MAX_ENTRIES as u64 + 10) {
            index.record(1_000_000 + id, format!("/c{id}"));
        }
        assert!(index.paths.len() <= MAX_ENTRIES);
        assert_eq!(
            index.path_of(5, 0),
            None,
            "oldest entries are forgotten first"
        );
    }

    #[test]
    fn misses_walk_the_tree_at_most_once_per_interval() {
        let mut index = CgroupIndex::new(Path::new("/"));
        assert_eq!(index.path_of(u64::MAX, u32::MAX - 1), None);
        let first = index.last_walk.expect("a miss walks the tree");
        assert_eq!(index.path_of(u64::MAX - 1, u32::MAX - 1), None);
        assert_eq!(
            index.last_walk,
            Some(first),
            "a second miss right after does not walk again"
        );
    }

    #[test]
    fn walk_of_the_real_cgroup2_tree_finds_our_own_cgroup() {
        let mut index = CgroupIndex::new(Path::new("/"));
        let Some(mount) = index.mount().map(Path::to_path_buf) else {
            eprintln!("skipping: no cgroup v2 hierarchy mounted here");
            return;
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = unified_path_from_proc(&own).unwrap().to_string();
        let id = std::fs::metadata(mount.join(own.trim_start_matches('/')))
            .unwrap()
            .ino();
        index.walk();
        assert_eq!(index.paths.get(&id), Some(&own));
    }
}
