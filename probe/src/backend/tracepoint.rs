//! The `tracepoint` backend: loads on kernels without BPF LSM or trampolines.
//!
//! - connect: `sock:sk_data_ready` on the *listening* socket, which `unix_stream_connect`
//!   wakes in the connecting task's context. The listener is identified by its bound inode,
//!   so aliases are caught exactly at connect time, while the caller is alive. It is not a
//!   syscall tracepoint, so unrelated syscalls pay nothing.
//! - open (opt-in `--detect-open`): `sys_enter/exit_open{,at,at2}`. Syscall tracepoints put
//!   every syscall on the tracing slow path, hence opt-in (cost in the README).
//! - attribution: `cgroup:cgroup_mkdir`.
use std::path::Path;

use anyhow::{anyhow, Context as _};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use probe_common::{KernelOffsets, ProbeConfig, WatchedSocket, COUNTER_RINGBUF_DROPS};

use crate::{rootfs::FileId, sockets::WatchedSet};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockwarden"));

const TRACEFS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

fn tracepoint_exists(category: &str, name: &str) -> bool {
    TRACEFS.iter().any(|root| {
        Path::new(root)
            .join("events")
            .join(category)
            .join(name)
            .exists()
    })
}

/// The backend needs the `sock:sk_data_ready` tracepoint (Linux 6.6+).
pub fn available() -> Result<(), String> {
    if !TRACEFS
        .iter()
        .any(|root| Path::new(root).join("events").exists())
    {
        return Err("tracefs is not mounted (mount -t tracefs none /sys/kernel/tracing)".into());
    }
    if !tracepoint_exists("sock", "sk_data_ready") {
        return Err(
            "the kernel has no sock:sk_data_ready tracepoint (needs Linux 6.6 or newer)".into(),
        );
    }
    Ok(())
}

pub struct LoadOptions {
    pub offsets: KernelOffsets,
    pub config: ProbeConfig,
    pub detect_open: bool,
}

pub struct TracepointBackend {
    ebpf: Ebpf,
    watched: BpfHashMap<MapData, u64, WatchedSocket>,
    counters: PerCpuArray<MapData, u64>,
}

impl TracepointBackend {
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &opts.offsets, true)
            .override_global("CONFIG", &opts.config, true)
            .load(OBJECT)
            .map_err(|e| anyhow!("loading the eBPF object failed: {e}"))?;
        attach(&mut ebpf, "sk_data_ready", "sock", "sk_data_ready")?;
        attach(&mut ebpf, "cgroup_mkdir", "cgroup", "cgroup_mkdir")?;
        if opts.detect_open {
            for (prog, name) in [
                ("enter_openat", "sys_enter_openat"),
                ("exit_openat", "sys_exit_openat"),
                ("enter_openat2", "sys_enter_openat2"),
                ("exit_openat2", "sys_exit_openat2"),
                ("enter_open", "sys_enter_open"),
                ("exit_open", "sys_exit_open"),
            ] {
                if tracepoint_exists("syscalls", name) {
                    attach(&mut ebpf, prog, "syscalls", name)?;
                } else {
                    tracing::debug!(tracepoint = name, "not on this architecture; skipped");
                }
            }
        }
        let watched = BpfHashMap::try_from(take(&mut ebpf, "WATCHED")?)?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?)?;
        Ok(Self {
            ebpf,
            watched,
            counters,
        })
    }

    pub fn ring_buffer(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        Ok(RingBuf::try_from(take(&mut self.ebpf, "EVENTS")?)?)
    }

    /// Events the kernel could not queue because the ring buffer was full (all CPUs).
    pub fn ringbuf_drops(&self) -> u64 {
        self.counters
            .get(&COUNTER_RINGBUF_DROPS, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

impl WatchedSet for TracepointBackend {
    fn arm(&mut self, id: &FileId) -> anyhow::Result<()> {
        self.watched
            .insert(id.ino, WatchedSocket { dev: id.kernel_dev }, 0)
            .context("updating the WATCHED map")
    }

    fn disarm(&mut self, id: &FileId) -> anyhow::Result<()> {
        match self.watched.remove(&id.ino) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).context("updating the WATCHED map"),
        }
    }
}

fn take(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("the eBPF object has no map {name}"))
}

fn attach(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> anyhow::Result<()> {
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("the eBPF object has no program {program}"))?
        .try_into()?;
    prog.load()
        .map_err(|e| anyhow!("the kernel refused program {program}: {e}"))?;
    prog.attach(category, name)
        .map_err(|e| anyhow!("attaching {program} to tracepoint {category}:{name} failed: {e}"))?;
    Ok(())
}
