//! Enforcement, for real: `sockwarden-probe run --enforce` on this machine's backend (the
//! `tracepoint` one here: the caller is stopped with SIGKILL in its own context), real Docker
//! containers asking the real Docker Engine to create a privileged container with `/` bound,
//! by the usual path, a renamed mount and a symlink. The daemon must have created nothing;
//! the host's own client must still work; enforcement must outlive the probe (SIGKILL) from
//! its pinned links until `sockwarden-probe uninstall`. Needs root, BTF, dockerd.
mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use common::{container_id, environment_ready, Docker, Probe, IMAGE};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// What one attacking container did: its id, exit code and output.
struct Attempt {
    id: String,
    code: Option<i32>,
    output: String,
}

/// Runs the attacker in a new container to completion (`docker run`, which returns the
/// container's exit status), then removes it.
fn attack(docker: &Docker, dir: &std::path::Path, mounts: &[&str], command: &[&str]) -> Attempt {
    let cidfile = dir.join(format!("cid-{}", rand_suffix()));
    let mut args = vec![
        "run".to_string(),
        "--network".into(),
        "none".into(),
        "--cidfile".into(),
        cidfile.display().to_string(),
    ];
    for m in mounts {
        args.push("-v".into());
        args.push(m.to_string());
    }
    args.push(IMAGE.into());
    args.extend(command.iter().map(|c| c.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = docker.cli(&refs);
    let id = std::fs::read_to_string(&cidfile).unwrap_or_default();
    docker.cli(&["rm", "-f", &id]);
    Attempt {
        id,
        code: out.status.code(),
        output: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Whether the daemon holds a container named `sw-escape` (what the attacker asked for).
fn escape_created(docker: &Docker) -> bool {
    let out = docker.cli(&["ps", "-a", "--format", "{{.Names}}"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|n| n == "sw-escape")
}

fn finding_for(probe: &Probe, id: &str) -> Value {
    probe
        .wait_for(WAIT, |v| container_id(v) == Some(id))
        .unwrap_or_else(|| panic!("no finding for container {id}\nprobe log:\n{}", probe.log()))
}

/// The three ways in, each a container started after enforcement began: every one is
/// stopped before the daemon hears a request.
fn assert_every_way_in_is_stopped(docker: &Docker, dir: &std::path::Path, probe: Option<&Probe>) {
    let sock = docker.sock.display().to_string();
    let ways: [(&str, Vec<String>, Vec<&str>); 3] = [
        (
            "the usual path",
            vec![format!("{sock}:/var/run/docker.sock")],
            vec!["/swclient", "create", "/var/run/docker.sock"],
        ),
        (
            "a renamed mount",
            vec![format!("{sock}:/tmp/not-a-runtime")],
            vec!["/swclient", "create", "/tmp/not-a-runtime"],
        ),
        (
            "a symlink",
            vec![format!("{sock}:/hostdir/d.sock")],
            vec![
                "sh",
                "-c",
                "ln -s /hostdir/d.sock /tmp/link && exec /swclient create /tmp/link",
            ],
        ),
    ];
    for (way, mounts, command) in ways {
        let mounts: Vec<&str> = mounts.iter().map(String::as_str).collect();
        let attempt = attack(docker, dir, &mounts, &command);
        // SIGKILL: docker run reports 128 + 9; the client never printed a response.
        assert_eq!(
            attempt.code,
            Some(137),
            "{way}: the attacker was not stopped: {:?}; findings: {:?}",
            attempt.output,
            probe.map(|p| p.matching(|_| true))
        );
        assert!(
            !attempt.output.contains("HTTP/1"),
            "{way}: the daemon answered: {:?}",
            attempt.output
        );
        assert!(
            !escape_created(docker),
            "{way}: the daemon created the container"
        );
        if let Some(probe) = probe {
            let finding = finding_for(probe, &attempt.id);
            assert_eq!(finding["action"], "Blocked", "{way}: {finding}");
            assert_eq!(finding["enforcement"], "SIGKILL", "{way}: {finding}");
        }
    }
}

struct Unpin(String);

impl Drop for Unpin {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_sockwarden-probe"))
            .args(["uninstall", "--pin-dir", &self.0])
            .output();
    }
}

#[test]
fn enforce_stops_containers_by_every_path_spares_the_host_and_outlives_the_probe() {
    if !environment_ready() {
        return;
    }
    common::register_cleanup();
    let dir = PathBuf::from(format!("/tmp/sw-enforce-{}", std::process::id()));
    let pin_dir = format!("/sys/fs/bpf/sw-test-{}", std::process::id());
    // A failed run must not leave programs enforcing on sockets a later test may reuse the
    // inode numbers of.
    let _unpin = Unpin(pin_dir.clone());
    let docker = Docker::start(&dir);
    docker.build_image();
    let args = vec![
        "--standalone".to_string(),
        "--no-default-sockets".into(),
        "--socket".into(),
        format!("{}=docker", docker.sock.display()),
        "--enforce".into(),
        "--pin-dir".into(),
        pin_dir.clone(),
    ];
    let probe = Probe::start(&args, &dir);
    let log = probe.log();
    assert!(log.contains("enforcing"), "{log}");

    // The host's own client is never refused.
    let version = docker.cli(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        version.status.success(),
        "host docker CLI refused: {version:?}"
    );

    assert_every_way_in_is_stopped(&docker, &dir, Some(&probe));

    // A container's own unrelated socket, even one called docker.sock, is not touched.
    let decoy = attack(
        &docker,
        &dir,
        &[],
        &["/swclient", "decoy", "/tmp/docker.sock"],
    );
    assert_eq!(decoy.code, Some(0), "decoy: {:?}", decoy.output);

    // The probe dies without cleaning up: the pinned programs keep enforcing.
    probe.kill();
    let pins = std::fs::read_dir(&pin_dir)
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    assert!(pins >= 1, "nothing pinned under {pin_dir}");
    assert_every_way_in_is_stopped(&docker, &dir, None);
    // Once no probe has attributed cgroups for longer than the heartbeat allows, a new
    // cgroup elsewhere on the host would be let through (a restarted host service must not be
    // locked out); but new containers below /docker, where runtimes make them, stay refused.
    std::thread::sleep(std::time::Duration::from_nanos(
        probe_common::HEARTBEAT_STALE_NS + 1_000_000_000,
    ));
    assert_every_way_in_is_stopped(&docker, &dir, None);
    let version = docker.cli(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        version.status.success(),
        "host docker CLI refused while no probe ran"
    );

    // A new probe takes over from the pins it finds (and removes them once its own enforce).
    let probe = Probe::start(&args, &dir);
    assert!(
        probe.log().contains("took over enforcement"),
        "{}",
        probe.log()
    );
    assert_every_way_in_is_stopped(&docker, &dir, Some(&probe));
    probe.kill();

    // Uninstall: nothing stays enforced.
    let out = Command::new(env!("CARGO_BIN_EXE_sockwarden-probe"))
        .args(["uninstall", "--pin-dir", &pin_dir])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!std::path::Path::new(&pin_dir).exists());
    let free = attack(
        &docker,
        &dir,
        &[&format!("{}:/var/run/docker.sock", docker.sock.display())],
        &["/swclient", "create", "/var/run/docker.sock"],
    );
    assert_eq!(free.code, Some(0), "after uninstall: {:?}", free.output);
    assert!(free.output.contains("HTTP/1.0 201"), "{:?}", free.output);
    assert!(
        escape_created(&docker),
        "after uninstall the request reaches the daemon"
    );
    docker.cli(&["rm", "-f", "sw-escape"]);
}
