//! Where the services (broker, edge, gateway, demo) log: stderr by default, or files in a
//! directory, one per day (`<service>.log.YYYY-MM-DD`), written by a background thread so a slow
//! disk never holds a session up. Text, or JSON lines when asked. Colour codes only on a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (time, level, target, fields, spans).
    Json,
}

/// Logging options of the long-running commands.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// Write the log to files in DIR, one per day (`<command>.log.YYYY-MM-DD`), instead of
    /// stderr.
    #[arg(long, env = "SALLYPORT_LOG_DIR", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// How each line is written.
    #[arg(long, env = "SALLYPORT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Keeps the background writer alive: drop it last, so buffered lines reach the file.
pub struct Guard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// Install the global subscriber. `service` names the log files; `default_level` applies unless
/// `RUST_LOG` says otherwise.
pub fn init(service: &str, default_level: &str, args: &LogArgs) -> anyhow::Result<Guard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let (writer, guard, ansi) = match &args.log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create the log directory {}: {e}", dir.display())
            })?;
            let files = tracing_appender::rolling::daily(dir, format!("{service}.log"));
            let (writer, guard) = tracing_appender::non_blocking(files);
            (
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(writer),
                Some(guard),
                false,
            )
        }
        None => (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
            None,
            std::io::stderr().is_terminal(),
        ),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let layer = match args.log_format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    Ok(Guard(guard))
}
