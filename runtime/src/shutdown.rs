//! The signals that ask a sockwarden process to stop: SIGTERM (the kubelet) and SIGINT.

/// Resolves at the first SIGTERM or SIGINT; fails only when the handlers cannot be installed.
pub async fn signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
