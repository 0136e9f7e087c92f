//! The watched directory: for centers that keep their existing FTP server, Circular 10 files
//! written under `ingest_dir.path` (at any depth, e.g. one folder per station) are ingested
//! like FTP uploads.
//!
//! # Layout and life of a file
//! ```text
//! <path>/DN/DN_AMATA_WW01_20261126100500.txt      appears (written by the FTP server)
//!   │ size and mtime unchanged for `settle`           (still being written otherwise)
//!   ▼ rename
//! <path>/processing/DN/DN_AMATA_WW01_...txt        ingested, durable (or durably refused)
//!   ▼ rename
//! <path>/done/DN/...txt                            stored
//! <path>/rejected/DN/...txt + ...txt.reason        refused; the reason beside it
//! ```
//! The relative path is kept. Only names ending in `.txt` are taken (servers that upload
//! under a temporary name and rename at the end are picked up after the rename); names
//! starting with `.` and the three folders above are never scanned.
//!
//! # Crash safety
//! A file is moved on from `processing/` only once its outcome is durable; at start, and at
//! every poll, whatever is in `processing/` is ingested (again). The store keeps each reading
//! once (`(station, param, ts)`), so a file is never half-ingested nor stored twice; at worst
//! a refused file gets a second quarantine entry. A transient refusal (store not durable,
//! stopping) leaves the file in `processing/` for the next poll.
//!
//! Polling, not inotify: it works on network file systems and needs no dependency; a poll
//! reads directory entries only (no file contents) unless a file settled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::IngestDirConfig;

use super::intake::{Intake, Refusal, Source};
use super::Error;

pub const PROCESSING: &str = "processing";
pub const DONE: &str = "done";
pub const REJECTED: &str = "rejected";

/// What a poll sees of a file: size and modification time.
pub type Stamp = (u64, Option<SystemTime>);

/// Decides when a file has stopped changing. Pure (the clock is a parameter), so that its
/// timing is tested with a paused clock.
#[derive(Debug)]
pub struct Settler {
    settle: Duration,
    seen: HashMap<PathBuf, (Stamp, Instant)>,
}

impl Settler {
    pub fn new(settle: Duration) -> Settler {
        Settler {
            settle,
            seen: HashMap::new(),
        }
    }

    /// Records `stamp` for `path` at `now`; true once it has been the same for `settle`.
    pub fn observe(&mut self, path: &Path, stamp: Stamp, now: Instant) -> bool {
        match self.seen.get_mut(path) {
            Some((last, since)) if *last == stamp => now.duration_since(*since) >= self.settle,
            Some(entry) => {
                *entry = (stamp, now);
                false
            }
            None => {
                self.seen.insert(path.to_owned(), (stamp, now));
                self.settle.is_zero()
            }
        }
    }

    /// Forgets files not seen in the last poll (taken, or deleted by someone else).
    pub fn retain(&mut self, present: &[PathBuf]) {
        self.seen.retain(|p, _| present.contains(p));
    }
}

/// Runs until `shutdown`: recovers `processing/`, then polls.
pub async fn run(
    config: IngestDirConfig,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let root = config.path.clone();
    for dir in [PROCESSING, DONE, REJECTED] {
        tokio::fs::create_dir_all(root.join(dir))
            .await
            .map_err(|source| Error::Directory {
                path: root.join(dir),
                source,
            })?;
    }
    tracing::info!(path = %root.display(), poll = ?config.poll_interval, settle = ?config.settle, "watching a directory for Circular 10 files");
    let mut settler = Settler::new(config.settle);
    let mut every = tokio::time::interval(config.poll_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = every.tick() => {}
        }
        if let Err(e) = poll(&root, &config, &intake, &mut settler, &shutdown).await {
            tracing::warn!(path = %root.display(), error = %e, "watched directory poll failed");
        }
    }
}

