//! Real attacks from real Docker containers against a real Docker Engine, watched by the
//! real probe with its eBPF programs attached. Needs root, BTF, dockerd (scripts/setup.sh).
mod common;

use std::{
    path::PathBuf,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use common::{container_id, environment_ready, http_get, Docker, Probe};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    docker: Docker,
    probe: Probe,
    dir: PathBuf,
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

/// The shared dockerd + probe; tests take turns (one restarts dockerd, one pauses the probe).
fn fixture() -> Option<MutexGuard<'static, Option<Fixture>>> {
    if !environment_ready() {
        return None;
    }
    let mut guard = FIXTURE.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        common::register_cleanup();
        let dir = PathBuf::from(format!("/tmp/sw-it-{}", std::process::id()));
        let docker = Docker::start(&dir);
        docker.build_image();
        let probe = Probe::start(
            &[
                "--no-default-sockets".into(),
                "--socket".into(),
                format!("{}=docker", docker.sock.display()),
                "--socket".into(),
                format!("{}=containerd", docker.containerd_sock().display()),
                "--detect-open".into(),
            ],
            &dir,
        );
        *guard = Some(Fixture { docker, probe, dir });
    }
    Some(guard)
}

macro_rules! fixture_or_skip {
    ($guard:ident, $f:ident) => {
        let Some(mut $guard) = fixture() else { return };
        #[allow(unused_mut)]
        let $f = $guard.as_mut().unwrap();
    };
}

fn sock_mount(f: &Fixture, inside: &str) -> String {
    format!("{}:{inside}", f.docker.sock.display())
}

fn finding_for(f: &Fixture, id: &str, output: &str) -> Value {
    f.probe
        .wait_for(WAIT, |v| container_id(v) == Some(id))
        .unwrap_or_else(|| {
            panic!(
                "no finding for container {id}; container said {output:?}\nprobe log:\n{}",
                f.probe.log()
            )
        })
}

#[test]
fn connect_at_the_usual_path_names_the_full_container_id() {
    fixture_or_skip!(guard, f);
    let (id, out) = f.docker.run(
        &["-v", &sock_mount(f, "/var/run/docker.sock")],
        &["/swclient", "connect", "/var/run/docker.sock"],
    );
    assert!(
        out.contains("HTTP/1.0 200 OK"),
        "the attack itself must work: {out}"
    );
    let v = finding_for(f, &id, &out);
    assert_eq!(v["signature"]["id"], "TRC-1019");
    assert_eq!(v["operation"], "connect");
    assert_eq!(v["container"]["id"], id.as_str());
    assert_eq!(v["container"]["runtime"], "docker");
    assert_eq!(v["requestedPath"], "/var/run/docker.sock");
    assert_eq!(v["socket"]["hostPath"], f.docker.sock.to_str().unwrap());
    assert_eq!(v["socket"]["runtime"], "docker");
    assert_eq!(v["socket"]["identity"], "inode");
    assert_eq!(v["process"]["comm"], "swclient");
    assert_eq!(v["backend"], "tracepoint");
    assert_eq!(v["action"], "Audit");
    assert!(v["cgroup"]["path"].as_str().unwrap().contains(&id));
    assert_ne!(v["namespaces"]["mnt"], 0);
}

#[test]
fn connect_through_aliases_is_caught_by_socket_identity() {
    fixture_or_skip!(guard, f);
    let parent = format!("{}:/hostdir", f.dir.display());
    let cases: Vec<(Vec<String>, Vec<&str>, &str)> = vec![
        // a renamed bind mount
        (
            vec!["-v".into(), sock_mount(f, "/tmp/innocent.sock")],
            vec!["/swclient", "connect", "/tmp/innocent.sock"],
            "/tmp/innocent.sock",
        ),
        // the parent directory mounted
        (
            vec!["-v".into(), parent.clone()],
            vec!["/swclient", "connect", "/hostdir/docker.sock"],
            "/hostdir/docker.sock",
        ),
        // a symlink made inside the container
        (
            vec!["-v".into(), parent.clone()],
            vec![
                "sh",
                "-c",
                "ln -s /hostdir/docker.sock /tmp/x.sock && /swclient connect /tmp/x.sock",
            ],
            "/tmp/x.sock",
        ),
        // /proc/self/fd/N of an O_PATH descriptor
        (
            vec!["-v".into(), parent.clone()],
            vec!["/swclient", "connect-fd", "/hostdir/docker.sock"],
            "/proc/self/fd/3",
        ),
        // /proc/<pid>/root/...
        (
            vec!["-v".into(), parent.clone()],
            vec![
                "/swclient",
                "connect",
                "/proc/self/root/hostdir/docker.sock",
            ],
            "/proc/self/root/hostdir/docker.sock",
        ),
    ];
    for (mounts, cmd, requested) in cases {
        let mounts: Vec<&str> = mounts.iter().map(String::as_str).collect();
        let (id, out) = f.docker.run(&mounts, &cmd);
        assert!(
            out.contains("200 OK"),
            "{cmd:?}: the attack must reach the daemon: {out}"
        );
        let v = finding_for(f, &id, &out);
        assert_eq!(v["requestedPath"], requested, "{cmd:?}");
        assert_eq!(
            v["socket"]["hostPath"],
            f.docker.sock.to_str().unwrap(),
            "{cmd:?}"
        );
    }
}

