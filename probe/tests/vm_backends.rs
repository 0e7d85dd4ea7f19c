//! Every backend on the kernels users run: Debian's cloud kernels 5.10 (bullseye), 6.1
//! (bookworm) and 6.12 (trixie), for amd64 and for arm64, downloaded once
//! (`tests/vm/fetch-kernel.sh`) and booted under qemu (TCG; arm64 emulated on this x86-64
//! machine) with an initramfs holding busybox, the probe and the static test client, all
//! built for the guest's architecture. Each kernel boots twice, with `bpf` in its own `lsm=`
//! list and without it; in each cell (`tests/vm/matrix.sh`) every backend is forced in turn
//! and either runs every scenario or says why it cannot, auto picks the best and sees, and
//! each hook's cost is read from the kernel's BPF statistics. Results come back on the serial console.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

fn sh(script: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(script).output().unwrap()
}

fn ok(script: &str) -> String {
    let out = sh(script);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where downloaded kernels are kept between runs: outside the clone, so a fresh clone on
/// the same machine (CI) does not download them again.
fn cache_dir() -> PathBuf {
    std::env::var_os("SOCKWARDEN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/sockwarden"))
        .join("vm")
}

/// A guest architecture: how qemu runs it and what its initramfs is built from.
#[derive(Clone, Copy, PartialEq)]
enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Debian's name for it.
    fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    fn qemu(self) -> &'static str {
        match self {
            Arch::Amd64 => "qemu-system-x86_64",
            Arch::Arm64 => "qemu-system-aarch64",
        }
    }

    /// The machine and CPU. arm64: qemu's `virt` board (PSCI powers it off, a PL011 UART
    /// is its console); a Cortex-A72 rather than `max`, whose pointer authentication makes
    /// TCG several times slower and which no code here needs.
    fn machine(self) -> &'static [&'static str] {
        match self {
            Arch::Amd64 => &["-accel", "tcg", "-cpu", "max"],
            Arch::Arm64 => &["-machine", "virt", "-accel", "tcg", "-cpu", "cortex-a72"],
        }
    }

    fn console(self) -> &'static str {
        match self {
            Arch::Amd64 => "console=ttyS0",
            Arch::Arm64 => "console=ttyAMA0",
        }
    }

    /// The C compiler and strip for the guest's binaries.
    fn gcc(self) -> &'static str {
        match self {
            Arch::Amd64 => "gcc",
            Arch::Arm64 => "aarch64-linux-gnu-gcc",
        }
    }

    fn strip(self) -> &'static str {
        match self {
            Arch::Amd64 => "strip",
            Arch::Arm64 => "aarch64-linux-gnu-strip",
        }
    }

    /// The probe the guest runs. amd64: this test's own build. arm64: the static release
    /// binary `scripts/build-static.sh` cross-builds, from the same sources, eBPF included.
    fn probe(self) -> PathBuf {
        match self {
            Arch::Amd64 => PathBuf::from(env!("CARGO_BIN_EXE_sockwarden-probe")),
            Arch::Arm64 => Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("../aarch64-unknown-linux-musl/release/sockwarden-probe"),
        }
    }
}

/// A Debian cloud kernel, downloaded once: its vmlinuz, its build configuration, and the
/// same release's static busybox for its architecture.
struct Kernel {
    arch: Arch,
    vmlinuz: PathBuf,
    config: String,
    busybox: PathBuf,
}

impl Kernel {
    fn debian(suite: &str, arch: Arch) -> Kernel {
        let dir = cache_dir().join(format!("{suite}-{}", arch.debian()));
        let find = |prefix: &str| {
            std::fs::read_dir(dir.join("x/boot"))
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
        };
        let busybox = dir.join("x/bin/busybox");
        if find("vmlinuz-").is_none() || !busybox.exists() {
            ok(&format!(
                "sh {}/tests/vm/fetch-kernel.sh {suite} {} {}",
                env!("CARGO_MANIFEST_DIR"),
                arch.debian(),
                dir.display()
            ));
        }
        let vmlinuz = find("vmlinuz-").expect("vmlinuz in the Debian package");
        let config =
            std::fs::read_to_string(find("config-").expect("config in the package")).unwrap();
        Kernel {
            arch,
            vmlinuz,
            config,
            busybox,
        }
    }

