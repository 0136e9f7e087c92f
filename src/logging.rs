//! Logging: `tracing` to stderr, human or JSON (`[log]` in the config), through a bounded
//! buffer drained by its own thread.
//!
//! # Backpressure policy
//! Logs never hold up the pipeline: a line is handed to the writer thread through a buffer of
//! [`BUFFERED_LINES`]; when the consumer of stderr is slower than the service (a full pipe, a
//! stalled log shipper) and the buffer is full, new lines are **dropped** and counted
//! (`quantrac_log_lines_dropped_total`). Logs are a narrative; the authoritative records of
//! what was rejected and why are the quarantine and the counters, which are never dropped.

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Lines waiting for the writer thread at most (a few MB at the longest lines).
pub const BUFFERED_LINES: usize = 16_384;

/// Lines dropped so far, once logging is set up.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log.level `{level}` is not a valid filter: {source}")]
    Filter {
        level: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("logging is already set up: {0}")]
    Init(String),
}

/// Keeps the writer thread; dropping it flushes what is buffered.
#[must_use = "logs are flushed when this is dropped: keep it until the process ends"]
pub struct Logging {
    _writer: WorkerGuard,
}

/// Sets up the process's logging. `RUST_LOG`, when set, replaces `log.level`.
pub fn init(log: &LogConfig) -> Result<Logging, Error> {
    let spec = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => spec,
        _ => log.level.clone(),
    };
    let filter = EnvFilter::try_new(&spec).map_err(|source| Error::Filter {
        level: spec.clone(),
        source,
    })?;
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("quantrac-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    // Logs go to stderr: stdout is for what a command prints (check-config, demo).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| Error::Init(e.to_string()))?;
    Ok(Logging { _writer: guard })
}

/// Log lines dropped because the buffer was full (0 before [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}
