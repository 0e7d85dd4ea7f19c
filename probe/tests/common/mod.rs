//! Test harness for real attacks: a private Docker Engine, a test image made without a
//! registry (busybox-static + a static client), and the probe binary reading its findings.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicI32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod fake_api;

pub const IMAGE: &str = "sockwarden-test:latest";

/// Whether root/BPF/Docker tests can run here. Outside CI they skip with a printed reason;
/// in CI (`CI=true`) a missing piece fails the test instead.
pub fn environment_ready() -> bool {
    let mut missing = Vec::new();
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_string());
    }
    for bin in ["dockerd", "docker", "gcc", "busybox"] {
        if which(bin).is_none() {
            missing.push(format!("{bin} (run scripts/setup.sh)"));
        }
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push("kernel BTF".into());
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("needs {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI must run the root/Docker tests, but this machine {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/bin"])
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Processes to kill when the test binary exits (the fixture is shared and never dropped).
static DOCKERD_PID: AtomicI32 = AtomicI32::new(0);
static PROBE_PIDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

extern "C" fn kill_children() {
    let probes = PROBE_PIDS.lock().map(|p| p.clone()).unwrap_or_default();
    for pid in probes
        .into_iter()
        .chain([DOCKERD_PID.load(Ordering::SeqCst)])
    {
        if pid > 0 {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    // give dockerd a moment to stop its containers and managed containerd
    std::thread::sleep(Duration::from_millis(1500));
}

pub fn register_cleanup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| unsafe {
        libc::atexit(kill_children);
    });
}

/// A private dockerd with its own socket, data and state directories.
pub struct Docker {
    pub dir: PathBuf,
    pub sock: PathBuf,
    child: Option<Child>,
}

impl Docker {
    pub fn start(dir: &Path) -> Docker {
        std::fs::create_dir_all(dir).unwrap();
        let mut d = Docker {
            dir: dir.to_path_buf(),
            sock: dir.join("docker.sock"),
            child: None,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("dockerd.log")).unwrap();
        let child = Command::new(which("dockerd").expect("dockerd"))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("dockerd.pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start dockerd");
        DOCKERD_PID.store(child.id() as i32, Ordering::SeqCst);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.cli(&["version"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "dockerd did not come up: {}",
            std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// Stops and starts the daemon, which recreates its socket file. The file system may
    /// hand the freed inode number straight back; files made in between take it, so the new
    /// socket gets a new inode, as a restart on a busy host does.
    pub fn restart(&mut self) {
        self.stop();
        for i in 0..8 {
            let _ = std::fs::write(self.dir.join(format!("inode-placeholder-{i}")), b"");
        }
        self.spawn();
    }

    pub fn containerd_sock(&self) -> PathBuf {
        self.dir.join("exec/containerd/containerd.sock")
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .output()
            .expect("run docker")
    }

    /// Makes the test image: busybox-static and the static client, imported (no registry).
    pub fn build_image(&self) {
        let root = self.dir.join("rootfs");
        let _ = std::fs::remove_dir_all(&root);
        for d in [
            "bin", "proc", "sys", "dev", "etc", "tmp", "var/run", "hostdir",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(which("busybox").unwrap(), root.join("bin/busybox")).unwrap();
        for applet in ["sh", "ln", "sleep", "ls", "cat", "true"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client/swclient.c");
        run_ok(
            Command::new("gcc")
                .args(["-static", "-O2", "-o"])
                .arg(root.join("swclient"))
                .arg(src),
        );
        let tar = self.dir.join("rootfs.tar");
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        );
        let out = self.cli(&["import", tar.to_str().unwrap(), IMAGE]);
        assert!(
            out.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a container to completion; returns its full id and output. `docker_args` go
    /// before the image (mounts), `command` after it.
    pub fn run(&self, docker_args: &[&str], command: &[&str]) -> (String, String) {
        let mut args = vec!["run", "-d", "--network", "none"];
        args.extend_from_slice(docker_args);
        args.push(IMAGE);
        args.extend_from_slice(command);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(id.len(), 64, "docker run printed {id:?}");
        self.cli(&["wait", &id]);
        let logs = self.cli(&["logs", &id]);
        let output = String::from_utf8_lossy(&logs.stdout).into_owned()
            + &String::from_utf8_lossy(&logs.stderr);
        self.cli(&["rm", "-f", &id]);
        (id, output)
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `sockwarden-probe run`, its findings collected from stdout.
pub struct Probe {
    child: Child,
    pub findings: Arc<Mutex<Vec<Value>>>,
    pub listen: String,
    pub stderr_log: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.get(9..12)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

impl Probe {
    pub fn start(args: &[String], log_dir: &Path) -> Probe {
        Self::start_with_env(args, &[], log_dir)
    }

    pub fn start_with_env(args: &[String], env: &[(&str, &str)], log_dir: &Path) -> Probe {
        let listen = format!("127.0.0.1:{}", free_port());
        let stderr_log = log_dir.join(format!("probe-{}.log", listen.replace(':', "_")));
        let mut child = Command::new(env!("CARGO_BIN_EXE_sockwarden-probe"))
            .arg("run")
            .args(["--format", "json", "--listen", &listen])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .expect("start sockwarden-probe");
        PROBE_PIDS.lock().unwrap().push(child.id() as i32);
        let findings = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = findings.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("probe printed a non-JSON line {line:?}: {e}"));
                sink.lock().unwrap().push(value);
            }
        });
        let probe = Probe {
            child,
            findings,
            listen,
            stderr_log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match http_get(&probe.listen, "/readyz") {
                Some((200, _)) => return probe,
                // Up and proven to see, with no socket to watch yet: tests that create their
                // sockets after the probe starts.
                Some((503, body)) if body.starts_with("not ready: sockets:") => return probe,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("probe never became ready:\n{}", probe.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The first finding that satisfies `pred`, waiting up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.findings.lock().unwrap().iter().find(|v| pred(v)) {
                return Some(v.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn matching(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.findings
            .lock()
            .unwrap()
            .iter()
            .filter(|v| pred(v))
            .cloned()
            .collect()
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM)
    }

    /// SIGKILL (no clean-up of any kind), then the exit status.
    pub fn kill(self) -> std::process::ExitStatus {
        self.signal(libc::SIGKILL)
    }

    fn signal(mut self, signal: i32) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().unwrap();
        let pid = self.child.id() as i32;
        PROBE_PIDS.lock().unwrap().retain(|p| *p != pid);
        status
    }
}

pub fn container_id(v: &Value) -> Option<&str> {
    v["container"]["id"].as_str()
}
