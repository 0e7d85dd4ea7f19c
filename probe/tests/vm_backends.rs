//! The `lsm` and `fentry` backends on a real distribution kernel: Debian's
//! `linux-image-cloud-amd64` (BPF LSM, trampolines, BTF), booted under qemu (TCG) with an
//! initramfs holding busybox, the probe and the static test client. The scenarios run inside
//! the VM (`tests/vm/scenarios.sh`) and report on the serial console.
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

/// Debian's cloud kernel, downloaded once into target/vm.
fn kernel(cache: &Path) -> PathBuf {
    std::fs::create_dir_all(cache).unwrap();
    let existing = || {
        std::fs::read_dir(cache.join("x/boot"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
    };
    if let Some(k) = existing() {
        return k;
    }
    let c = cache.display();
    ok(&format!(
        "cd {c} && pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{{print $2; exit}}') \
         && apt-get download \"$pkg\" && dpkg-deb -x linux-image-*.deb x"
    ));
    existing().expect("vmlinuz in the Debian package")
}

fn initramfs(dir: &Path) -> PathBuf {
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
    ok(&format!("cp /bin/busybox {r}/bin/busybox && for a in $(/bin/busybox --list); do [ -e {r}/bin/$a ] || ln -s busybox {r}/bin/$a; done"));
    ok(&format!(
        "strip -o {r}/bin/sockwarden-probe {}",
        env!("CARGO_BIN_EXE_sockwarden-probe")
    ));
    ok(&format!(
        "gcc -static -O2 -o {r}/bin/swclient {}/tests/client/swclient.c",
        env!("CARGO_MANIFEST_DIR")
    ));
    // the probe's shared libraries, where the dynamic loader looks for them
    ok(&format!(
        "ldd {r}/bin/sockwarden-probe | awk '/=> \\//{{print $3}} /^\\t\\/lib64/{{print $1}}' | while read lib; do mkdir -p {r}$(dirname $lib) && cp -L $lib {r}$lib; done"
    ));
    let vm = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm");
    std::fs::copy(vm.join("init"), root.join("init")).unwrap();
    std::fs::copy(vm.join("scenarios.sh"), root.join("scenarios.sh")).unwrap();
    std::fs::copy(vm.join("fallback.sh"), root.join("fallback.sh")).unwrap();
    ok(&format!("chmod +x {r}/init"));
    let image = dir.join("initramfs.gz");
    ok(&format!(
        "cd {r} && find . | cpio -o -H newc --quiet | gzip -1 > {}",
        image.display()
    ));
    image
}

/// Root and the tools, or `None` (skipped with the reason; CI must not skip).
fn vm_ready() -> Option<(PathBuf, tempfile::TempDir, PathBuf)> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let missing: Vec<&str> = [
        "qemu-system-x86_64",
        "cpio",
        "strip",
        "gcc",
        "busybox",
        "apt-get",
    ]
    .into_iter()
    .filter(|b| common::which(b).is_none())
    .collect();
    if !missing.is_empty() || unsafe { libc::geteuid() } != 0 {
        let why = format!("needs root and {missing:?} (run scripts/setup.sh)");
        assert!(!ci, "CI must run the VM test, but it {why}");
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vm");
    let vmlinuz = kernel(&cache);
    let work = tempfile::tempdir().unwrap();
    let image = initramfs(work.path());
    Some((vmlinuz, work, image))
}

/// Boots the VM with `append` on the kernel command line; its serial console.
fn boot(vmlinuz: &Path, image: &Path, append: &str) -> String {
    let started = std::time::Instant::now();
    let out = Command::new("timeout")
        .arg("900")
        .arg("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "2048",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(image)
        .args(["-append", append])
        .output()
        .unwrap();
    println!(
        "VM ({append}) ran for {:.0?}",
        started.elapsed().max(Duration::from_millis(1))
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
fn with_bpf_lsm_built_but_inactive_auto_falls_back_and_still_reports() {
    let Some((vmlinuz, _work, image)) = vm_ready() else {
        return;
    };
    let console = boot(
        &vmlinuz,
        &image,
        "console=ttyS0 lsm=lockdown,capability sw_mode=fallback panic=-1 quiet",
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

#[test]
fn lsm_and_fentry_backends_in_a_debian_vm() {
    let Some((vmlinuz, _work, image)) = vm_ready() else {
        return;
    };
    let console = boot(
        &vmlinuz,
        &image,
        "console=ttyS0 lsm=lockdown,capability,bpf panic=-1 quiet",
    );
    for line in console.lines().filter(|l| l.contains("SW")) {
        println!("{line}");
    }
    assert!(
        console.contains("SWDONE"),
        "the VM did not finish its scenarios:\n{console}"
    );
    let info = console
        .lines()
        .find(|l| l.contains("SWINFO"))
        .unwrap_or_default();
    assert!(
        info.contains("lsm=lockdown,capability,bpf"),
        "BPF LSM must be active in the VM: {info}"
    );

    let mut expected: Vec<String> = Vec::new();
    for backend in ["lsm", "fentry"] {
        for name in [
            "start",
            "direct-path",
            "bind-mount-alias",
            "symlink",
            "host-namespaces-connect",
            "host-namespaces-open",
            "open-write-intent",
            "proc-root-alias",
            "decoy",
            "host-process",
        ] {
            expected.push(format!("SWTEST {backend} {name} PASS"));
        }
    }
    expected.push("SWTEST fentry fmod-ret-loads PASS".into());
    expected.push("SWTEST auto chooses-lsm PASS".into());
    assert_all(&console, &expected);

    // What each hook costs per run, from the kernel's BPF statistics, against the syscall's
    // own time measured in the same run.
    for backend in ["lsm", "fentry"] {
        let stat = |series: &str| -> Option<f64> {
            console.lines().find_map(|l| {
                let rest = l
                    .split("SWSTATS ")
                    .nth(1)?
                    .strip_prefix(&format!("{backend} "))?;
                let (name, value) = rest.rsplit_once(' ')?;
                (name == series)
                    .then(|| value.trim().parse().ok())
                    .flatten()
            })
        };
        let per_run = |program: &str| -> Option<f64> {
            let runs = stat(&format!(
                "sockwarden_probe_program_runs{{program=\"{program}\"}}"
            ))?;
            let secs = stat(&format!(
                "sockwarden_probe_program_run_seconds{{program=\"{program}\"}}"
            ))?;
            (runs > 0.0).then(|| secs * 1e9 / runs)
        };
        let base = |key: &str| -> Option<f64> {
            console.lines().find_map(|l| {
                let rest = l
                    .split("SWSTATS ")
                    .nth(1)?
                    .strip_prefix(&format!("{backend} "))?;
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{key}=")))?
                    .parse()
                    .ok()
            })
        };
        let open_prog = per_run(&format!("{backend}_file_open"));
        let connect_prog = per_run(&format!("{backend}_unix_stream_connect"));
        assert!(
            open_prog.is_some(),
            "{backend}: no BPF statistics for the file_open program"
        );
        if let (Some(p), Some(b)) = (open_prog, base("open_ns")) {
            println!("VM cost {backend}: file_open program {p:.0} ns per run; open()+close() takes {b:.0} ns here: ratio {:.3}", (b + p) / b);
        }
        if let (Some(p), Some(b)) = (connect_prog, base("connect_ns")) {
            println!("VM cost {backend}: unix_stream_connect program {p:.0} ns per run; connect() takes {b:.0} ns here: ratio {:.3}", (b + p) / b);
        }
    }

    // Overhead, reported (TCG timing is slow and noisy; ratios within one run still compare).
    for backend in ["lsm", "fentry"] {
        let mut open = Vec::new();
        let mut connect = Vec::new();
        for line in console
            .lines()
            .filter(|l| l.starts_with(&format!("SWBENCH {backend} ")))
        {
            let field = |k: &str| -> f64 {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            };
            open.push(field("open_probe") / field("open_base"));
            connect.push(field("connect_probe") / field("connect_base"));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        println!(
            "VM overhead {backend}: unrelated open ratio {:.3}, unrelated connect ratio {:.3} (median of {} alternating rounds)",
            median(&mut open),
            median(&mut connect),
            open.len()
        );
    }
}
