//! The operator binary at its edges: it starts, and without cluster credentials it fails
//! with one clear sentence instead of hanging or panicking.
use std::process::Command;

#[test]
fn without_a_kubeconfig_it_exits_nonzero_and_says_why() {
    let home = std::env::temp_dir().join("sockwarden-operator-no-kubeconfig");
    let _ = std::fs::create_dir_all(&home);
    let out = Command::new(env!("CARGO_BIN_EXE_sockwarden-operator"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("HOME", &home)
        .env("KUBECONFIG", home.join("missing-kubeconfig"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach a Kubernetes API"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn version_and_help_work() {
    let out = Command::new(env!("CARGO_BIN_EXE_sockwarden-operator"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sockwarden-operator "));
    let out = Command::new(env!("CARGO_BIN_EXE_sockwarden-operator"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--namespace",
        "--probe-image",
        "--no-leader-election",
        "--listen",
    ] {
        assert!(help.contains(flag), "{flag} missing from help");
    }
}

fn settings_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sockwarden-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_probe_settings_stop_run_and_render_daemonset_naming_the_field() {
    let bad = settings_file(
        "bad.yaml",
        "tolerations: [{opertor: Exists}]\nnodeSelector: {}\n",
    );
    for sub in ["run", "render-daemonset"] {
        let out = Command::new(env!("CARGO_BIN_EXE_sockwarden-operator"))
            .args([sub, "--probe-settings"])
            .arg(&bad)
            .args(["--listen", "127.0.0.1:0"])
            .env_clear()
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--probe-settings"), "{sub}: {err}");
        assert!(err.contains("tolerations[0].opertor"), "{sub}: {err}");
        assert!(
            !err.contains("cannot reach a Kubernetes API"),
            "{sub}: refused before connecting: {err}"
        );
        assert!(out.stdout.is_empty(), "{sub}: nothing rendered");
    }
    let missing = Command::new(env!("CARGO_BIN_EXE_sockwarden-operator"))
        .args([
            "render-daemonset",
            "--probe-settings",
            "/nonexistent/settings.yaml",
        ])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read probe settings"));
}

#[test]
fn render_daemonset_shows_the_probe_settings() {
    let good = settings_file(
        "good.yaml",
        "nodeSelector: {kubernetes.io/os: linux}\nhttpOutput: {url: 'http://collector.obs:8080/in'}\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sockwarden-operator"))
        .args(["render-daemonset", "--probe-settings"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("kubernetes.io/os: linux"), "{yaml}");
    assert!(
        yaml.contains("--http-output=http://collector.obs:8080/in"),
        "{yaml}"
    );
}
