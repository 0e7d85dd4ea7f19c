//! The binary's behaviour at its edges: bad input, missing privileges, clean shutdown.
mod common;

use std::{os::unix::process::CommandExt, process::Command, time::Duration};

/// Tests that attach a probe run one at a time: one counts the programs attached.
static ATTACHED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn probe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sockwarden-probe"))
}

#[test]
fn version_and_help_work_without_privileges() {
    let out = probe().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sockwarden-probe "));
    let out = probe().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--socket",
        "--host-root",
        "--include-host",
        "--detect-open",
        "--format",
        "--listen",
        "--backend",
        "--http-output",
        "--http-output-queue",
        "--http-output-header",
    ] {
        assert!(help.contains(flag), "run --help lacks {flag}");
    }
}

#[test]
fn malformed_socket_flag_is_refused_with_a_reason() {
    let out = probe()
        .args(["run", "--socket", "relative.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be absolute"));
}

#[test]
fn without_privileges_it_exits_nonzero_with_one_sentence() {
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: the check applies directly.
        let out = probe().arg("run").output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs root"));
        return;
    }
    let mut cmd = probe();
    cmd.arg("run");
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}

#[test]
fn missing_btf_is_named_with_the_fix() {
    if !common::environment_ready() {
        return;
    }
    let out = probe()
        .args(["run", "--btf", "/nonexistent/vmlinux"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
}

#[test]
fn forcing_an_unavailable_backend_fails_clearly() {
    if !common::environment_ready() {
        return;
    }
    let out = probe().args(["run", "--backend", "lsm"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--backend lsm cannot run on this node"));
}

#[test]
fn sigterm_detaches_and_exits_zero() {
    if !common::environment_ready() {
        return;
    }
    let _one_at_a_time = ATTACHED.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let probe = common::Probe::start(&[], dir.path());
    assert_eq!(
        our_programs(),
        1,
        "the probe's connect program is attached while it runs"
    );
    let status = probe.terminate();
    assert!(status.success(), "exit status {status:?}");
    // The kernel frees a program once nothing holds it: gone means detached.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while our_programs() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(our_programs(), 0, "programs left attached after SIGTERM");
}

#[test]
fn the_probe_proves_it_sees_and_says_when_it_has_nothing_to_watch() {
    if !common::environment_ready() {
        return;
    }
    let _one_at_a_time = ATTACHED.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir/docker.sock");
    let probe = common::Probe::start(
        &[
            "--no-default-sockets".into(),
            "--socket".into(),
            format!("{}=docker", missing.display()),
        ],
        dir.path(),
    );
    let (code, body) = common::http_get(&probe.listen, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("no runtime socket found on this node"),
        "{body}"
    );
    assert!(!body.contains("self-test"), "the self-test passed: {body}");
    assert_eq!(common::http_get(&probe.listen, "/healthz").unwrap().0, 200);
    let (_, metrics) = common::http_get(&probe.listen, "/metrics").unwrap();
    let last = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sockwarden_probe_self_test_last_success_timestamp_seconds "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        last > 0,
        "the canary connect came back through the kernel: {metrics}"
    );
    assert!(metrics.contains("sockwarden_probe_self_test_failures_total 0"));
    // The canary is never a finding, and the socket appears: ready.
    std::fs::create_dir_all(missing.parent().unwrap()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&missing).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while common::http_get(&probe.listen, "/readyz").unwrap().0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "never ready:\n{}",
            probe.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let findings = probe.findings.lock().unwrap().clone();
    assert!(findings.is_empty(), "{findings:?}");
    assert!(probe.terminate().success());
}

#[test]
fn a_findings_process_details_are_those_of_the_process_that_connected() {
    if !common::environment_ready() {
        return;
    }
    let _one_at_a_time = ATTACHED.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let probe = common::Probe::start(
        &[
            "--include-host".into(),
            "--no-default-sockets".into(),
            "--socket".into(),
            format!("{}=docker", sock.display()),
        ],
        dir.path(),
    );
    // This test process connects and stays alive: the kernel's start time for it matches
    // /proc, so its exe is read (a wrong start-time conversion would leave it empty).
    let _conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let me = std::process::id() as u64;
    let finding = probe
        .wait_for(Duration::from_secs(10), |f| f["process"]["pid"] == me)
        .unwrap_or_else(|| panic!("no finding for this process:\n{}", probe.log()));
    let exe = std::env::current_exe().unwrap();
    assert_eq!(
        finding["process"]["exe"],
        exe.display().to_string(),
        "{finding}"
    );
    assert!(probe.terminate().success());
}

#[test]
fn a_real_connect_reaches_the_http_output_as_a_falco_alert() {
    if !common::environment_ready() {
        return;
    }
    let _one_at_a_time = ATTACHED.lock().unwrap_or_else(|p| p.into_inner());
    // A receiver on 127.0.0.1, recording each POSTed body.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let record = received.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                record
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or_default());
                "ok"
            }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let probe = common::Probe::start(
        &[
            "--include-host".into(),
            "--no-default-sockets".into(),
            "--socket".into(),
            format!("{}=docker", sock.display()),
            "--http-output".into(),
            url,
        ],
        dir.path(),
    );
    let _conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let me = std::process::id() as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let alert = loop {
        let found = received
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["output_fields"]["proc.pid"] == me)
            .cloned();
        if let Some(v) = found {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no alert for this process reached the receiver:\n{}",
            probe.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let fields = &alert["output_fields"];
    assert_eq!(fields["fd.name"], sock.display().to_string(), "{alert}");
    assert_eq!(fields["evt.type"], "connect");
    assert_eq!(
        fields["proc.exepath"],
        std::env::current_exe().unwrap().display().to_string()
    );
    assert_eq!(fields["user.uid"], 0);
    assert_eq!(fields["container.id"], "host");
    assert!(fields["k8s.ns.name"].is_null());
    assert_eq!(alert["rule"], "Docker socket abuse detected");
    assert_eq!(alert["priority"], "Critical");
    assert_eq!(alert["source"], "sockwarden");
    assert!(alert["time"].as_str().unwrap().ends_with('Z'));
    // The same finding on stdout, in the one line shape.
    let line = probe
        .wait_for(Duration::from_secs(5), |f| f["process"]["pid"] == me)
        .expect("the stdout line");
    assert_eq!(line["count"], 1);
    assert!(line["kubernetes"].is_null());
    let (_, metrics) = common::http_get(&probe.listen, "/metrics").unwrap();
    assert!(
        metrics.lines().any(|l| l
            .starts_with(r#"sockwarden_probe_output_sent_total{output="http"} "#)
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(probe.terminate().success());
}

/// Loaded eBPF programs named like the probe's connect hook.
fn our_programs() -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some("sk_data_ready"))
        .count()
}
