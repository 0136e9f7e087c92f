//! Logging: `tracing` to stderr, human or JSON (`[log]` in the config), through a bounded
//! buffer drained by its own thread.
//!
//! # Backpressure policy
//! Logs never hold up the pipeline: a line is handed to the writer thread through a buffer of
//! [`BUFFERED_LINES`]; when the consumer of stderr is slower than the service (a full pipe, a
//! stalled log shipper) and the buffer is full, new lines are **dropped** and counted
//! (`quantrac_log_lines_dropped_total`). Logs are a narrative; the authoritative records of
//! what was rejected and why are the quarantine and the counters, which are never dropped.
//!
//! # Untrusted text
//! Field values often come from outside (a station id from a payload, a topic, a token name):
//! the human format writes every field through [`crate::text::escape`], so a newline or an
//! ANSI escape in a value shows as `\n` or `\u{1b}` and cannot forge a line or drive a
//! terminal. The JSON format escapes them as JSON does.

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{self, Writer};
use tracing_subscriber::fmt::FormatFields;
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
        LogFormat::Human => builder.fmt_fields(human_fields()).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| Error::Init(e.to_string()))?;
    Ok(Logging { _writer: guard })
}

/// The fields of the human format (`message` bare, others as `name=value`), each value
/// escaped by [`crate::text::escape`].
pub fn human_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    format::debug_fn(
        |w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
            let text = format!("{value:?}");
            let text = crate::text::escape(&text);
            match field.name() {
                "message" => write!(w, "{text}"),
                name => write!(w, "{}={text}", name.strip_prefix("r#").unwrap_or(name)),
            }
        },
    )
    .delimited(" ")
}

/// Log lines dropped because the buffer was full (0 before [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer collecting everything into one buffer.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Collect {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_station_id_with_a_newline_and_ansi_escapes_cannot_forge_a_human_log_line() {
        let out = Collect::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .fmt_fields(human_fields())
            .finish();
        let station = "S1\n2026-11-30T00:00:00.000000Z  INFO quantrac: all good \x1b[2J";
        let topic = "quantrac/\x1b]0;pwned\x07/up";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(station = %station, topic, note = ?station, "record rejected");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text}");
        assert!(text.contains("station=S1\\n2026-11-30"), "{text}");
        assert!(text.contains("\\u{1b}[2J"), "{text}");
        assert!(text.contains("record rejected"), "{text}");
    }
}