#[test]
fn containers_own_socket_named_docker_sock_is_not_a_finding() {
    fixture_or_skip!(guard, f);
    // The decoy first, then (positive control, same container) the real socket.
    let (id, out) = f.docker.run(
        &["-v", &sock_mount(f, "/real.sock")],
        &[
            "sh",
            "-c",
            "/swclient decoy /var/run/docker.sock && /swclient connect /real.sock",
        ],
    );
    assert!(out.contains("decoy /var/run/docker.sock done"), "{out}");
    finding_for(f, &id, &out);
    let all = f.probe.matching(|v| container_id(v) == Some(id.as_str()));
    assert_eq!(all.len(), 1, "only the real socket counts: {all:#?}");
    assert_eq!(all[0]["requestedPath"], "/real.sock");
}

#[test]
fn open_with_write_intent_is_caught() {
    fixture_or_skip!(guard, f);
    // Renamed mount, caller's shell still alive: resolved exactly by inode.
    let (id, out) = f.docker.run(
        &["-v", &sock_mount(f, "/srv/api.sock")],
        &["sh", "-c", "/swclient open /srv/api.sock; sleep 1"],
    );
    assert!(out.contains("No such device or address"), "{out}");
    let v = f
        .probe
        .wait_for(WAIT, |v| {
            container_id(v) == Some(id.as_str()) && v["operation"] == "open"
        })
        .unwrap_or_else(|| panic!("no open finding: {}", f.probe.log()));
    assert_eq!(v["requestedPath"], "/srv/api.sock");
    assert_eq!(v["socket"]["identity"], "inode");
    assert_eq!(v["socket"]["hostPath"], f.docker.sock.to_str().unwrap());
    assert_eq!(v["openFlags"], "O_RDWR");

    // The opener is the container's only process and is gone at once: matched by name,
    // like TRC-1019, and marked so.
    let (id, out) = f.docker.run(
        &["-v", &sock_mount(f, "/var/run/docker.sock")],
        &["/swclient", "open", "/var/run/docker.sock"],
    );
    let v = f
        .probe
        .wait_for(WAIT, |v| {
            container_id(v) == Some(id.as_str()) && v["operation"] == "open"
        })
        .unwrap_or_else(|| panic!("no open finding for a short-lived opener: {out}"));
    assert!(["inode", "name"].contains(&v["socket"]["identity"].as_str().unwrap()));

    // Read-only opens are not TRC-1019's write intent: nothing.
    let (id, _) = f.docker.run(
        &["-v", &sock_mount(f, "/var/run/docker.sock")],
        &[
            "sh",
            "-c",
            "cat /var/run/docker.sock; /swclient connect /var/run/docker.sock",
        ],
    );
    f.probe
        .wait_for(WAIT, |v| container_id(v) == Some(id.as_str()))
        .expect("control finding");
    let opens = f
        .probe
        .matching(|v| container_id(v) == Some(id.as_str()) && v["operation"] == "open");
    assert!(opens.is_empty(), "read-only open reported: {opens:#?}");
}

