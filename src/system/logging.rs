//! Logging set-up shared by the binaries: `RUST_LOG` wins, otherwise
//! `-v`/`-q` move the level up or down from `info`.

use tracing_subscriber::EnvFilter;

/// Installs a stderr subscriber. `verbosity` is the number of `-v` minus
/// the number of `-q`.
pub fn init(verbosity: i8, default_level: &str) {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => default_level,
        1 => "debug",
        2..=i8::MAX => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("micropay={level},{level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