/// One poll: finish `processing/`, then take the files that settled.
pub async fn poll(
    root: &Path,
    config: &IngestDirConfig,
    intake: &Intake,
    settler: &mut Settler,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    for rel in walk(&root.join(PROCESSING), false).await? {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        finish(root, &rel, config, intake).await?;
    }
    let files = walk(root, true).await?;
    let now = Instant::now();
    let mut ready = Vec::new();
    for rel in &files {
        let meta = match tokio::fs::metadata(root.join(rel)).await {
            Ok(meta) => meta,
            Err(_) => continue,
        };
        if settler.observe(rel, (meta.len(), meta.modified().ok()), now) {
            ready.push(rel.clone());
        }
    }
    settler.retain(&files);
    for rel in ready {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let into = root.join(PROCESSING).join(&rel);
        create_parent(&into).await?;
        match tokio::fs::rename(root.join(&rel), &into).await {
            Ok(()) => finish(root, &rel, config, intake).await?,
            // Taken or removed by someone else meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ingests `processing/<rel>` and moves it to `done/` or `rejected/` once the outcome is
/// durable; leaves it on a transient refusal.
async fn finish(
    root: &Path,
    rel: &Path,
    config: &IngestDirConfig,
    intake: &Intake,
) -> std::io::Result<()> {
    let path = root.join(PROCESSING).join(rel);
    let mut body = Vec::new();
    tokio::fs::File::open(&path)
        .await?
        .take(config.max_file_bytes as u64 + 1)
        .read_to_end(&mut body)
        .await?;
    let truncated = (body.len() > config.max_file_bytes).then(|| {
        body.truncate(config.max_file_bytes);
        config.max_file_bytes
    });
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let outcome = intake
        .ingest(Source::Directory, &name, &body, truncated)
        .await;
    let to = match &outcome {
        Ok(_) => root.join(DONE).join(rel),
        Err(refusal) if refusal.is_transient() => return Ok(()),
        Err(refusal) => {
            let to = root.join(REJECTED).join(rel);
            create_parent(&to).await?;
            // The reason first: a crash between the two leaves the file in processing/, to
            // be refused again, never a rejected file without its reason.
            tokio::fs::write(reason_path(&to), reason_text(refusal)).await?;
            to
        }
    };
    create_parent(&to).await?;
    tokio::fs::rename(&path, &to).await
}

fn reason_text(refusal: &Refusal) -> String {
    format!("{}\n{refusal}\n", refusal.label())
}

/// `<file>.reason` beside a rejected file.
pub fn reason_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".reason");
    PathBuf::from(name)
}

async fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) => tokio::fs::create_dir_all(parent).await,
        None => Ok(()),
    }
}

/// `.txt` files under `dir` (relative paths); at the top of the watched root (`top`), the
/// three working folders are skipped. Hidden names are skipped everywhere.
async fn walk(dir: &Path, top: bool) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries = match tokio::fs::read_dir(dir.join(&rel)).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let text = name.to_string_lossy();
            if text.starts_with('.') {
                continue;
            }
            if top && rel.as_os_str().is_empty() && [PROCESSING, DONE, REJECTED].contains(&&*text) {
                continue;
            }
            let kind = entry.file_type().await?;
            let child = rel.join(&name);
            if kind.is_dir() {
                stack.push(child);
            } else if kind.is_file() && text.to_ascii_lowercase().ends_with(".txt") {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_file_is_taken_only_after_it_stayed_unchanged_for_the_settle_time() {
        let mut s = Settler::new(Duration::from_secs(3));
        let p = Path::new("a.txt");
        let t = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert!(!s.observe(p, (10, Some(t(1))), Instant::now()));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!s.observe(p, (10, Some(t(1))), Instant::now()), "2 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.observe(p, (10, Some(t(1))), Instant::now()), "3 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_still_growing_restarts_its_settle_time() {
        let mut s = Settler::new(Duration::from_secs(3));
        let p = Path::new("a.txt");
        assert!(!s.observe(p, (10, None), Instant::now()));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!s.observe(p, (20, None), Instant::now()), "it grew");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            !s.observe(p, (20, None), Instant::now()),
            "2 s since it grew"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.observe(p, (20, None), Instant::now()));
        s.retain(&[]);
        assert!(
            !s.observe(p, (20, None), Instant::now()),
            "forgotten once gone"
        );
    }

    #[test]
    fn the_reason_file_sits_beside_the_rejected_file() {
        assert_eq!(
            reason_path(Path::new("/x/rejected/DN/a.txt")),
            Path::new("/x/rejected/DN/a.txt.reason")
        );
    }
}
