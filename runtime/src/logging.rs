//! Logs on stderr, as text or JSON lines; `RUST_LOG` filters, `info` by default.
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The logging flags every sockwarden command takes (`#[command(flatten)]`).
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the global subscriber these flags ask for.
    pub fn init(&self) {
        init(self.log_format)
    }
}

/// Installs the global subscriber; colours only when stderr is a terminal.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
