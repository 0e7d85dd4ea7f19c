//! `sockwarden-probe`: the node agent. Catches processes in containers that reach for a
//! container runtime's UNIX socket, and reports each as a TRC-1019 finding.

use clap::{Parser, Subcommand};
use probe::run;
use runtime::logging::LogArgs;

#[derive(Parser)]
#[command(
    name = "sockwarden-probe",
    version,
    about = "Detects container-runtime socket abuse from containers (TRC-1019 and beyond)"
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch this node and print findings on stdout (standalone, no cluster needed).
    Run(Box<run::RunArgs>),
    /// Check that a fmod_ret program (what fentry-backend enforcement will use) loads and
    /// attaches on the security hooks of this kernel (attached for a moment, doing nothing).
    CheckFmodRet {
        #[arg(long, default_value = "/sys/kernel/btf/vmlinux")]
        btf: std::path::PathBuf,
    },
    /// Remove the pinned enforcement a probe leaves while it is not running: the node stops
    /// enforcing (run this after stopping the probe for good).
    Uninstall {
        #[arg(long, default_value = probe::backend::pin::DEFAULT_DIR, env = "SOCKWARDEN_PIN_DIR")]
        pin_dir: std::path::PathBuf,
    },
    /// The self-test's child: connects once to the probe's canary socket.
    #[command(name = "canary-connect", hide = true)]
    CanaryConnect { path: std::path::PathBuf },
}

fn check_fmod_ret(btf: &std::path::Path) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for function in [
        "security_file_open",
        "security_unix_stream_connect",
        "security_unix_may_send",
    ] {
        match probe::backend::fmod_ret::check_attaches(btf, function) {
            Ok(()) => println!("fmod_ret on {function}: loads and attaches"),
            Err(e) => {
                println!("fmod_ret on {function}: refused: {e}");
                failed.push(function);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("fmod_ret programs do not attach to {}", failed.join(", "))
    }
}

fn uninstall(dir: &std::path::Path) -> anyhow::Result<()> {
    let removed = probe::backend::pin::remove_all(dir)
        .map_err(|e| anyhow::anyhow!("removing {}: {e}", dir.display()))?;
    println!(
        "removed {removed} pinned link(s) from {}: nothing stays enforced once no probe runs",
        dir.display()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sockwarden-probe: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => runtime.block_on(run::run(*args)),
        Command::CheckFmodRet { btf } => check_fmod_ret(&btf),
        Command::CanaryConnect { path } => probe::selftest::connect(&path),
        Command::Uninstall { pin_dir } => uninstall(&pin_dir),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockwarden-probe: {}", probe::backend::sentence(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