    /// The LSMs this kernel enables when `lsm=` is not given (`CONFIG_LSM`).
    fn default_lsms(&self) -> Vec<String> {
        self.config
            .lines()
            .find_map(|l| l.strip_prefix("CONFIG_LSM=\""))
            .map(|v| {
                v.trim_end_matches('"')
                    .split(',')
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `lsm=` for this kernel's own list, with `bpf` in it or taken out of it.
    fn lsm_param(&self, bpf: bool) -> String {
        let mut lsms: Vec<String> = self
            .default_lsms()
            .into_iter()
            .filter(|l| l != "bpf")
            .collect();
        if bpf {
            lsms.push("bpf".into());
        }
        format!("lsm={}", lsms.join(","))
    }
}

/// The initramfs for `kernel`'s architecture: busybox (the host's own on amd64, the
/// kernel's Debian release's on arm64), the probe, the test client and the VM scripts.
fn initramfs(dir: &Path, kernel: &Kernel) -> PathBuf {
    let arch = kernel.arch;
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for d in [
        "bin",
        "sbin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "lib64",
        "lib/x86_64-linux-gnu",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let r = root.display();
    let busybox = match arch {
        Arch::Amd64 => PathBuf::from("/bin/busybox"),
        Arch::Arm64 => kernel.busybox.clone(),
    };
    // the applet links are made in the guest (`init`), by the guest's own busybox
    ok(&format!(
        "cp {} {r}/bin/busybox && ln -s busybox {r}/bin/sh",
        busybox.display()
    ));
    ok(&format!(
        "{} -o {r}/bin/sockwarden-probe {}",
        arch.strip(),
        arch.probe().display()
    ));
    ok(&format!(
        "{} -static -O2 -o {r}/bin/swclient {}/tests/client/swclient.c",
        arch.gcc(),
        env!("CARGO_MANIFEST_DIR")
    ));
    // the probe's shared libraries, where the dynamic loader looks for them (amd64's probe
    // is this test's own, dynamically linked, build; arm64's is static)
    if arch == Arch::Amd64 {
        ok(&format!(
        "ldd {r}/bin/sockwarden-probe | awk '/=> \\//{{print $3}} /^\\t\\/lib64/{{print $1}}' | while read lib; do mkdir -p {r}$(dirname $lib) && cp -L $lib {r}$lib; done"
        ));
    }
    let vm = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm");
    for file in ["init", "lib.sh", "matrix.sh", "fallback.sh"] {
        std::fs::copy(vm.join(file), root.join(file)).unwrap();
    }
    ok(&format!("chmod +x {r}/init"));
    let image = dir.join("initramfs.gz");
    ok(&format!(
        "cd {r} && find . | cpio -o -H newc --quiet | gzip -1 > {}",
        image.display()
    ));
    image
}

/// Root, the tools and (arm64) the cross-built probe; false when any is missing (skipped
/// with the reason; CI must not skip).
fn vm_ready(arch: Arch) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut missing: Vec<String> = [
        arch.qemu(),
        "cpio",
        arch.strip(),
        arch.gcc(),
        "busybox",
        "apt-get",
    ]
    .into_iter()
    .filter(|b| common::which(b).is_none())
    .map(String::from)
    .collect();
    if !arch.probe().exists() {
        missing.push(format!(
            "{} (scripts/build-static.sh builds it)",
            arch.probe().display()
        ));
    }
    if !missing.is_empty() || unsafe { libc::geteuid() } != 0 {
        let why = format!("needs root and {missing:?} (run scripts/setup.sh)");
        assert!(!ci, "CI must run the VM test, but it {why}");
        eprintln!("SKIPPED: {why}");
        return false;
    }
    true
}

/// Boots `kernel` with `append` (after its console) on the command line, one VM at a time
/// ([`VM`]); its serial console.
fn boot(kernel: &Kernel, image: &Path, append: &str) -> String {
    let _one_vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let started = std::time::Instant::now();
    let append = format!("{} {append}", kernel.arch.console());
    let out = Command::new("timeout")
        .arg("1500")
        .arg(kernel.arch.qemu())
        .args(kernel.arch.machine())
        .args(["-m", "2048", "-smp", "2", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(image)
        .args(["-append", &append])
        .output()
        .unwrap();
    println!(
        "VM ({append}) ran for {:.0?}",
        started.elapsed().max(Duration::from_millis(1))
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The guest kernel's own crash report (its first `Oops` or `Kernel panic` line and the
/// instruction pointer), if the console holds one.
fn guest_crash(console: &str) -> Option<String> {
    let lines: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("Oops") || l.contains("Kernel panic") || l.contains("RIP: 0010"))
        .take(3)
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Each expected `SWTEST` line is on the console.
fn assert_all(console: &str, expected: &[String]) {
    let failures: Vec<&String> = expected
        .iter()
        .filter(|e| !console.lines().any(|l| l.trim() == e.as_str()))
        .collect();
    assert!(
        failures.is_empty(),
        "missing or failed: {failures:?}\n{}",
        console
            .lines()
            .filter(|l| l.starts_with("SW"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn debian_vm_6_1_with_bpf_lsm_built_but_inactive_auto_falls_back_and_still_reports() {
    if !vm_ready(Arch::Amd64) {
        return;
    }
    let kernel = Kernel::debian("bookworm", Arch::Amd64);
    let work = tempfile::tempdir().unwrap();
    let image = initramfs(work.path(), &kernel);
    let console = boot(
        &kernel,
        &image,
        "lsm=lockdown,capability sw_mode=fallback panic=-1 quiet",
    );
    for line in console.lines().filter(|l| l.contains("SW")) {
        println!("{line}");
    }
    assert!(
        console.contains("SWDONE"),
        "the VM did not finish:\n{console}"
    );
    assert!(
        console.contains("lsm=securityfs-absent"),
        "securityfs must be out of the probe's view"
    );
    assert_all(
        &console,
        &[
            "SWTEST auto not-lsm PASS".into(),
            "SWTEST auto finding PASS".into(),
            "SWTEST auto ready PASS".into(),
            "SWTEST lsm-forced not-ready PASS".into(),
        ],
    );
}

/// One VM at a time: each boots with two virtual CPUs on a two-core machine, and the
/// scenarios' deadlines assume it is not sharing them with another VM.
static VM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Every backend, best first (the order auto tries them).
const BACKENDS: [&str; 4] = ["lsm", "fentry", "tracepoint", "kprobe"];

const SCENARIOS: &[&str] = &[
    "direct-path",
    "bind-mount-alias",
    "symlink",
    "host-namespaces-connect",
    "host-namespaces-open",
    "open-write-intent",
    "proc-root-alias",
    "decoy",
    "host-process",
];

/// Enforcement, checked for every backend that runs (`lib.sh` `run_enforce`); `enforce-open`
/// only where the open hook can refuse (not `tracepoint`).
const ENFORCE_SCENARIOS: &[&str] = &[
    "enforce-starts",
    "enforce-direct",
    "enforce-bind-mount",
    "enforce-symlink",
    "enforce-new-container",
    "enforce-open",
    "enforce-host-spared",
    "enforce-after-probe-killed",
    "enforce-uninstall",
];

/// The enforcement results `backend` must show on a kernel `version`: every scenario passes,
/// except that a kprobe backend on a kernel without perf-event `bpf_link`s (before 5.15)
/// cannot pin, and says so.
fn enforce_expected(backend: &str, version: (u32, u32)) -> Vec<(&'static str, &'static str)> {
    ENFORCE_SCENARIOS
        .iter()
        .filter(|name| !(backend == "tracepoint" && **name == "enforce-open"))
        .map(|name| {
            let unpinnable = backend == "kprobe" && version < (5, 15);
            if unpinnable && *name == "enforce-after-probe-killed" {
                (*name, "NOTPINNED")
            } else {
                (*name, "PASS")
            }
        })
        .collect()
}

/// What one cell of the matrix must show: the backends that load and see every scenario,
/// those refused (with words their one-sentence refusal must hold), and what auto picks.
struct Expect {
    runs: Vec<&'static str>,
    refused: Vec<(&'static str, &'static str)>,
    auto: &'static str,
}

fn expect(arch: Arch, version: (u32, u32), bpf_lsm: bool) -> Expect {
    // BPF trampolines (fentry, and the BPF LSM's programs) attach to kernel functions on
    // arm64 from 6.4 (ftrace direct calls); before, they load and the attach is refused.
    let trampolines = arch == Arch::Amd64 || version >= (6, 4);
    let no_trampoline = "cannot attach BPF trampolines to kernel functions";
    let mut runs = Vec::new();
    let mut refused = Vec::new();
    if !bpf_lsm {
        refused.push(("lsm", "the BPF LSM is not active"));
    } else if trampolines {
        runs.push("lsm");
    } else {
        refused.push(("lsm", no_trampoline));
    }
    if trampolines {
        runs.push("fentry");
    } else {
        refused.push(("fentry", no_trampoline));
    }
    // sock:sk_data_ready came with Linux 6.6.
    if version >= (6, 6) {
        runs.push("tracepoint");
    } else {
        refused.push((
            "tracepoint",
            "sk_data_ready tracepoint (needs Linux 6.6 or newer)",
        ));
    }
    // Debian's cloud kernels all have kprobes (CONFIG_KPROBES, CONFIG_KPROBE_EVENTS).
    runs.push("kprobe");
    Expect {
        auto: runs[0],
        runs,
        refused,
    }
}

/// What follows `SWSTATS <backend> ` on each console line that has it.
fn swstats<'a>(console: &'a str, backend: &'a str) -> impl Iterator<Item = &'a str> {
    console.lines().filter_map(move |l| {
        l.split("SWSTATS ")
            .nth(1)?
            .strip_prefix(backend)?
            .strip_prefix(' ')
    })
}

/// The value of `series` (`SWSTATS <backend> <series> <value>`).
fn stat(console: &str, backend: &str, series: &str) -> Option<f64> {
    swstats(console, backend).find_map(|rest| {
        let (name, value) = rest.rsplit_once(' ')?;
        (name == series)
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// `key=value` from the `SWSTATS <backend> open_ns=.. connect_ns=..` line.
fn base(console: &str, backend: &str, key: &str) -> Option<f64> {
    swstats(console, backend).find_map(|rest| {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))?
            .parse()
            .ok()
    })
}

/// Nanoseconds per run of `program`, from the kernel's BPF statistics.
fn per_run(console: &str, backend: &str, program: &str) -> Option<f64> {
    let runs = stat(
        console,
        backend,
        &format!("sockwarden_probe_program_runs{{program=\"{program}\"}}"),
    )?;
    let secs = stat(
        console,
        backend,
        &format!("sockwarden_probe_program_run_seconds{{program=\"{program}\"}}"),
    )?;
    (runs > 0.0).then(|| secs * 1e9 / runs)
}

/// Median ratio of unrelated syscalls with the probe to without, from the SWBENCH rounds.
fn bench_ratio(console: &str, backend: &str, what: &str) -> f64 {
    let mut ratios: Vec<f64> = console
        .lines()
        .filter(|l| l.starts_with(&format!("SWBENCH {backend} ")))
        .map(|line| {
            let field = |k: &str| -> f64 {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            };
            field(&format!("{what}_probe")) / field(&format!("{what}_base"))
        })
        .collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The programs whose per-run cost is reported: (open hook, connect hook).
fn hook_programs(backend: &str) -> (&'static str, &'static str) {
    match backend {
        "lsm" => ("lsm_file_open", "lsm_unix_stream_connect"),
        "fentry" => ("fentry_file_open", "fentry_unix_stream_connect"),
        "kprobe" => ("kprobe_file_open", "kprobe_unix_stream_connect"),
        _ => ("enter_openat", "sk_data_ready"),
    }
}

/// Boots Debian `suite`'s cloud kernel twice, with `bpf` in its `lsm=` list and without, and
/// checks every cell: each backend that should load runs every scenario, each that should
/// not says why, auto picks the best and sees, and what each hook costs is reported. The boot
/// without `bpf` forces only `lsm` (refused, and why) and auto: the other backends do not
/// depend on `lsm=`, and forcing them twice per kernel doubled the matrix's time for nothing.
fn kernel_matrix(arch: Arch, suite: &str, version: (u32, u32)) {
    if !vm_ready(arch) {
        return;
    }
    let kernel = Kernel::debian(suite, arch);
    let work = tempfile::tempdir().unwrap();
    let image = initramfs(work.path(), &kernel);
    let mut problems = Vec::new();
    for bpf_lsm in [true, false] {
        let lsm = kernel.lsm_param(bpf_lsm);
        let forced: &[&str] = if bpf_lsm { &BACKENDS } else { &["lsm"] };
        let append = format!("{lsm} sw_backends={} panic=-1 quiet", forced.join(","));
        let console = boot(&kernel, &image, &append);
        let cell = format!("{} {suite} ({version:?}) {lsm}", arch.debian());
        // Seen once in about ten runs of a cell: a TCG guest's kernel oopses on an int3 it
        // placed itself while patching a static branch (`syscall_trace_enter`, as the
        // tracepoint backend's syscall tracepoints are switched on and off): the breakpoint
        // outlives its patch under emulation. That cell boots once more, and says so; a
        // second crash fails it.
        let (console, guest_crash) = match guest_crash(&console) {
            Some(crash) if !console.contains("SWDONE") => {
                println!("[{cell}] GUEST KERNEL CRASHED, booting the cell once more:\n{crash}");
                (boot(&kernel, &image, &append), Some(crash))
            }
            _ => (console, None),
        };
        for line in console.lines().filter(|l| l.contains("SW")) {
            println!("[{cell}] {line}");
        }
        if !console.contains("SWDONE") {
            problems.push(format!("{cell}: the VM did not finish:\n{console}"));
            continue;
        }
        // The line may follow kernel output on the same console line: start at its tag.
        let info = console
            .lines()
            .find_map(|l| l.find("SWINFO kernel").map(|at| &l[at..]))
            .unwrap_or_default();
        let active_bpf = info
            .split_whitespace()
            .find_map(|w| w.strip_prefix("lsm="))
            .is_some_and(|l| l.split(',').any(|x| x == "bpf"));
        if active_bpf != bpf_lsm {
            problems.push(format!("{cell}: BPF LSM active is {active_bpf}: {info}"));
        }
        let mut want = expect(arch, version, bpf_lsm);
        want.runs.retain(|b| forced.contains(b));
        want.refused.retain(|(b, _)| forced.contains(b));
        for backend in &want.runs {
            if !console.contains(&format!("SWLOAD {backend} runs")) {
                problems.push(format!("{cell}: {backend} should run here"));
            }
            for name in SCENARIOS {
                let line = format!("SWTEST {backend} {name} PASS");
                if !console.lines().any(|l| l.trim() == line) {
                    problems.push(format!("{cell}: {backend} {name} did not pass"));
                }
            }
            for (name, want) in enforce_expected(backend, version) {
                let line = format!("SWTEST {backend} {name} {want}");
                if !console.lines().any(|l| l.trim() == line) {
                    let got = console
                        .lines()
                        .find(|l| l.starts_with(&format!("SWTEST {backend} {name} ")));
                    problems.push(format!(
                        "{cell}: {backend} {name} should be {want}, got {got:?}"
                    ));
                }
            }
        }
        for (backend, words) in &want.refused {
            let refusal = console
                .lines()
                .find_map(|l| l.strip_prefix(&format!("SWLOAD {backend} refused ")));
            match refusal {
                Some(why) if why.contains(words) => {}
                other => problems.push(format!(
                    "{cell}: {backend} should be refused saying {words:?}, got {other:?}"
                )),
            }
        }
        let chose = console
            .lines()
            .find_map(|l| l.strip_prefix("SWCHOSE "))
            .unwrap_or_default();
        if !chose.contains(&format!("backend={}", want.auto)) {
            problems.push(format!("{cell}: auto should choose {}: {chose}", want.auto));
        }
        if !console.lines().any(|l| l.trim() == "SWTEST auto sees PASS") {
            problems.push(format!(
                "{cell}: auto's backend did not see a container connect"
            ));
        }
        let facts = console
            .lines()
            .find_map(|l| l.strip_prefix("SWFACTS "))
            .unwrap_or_default();
        if !facts.contains("kernel facts") {
            problems.push(format!("{cell}: the probe did not log the kernel facts"));
        }
        // fmod_ret (fentry-backend enforcement) attaches wherever trampolines do (checked
        // where fentry is forced).
        let fmod_attaches = console.contains("SWFMOD attaches");
        if forced.contains(&"fentry") && fmod_attaches != want.runs.contains(&"fentry") {
            problems.push(format!(
                "{cell}: fmod_ret attaches is {fmod_attaches}, fentry runs is {}",
                want.runs.contains(&"fentry")
            ));
        }
        let mut backends = serde_json::Map::new();
        for backend in BACKENDS {
            let refusal = console
                .lines()
                .find_map(|l| l.strip_prefix(&format!("SWLOAD {backend} refused ")));
            let passed = SCENARIOS
                .iter()
                .filter(|name| {
                    let line = format!("SWTEST {backend} {name} PASS");
                    console.lines().any(|l| l.trim() == line)
                })
                .count();
            let enforce = enforce_expected(backend, version);
            let enforced = enforce
                .iter()
                .filter(|(name, want)| {
                    let line = format!("SWTEST {backend} {name} {want}");
                    console.lines().any(|l| l.trim() == line)
                })
                .count();
            let pinned = console
                .lines()
                .any(|l| l.trim() == format!("SWTEST {backend} enforce-after-probe-killed PASS"));
            let (open_prog, connect_prog) = hook_programs(backend);
            backends.insert(
                backend.into(),
                serde_json::json!({
                    "forced": forced.contains(&backend),
                    "runs": console.contains(&format!("SWLOAD {backend} runs")),
                    "refused": refusal,
                    "scenariosPassed": passed,
                    "scenarios": SCENARIOS.len(),
                    "enforcePassed": enforced,
                    "enforceScenarios": enforce.len(),
                    "enforcePinned": pinned,
                    "openHookNs": per_run(&console, backend, open_prog),
                    "connectHookNs": per_run(&console, backend, connect_prog),
                    "openSyscallNs": base(&console, backend, "open_ns"),
                    "connectSyscallNs": base(&console, backend, "connect_ns"),
                    "unrelatedOpenRatio": Some(bench_ratio(&console, backend, "open")).filter(|r| r.is_finite()),
                    "unrelatedConnectRatio": Some(bench_ratio(&console, backend, "connect")).filter(|r| r.is_finite()),
                }),
            );
        }
        let auto_chose = BACKENDS
            .into_iter()
            .find(|b| chose.contains(&format!("backend={b}")));
        let result = serde_json::json!({
            "arch": arch.debian(),
            "suite": suite,
            "kernel": info.split_whitespace().nth(2),
            "bpfInLsm": bpf_lsm,
            "auto": auto_chose,
            "autoSees": console.lines().any(|l| l.trim() == "SWTEST auto sees PASS"),
            "fmodRetAttaches": forced.contains(&"fentry").then_some(fmod_attaches),
            "guestKernelCrashRetried": guest_crash,
            "fmodRetRefused": console.lines().find_map(|l| l.strip_prefix("SWFMOD refused ")),
            "backends": backends,
        });
        // Collected by scripts/support-table.py into the README's support table.
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-matrix");
        std::fs::create_dir_all(&out).unwrap();
        let name = format!(
            "{}-{suite}-bpf-{}.json",
            arch.debian(),
            if bpf_lsm { "yes" } else { "no" }
        );
        std::fs::write(
            out.join(&name),
            serde_json::to_string_pretty(&result).unwrap(),
        )
        .unwrap();
        println!("MATRIX {result}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn debian_vm_5_10_bullseye_kernel_matrix() {
    kernel_matrix(Arch::Amd64, "bullseye", (5, 10));
}

#[test]
fn debian_vm_6_1_bookworm_kernel_matrix() {
    kernel_matrix(Arch::Amd64, "bookworm", (6, 1));
}

#[test]
fn debian_vm_6_12_trixie_kernel_matrix() {
    kernel_matrix(Arch::Amd64, "trixie", (6, 12));
}

#[test]
fn debian_vm_arm64_5_10_bullseye_kernel_matrix() {
    kernel_matrix(Arch::Arm64, "bullseye", (5, 10));
}

#[test]
fn debian_vm_arm64_6_1_bookworm_kernel_matrix() {
    kernel_matrix(Arch::Arm64, "bookworm", (6, 1));
}

#[test]
fn debian_vm_arm64_6_12_trixie_kernel_matrix() {
    kernel_matrix(Arch::Arm64, "trixie", (6, 12));
}

#[test]
fn the_matrix_reads_costs_and_ratios_from_the_console() {
    let console = "\
noise SWSTATS lsm sockwarden_probe_program_runs{program=\"lsm_file_open\"} 200
SWSTATS lsm sockwarden_probe_program_run_seconds{program=\"lsm_file_open\"} 0.00005
SWSTATS lsmx sockwarden_probe_program_runs{program=\"lsm_file_open\"} 7
SWSTATS lsm open_ns=7000 connect_ns=40000
SWBENCH lsm round=1 open_base=100 open_probe=110 connect_base=10 connect_probe=30
SWBENCH lsm round=2 open_base=100 open_probe=102 connect_base=10 connect_probe=11
SWBENCH lsm round=3 open_base=100 open_probe=105 connect_base=10 connect_probe=12
";
    assert_eq!(per_run(console, "lsm", "lsm_file_open"), Some(250.0));
    assert_eq!(per_run(console, "lsm", "lsm_unix_stream_connect"), None);
    assert_eq!(base(console, "lsm", "open_ns"), Some(7000.0));
    assert_eq!(base(console, "lsm", "connect_ns"), Some(40000.0));
    assert_eq!(base(console, "fentry", "open_ns"), None);
    assert!((bench_ratio(console, "lsm", "open") - 1.05).abs() < 1e-9);
    assert!((bench_ratio(console, "lsm", "connect") - 1.2).abs() < 1e-9);
    assert!(bench_ratio(console, "fentry", "open").is_nan());
    assert_eq!(guest_crash(console), None);
    let crashed = "SWSTATS x\n[ 75.09] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n[ 75.10] RIP: 0010:syscall_trace_enter+0xd8/0x1a0\n";
    assert_eq!(
        guest_crash(crashed).as_deref(),
        Some("[ 75.09] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n[ 75.10] RIP: 0010:syscall_trace_enter+0xd8/0x1a0")
    );
}
