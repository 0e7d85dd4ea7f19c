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
