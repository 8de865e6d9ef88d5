//! Logging set-up shared by Shoal's binaries: `tracing` to stderr, filtered by `RUST_LOG` or
//! the binary's default, with colours only on a terminal.

/// The default filter of the cluster's processes: their own news, the libraries' warnings.
pub const PROCESS_DEFAULT: &str = "info,ractor_cluster=warn,quinn=warn";

/// Installs the subscriber; `default` is the filter when `RUST_LOG` is unset.
pub fn init(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
