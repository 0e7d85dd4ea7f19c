//! Hostile load: can one workload starve another's findings? Run as root:
//! `cargo run --release -p probe --example flood_bench` (after building the probe binary).
//!
//! Workload A, in a cgroup of its own, floods opens of a FIFO with write intent that fail
//! with ENXIO (what any unprivileged container can do) for 10 s, with `--detect-open` on;
//! workload B, in another cgroup, connects to a watched socket 100 times meanwhile. Every one
//! of B's connects must be reported, or the benchmark fails. `SOCKWARDEN_PROBE` picks another
//! probe binary (to measure a build from before a change).
use std::{
    ffi::CString,
    io::{BufRead, BufReader, Read, Write},
    os::unix::{
        io::AsRawFd,
        net::{UnixListener, UnixStream},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const FLOOD: Duration = Duration::from_secs(10);
const CONNECTS: usize = 100;

fn probe_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SOCKWARDEN_PROBE") {
        return path.into();
    }
    // target/<profile>/examples/flood_bench -> target/<profile>/sockwarden-probe
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("sockwarden-probe")
}

/// Workload A: ENXIO opens until `secs` are over; prints how many.
fn flood_opens(fifo: &str, secs: u64) {
    let path = CString::new(fifo).unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut opens: u64 = 0;
    while Instant::now() < deadline {
        for _ in 0..256 {
            // SAFETY: valid path; a FIFO without a reader refuses O_NONBLOCK writers (ENXIO).
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK) };
            if fd >= 0 {
                unsafe { libc::close(fd) };
            }
            opens += 1;
        }
    }
    println!("{opens}");
}

/// Workload B: `n` connects, `spacing_ms` apart.
fn connect_n(sock: &str, n: usize, spacing_ms: u64) {
    for _ in 0..n {
        drop(UnixStream::connect(sock).expect("connect to the watched socket"));
        std::thread::sleep(Duration::from_millis(spacing_ms));
    }
    println!("done");
}

/// The cgroup v2 hierarchy (hybrid machines mount it at /sys/fs/cgroup/unified).
fn cgroup2_root() -> PathBuf {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists())
        .expect("a cgroup v2 hierarchy")
}

/// Runs this binary in `mode`, moved into `cgroup` before it executes.
fn spawn_in(cgroup: &Path, mode: &[&str]) -> Child {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .expect("open cgroup.procs");
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(mode).stdout(Stdio::piped());
    // SAFETY: only write(2) between fork and exec; "0" moves the writing process itself.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn a workload");
    drop(procs);
    child
}

fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a workload failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A metric's value (summed over its series); None when the probe does not export it.
fn metric(text: &str, name: &str) -> Option<u64> {
    let values: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("flood-opens") => return flood_opens(&args[2], args[3].parse().unwrap()),
        Some("connect") => {
            return connect_n(&args[2], args[3].parse().unwrap(), args[4].parse().unwrap())
        }
        _ => {}
    }
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("flood_bench: run as root (the probe loads eBPF programs)");
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("flood.fifo");
    let fifo_c = CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o666) }, 0, "mkfifo");
    let watched = dir.path().join("watched.sock");
    let listener = UnixListener::bind(&watched).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });

    let listen = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let spec = format!("{}=bench", watched.display());
    let mut probe = Command::new(probe_bin())
        .args(["run", "--format", "json", "--listen", &listen])
        .args(["--no-default-sockets", "--include-host", "--detect-open"])
        .args(["--socket", &spec])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sockwarden-probe (build it first: cargo build --release -p probe)");
    // (operation, pid) of every finding.
    let findings = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    {
        let findings = findings.clone();
        let stdout = probe.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let op = v["operation"].as_str().unwrap_or("").to_string();
                let pid = v["process"]["pid"].as_u64().unwrap_or(0);
                findings.lock().unwrap().push((op, pid));
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(&listen, "/readyz").is_some_and(|r| r.contains(" 200 ")) {
        assert!(Instant::now() < deadline, "probe did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    let root = cgroup2_root();
    let (cg_a, cg_b) = (
        root.join(format!("sw-flood-a-{}", std::process::id())),
        root.join(format!("sw-flood-b-{}", std::process::id())),
    );
    std::fs::create_dir_all(&cg_a).unwrap();
    std::fs::create_dir_all(&cg_b).unwrap();
    let secs = FLOOD.as_secs().to_string();
    let a = spawn_in(&cg_a, &["flood-opens", fifo.to_str().unwrap(), &secs]);
    std::thread::sleep(Duration::from_millis(300)); // the flood is under way first
    let spacing = ((FLOOD.as_millis() as u64 - 1000) / CONNECTS as u64).to_string();
    let count = CONNECTS.to_string();
    let b = spawn_in(
        &cg_b,
        &["connect", watched.to_str().unwrap(), &count, &spacing],
    );
    let b_pid = b.id() as u64;
    let opens: u64 = output(a).parse().unwrap();
    assert_eq!(output(b), "done");

    // Give the reader time to catch up with what was queued.
    let reported = || {
        findings
            .lock()
            .unwrap()
            .iter()
            .filter(|(op, pid)| op == "connect" && *pid == b_pid)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while reported() < CONNECTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1200)); // one housekeeping pass for the counters
    let metrics = http_get(&listen, "/metrics").unwrap_or_default();
    unsafe { libc::kill(probe.id() as i32, libc::SIGTERM) };
    let _ = probe.wait();
    let _ = std::fs::remove_dir(&cg_a);
    let _ = std::fs::remove_dir(&cg_b);

    let show = |v: Option<u64>| v.map_or("n/a".to_string(), |v| v.to_string());
    let got = reported();
    println!(
        "hostile load ({}s, --detect-open): A {:.0} ENXIO opens/s; B's connects reported {got}/{CONNECTS}; \
         opens rate-limited {}; ring drops {}",
        FLOOD.as_secs(),
        opens as f64 / FLOOD.as_secs_f64(),
        show(metric(&metrics, "sockwarden_probe_opens_rate_limited_total")),
        show(metric(&metrics, "sockwarden_probe_ringbuf_drops_total")),
    );
    if got < CONNECTS {
        eprintln!("flood_bench: FAILED: B lost {} connects", CONNECTS - got);
        std::process::exit(1);
    }
}