#[test]
fn host_process_is_not_a_finding() {
    fixture_or_skip!(guard, f);
    let alias = f
        .dir
        .join(format!("host-alias-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&alias);
    std::os::unix::fs::symlink(&f.docker.sock, &alias).unwrap();
    let client = f.dir.join("rootfs/swclient");
    let out = std::process::Command::new(&client)
        .args(["connect", alias.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("200 OK"));
    // Positive control after it: events arrive in order, so once this one is here the host's
    // would have been too.
    let (id, out) = f.docker.run(
        &["-v", &sock_mount(f, "/var/run/docker.sock")],
        &["/swclient", "connect", "/var/run/docker.sock"],
    );
    finding_for(f, &id, &out);
    let host = f
        .probe
        .matching(|v| v["requestedPath"] == alias.to_str().unwrap());
    assert!(host.is_empty(), "host process reported: {host:#?}");
}

/// A hostPID container that joins the host's mount namespace (that of dockerd) has the host's
/// namespaces, but its cgroup is still the container's: that decides, it is reported.
#[test]
fn container_that_joined_the_hosts_namespaces_is_still_that_container() {
    fixture_or_skip!(guard, f);
    let dockerd_pid = std::fs::read_to_string(f.dir.join("dockerd.pid")).unwrap();
    // After setns the command runs in the host's file system: the host's client and the
    // daemon's own socket path, no mount of it into the container.
    let client = f.dir.join("rootfs/swclient");
    let sock = f.docker.sock.to_str().unwrap();
    let (id, out) = f.docker.run(
        &[
            "--pid",
            "host",
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "SYS_PTRACE",
            "--security-opt",
            "apparmor=unconfined",
            "--security-opt",
            "seccomp=unconfined",
        ],
        &[
            "/bin/busybox",
            "nsenter",
            "-t",
            dockerd_pid.trim(),
            "-m",
            "-p",
            client.to_str().unwrap(),
            "connect",
            sock,
        ],
    );
    assert!(
        out.contains("200 OK"),
        "the attack itself must reach the daemon from the host's namespaces: {out}"
    );
    let v = finding_for(f, &id, &out);
    assert_eq!(v["container"]["id"], id.as_str());
    assert_eq!(v["container"]["runtime"], "docker");
    assert_eq!(v["requestedPath"], sock);
    assert!(v["cgroup"]["path"].as_str().unwrap().contains(&id));
    // It really ran in the host's namespaces: the same ones as this test.
    let own_ns = |ns: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/self/ns/{ns}"))
            .unwrap()
            .ino()
    };
    assert_eq!(v["namespaces"]["mnt"], own_ns("mnt"), "{v}");
    assert_eq!(v["namespaces"]["pid"], own_ns("pid"), "{v}");
}

#[test]
fn containerd_socket_connect_is_caught() {
    fixture_or_skip!(guard, f);
    let mount = format!(
        "{}:/run/containerd/containerd.sock",
        f.docker.containerd_sock().display()
    );
    let (id, out) = f.docker.run(
        &["-v", &mount],
        &["/swclient", "connect", "/run/containerd/containerd.sock"],
    );
    let v = finding_for(f, &id, &out);
    assert_eq!(v["socket"]["runtime"], "containerd");
    assert_eq!(
        v["socket"]["hostPath"],
        f.docker.containerd_sock().to_str().unwrap()
    );
}

#[test]
fn container_gone_before_the_probe_reads_is_still_attributed_exactly() {
    fixture_or_skip!(guard, f);
    // Pause the probe's user space: the container connects through an alias, exits and is
    // removed (its processes and mount namespace gone) before the event is read.
    let pid = f.probe.pid();
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let cidfile = f.dir.join("race.cid");
    let _ = std::fs::remove_file(&cidfile);
    let out = f.docker.cli(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cidfile",
        cidfile.to_str().unwrap(),
        "-v",
        &sock_mount(f, "/tmp/elsewhere.sock"),
        common::IMAGE,
        "/swclient",
        "connect",
        "/tmp/elsewhere.sock",
    ]);
    let id = std::fs::read_to_string(&cidfile)
        .unwrap()
        .trim()
        .to_string();
    let still_there = f.docker.cli(&["inspect", &id]).status.success();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(String::from_utf8_lossy(&out.stdout).contains("200 OK"));
    assert!(
        !still_there,
        "the container must be gone before the probe looks"
    );
    let v = finding_for(f, &id, "");
    assert_eq!(v["requestedPath"], "/tmp/elsewhere.sock");
    assert_eq!(v["socket"]["identity"], "inode");
    assert_eq!(v["container"]["runtime"], "docker");
}

#[test]
fn dockerd_restart_is_rearmed_and_still_detected() {
    fixture_or_skip!(guard, f);
    use std::os::unix::fs::MetadataExt;
    let before = std::fs::metadata(&f.docker.sock).unwrap().ino();
    f.docker.restart();
    let after = std::fs::metadata(&f.docker.sock).unwrap().ino();
    assert_ne!(before, after, "restart must recreate the socket");
    // Re-armed within a second.
    std::thread::sleep(Duration::from_millis(1000));
    let (id, out) = f.docker.run(
        &["-v", &sock_mount(f, "/var/run/docker.sock")],
        &["/swclient", "connect", "/var/run/docker.sock"],
    );
    let v = finding_for(f, &id, &out);
    assert_eq!(v["socket"]["inode"], after);
}

#[test]
fn health_and_metrics_reflect_what_was_seen() {
    fixture_or_skip!(guard, f);
    let (id, out) = f.docker.run(
        &["-v", &sock_mount(f, "/var/run/docker.sock")],
        &["/swclient", "connect", "/var/run/docker.sock"],
    );
    finding_for(f, &id, &out);
    assert_eq!(http_get(&f.probe.listen, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(&f.probe.listen, "/readyz").unwrap().0, 200);
    let deadline = Instant::now() + WAIT;
    let metrics = loop {
        let (_, m) = http_get(&f.probe.listen, "/metrics").unwrap();
        if m.contains("sockwarden_probe_sockets_armed 2") || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metrics.contains("sockwarden_probe_sockets_armed 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sockwarden_probe_backend_info{backend="tracepoint"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"sockwarden_probe_findings_total{action="Audit",namespace="",operation="connect","#
        ),
        "{metrics}"
    );
    for ring in ["connects", "events"] {
        assert!(
            metrics.contains(&format!(
                "sockwarden_probe_ringbuf_drops_total{{ring=\"{ring}\"}} 0"
            )),
            "{metrics}"
        );
    }
    assert!(
        metrics.contains("sockwarden_probe_detection_latency_seconds_count"),
        "{metrics}"
    );
}

#[test]
fn cluster_mode_writes_a_finding_object_that_names_the_pod() {
    fixture_or_skip!(guard, f);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(common::fake_api::FakeApi::start());
    let kubeconfig = f.dir.join("kubeconfig-fake");
    api.write_kubeconfig(&kubeconfig);
    // Create the container first so the pod object can name it, as kubelet's status would.
    let out = f.docker.cli(&[
        "create",
        "--network",
        "none",
        "-v",
        &sock_mount(f, "/var/run/docker.sock"),
        common::IMAGE,
        "/swclient",
        "connect",
        "/var/run/docker.sock",
    ]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "{}", String::from_utf8_lossy(&out.stderr));
    api.add_pod(common::fake_api::pod(
        "shop",
        "web-1",
        "uid-web-1",
        "app",
        "docker",
        &id,
        "node-a",
    ));
    let probe = Probe::start_with_env(
        &[
            "--cluster".into(),
            "--node".into(),
            "node-a".into(),
            "--no-default-sockets".into(),
            "--socket".into(),
            format!("{}=docker", f.docker.sock.display()),
            "--cri-socket".into(),
            "/nonexistent/cri.sock".into(),
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        &f.dir,
    );
    let started = f.docker.cli(&["start", "-a", &id]);
    assert!(String::from_utf8_lossy(&started.stdout).contains("200 OK"));
    let deadline = Instant::now() + WAIT;
    let written = loop {
        let all = api.findings();
        if all.iter().any(|v| v["status"]["count"] == 1) || Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    f.docker.cli(&["rm", "-f", &id]);
    assert_eq!(
        written.len(),
        1,
        "one finding object: {written:#?}\n{}",
        probe.log()
    );
    let obj = &written[0];
    assert_eq!(obj["metadata"]["namespace"], "shop");
    assert_eq!(obj["metadata"]["labels"]["sockwarden.io/node"], "node-a");
    assert_eq!(obj["metadata"]["labels"]["sockwarden.io/policy"], "default");
    let spec = &obj["spec"];
    assert_eq!(spec["pod"]["name"], "web-1");
    assert_eq!(spec["pod"]["uid"], "uid-web-1");
    assert_eq!(spec["container"]["name"], "app");
    assert_eq!(spec["container"]["id"], id.as_str());
    assert_eq!(spec["workload"]["kind"], "Deployment");
    assert_eq!(spec["workload"]["name"], "web-1");
    assert_eq!(spec["serviceAccount"], "attacker-sa");
    assert_eq!(spec["node"], "node-a");
    assert_eq!(spec["socket"]["hostPath"], f.docker.sock.to_str().unwrap());
    assert_eq!(spec["requestedPath"], "/var/run/docker.sock");
    assert_eq!(obj["status"]["count"], 1);
    // The reported finding is also exactly one stdout line, with the context it was judged in.
    probe.wait_for(Duration::from_secs(5), |v| {
        common::container_id(v) == Some(id.as_str())
    });
    let lines = probe.matching(|v| common::container_id(v) == Some(id.as_str()));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let k = &lines[0]["kubernetes"];
    assert_eq!(k["namespace"], "shop");
    assert_eq!(k["pod"], "web-1");
    assert_eq!(k["podUid"], "uid-web-1");
    assert_eq!(k["container"], "app");
    assert_eq!(k["workload"]["kind"], "Deployment");
    assert_eq!(k["serviceAccount"], "attacker-sa");
    assert_eq!(k["policy"], "default");
    assert_eq!(k["finding"], obj["metadata"]["name"]);
    assert_eq!(lines[0]["count"], 1);
    let status = probe.terminate();
    assert!(status.success(), "{status:?}");
}
