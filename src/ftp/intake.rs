//! One Circular 10 file in, durably stored or durably refused: the logic the FTP endpoint and
//! the watched directory share.
//!
//! Checks, in order: quantrac is not stopping, the size bound, the file name, the station
//! (registry), the uploader's rights (FTP only), then the file body goes through the same
//! pipeline as an MQTT `tt10` message (`quantrac/v1/{zone}/{station}/telemetry/tt10`). A file
//! refused by the checks is quarantined whole (reason `malformed_payload`, `unknown_station`,
//! `not_authorized` or `too_large`); a file of which the pipeline accepted no reading is
//! refused too (its rejections are already quarantined). Either way the refusal is returned
//! only once the quarantine entry is durable, and a file is reported accepted only once its
//! readings are: a source may answer its device then, and not before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::handoff::{self, Handoff};
use crate::metrics as m;
use crate::mqtt::devices::{Device, Devices};
use crate::notify::Notifier;
use crate::pipeline::{Pipeline, SharedRegistry};
use crate::quarantine::{Counters, Reason, Rejected, Rejection};
use crate::storage::Store;
use crate::telemetry::{Encoding, Timestamp};

use super::name;

/// The device list, swapped on reload (shared with the FTP authenticator).
pub type SharedDevices = Arc<ArcSwap<Devices>>;

/// Where a file came from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Uploaded over FTP by this (authenticated) device.
    Ftp(&'a Device),
    /// Found in the watched directory (the other FTP server authenticated its uploader).
    Directory,
}

impl Source<'_> {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Source::Ftp(_) => "ftp",
            Source::Directory => "dir",
        }
    }

    fn origin(&self, file: &str) -> String {
        match self {
            Source::Ftp(device) => format!("ftp:{}/{file}", device.username),
            Source::Directory => format!("dir:{file}"),
        }
    }
}

/// A file whose readings are durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub station: Arc<str>,
    pub readings: usize,
    /// Lines or readings of the file that were quarantined.
    pub rejected: usize,
}

/// Why a file was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("file name: {0}")]
    FileName(String),
    #[error("unknown station: {0}")]
    UnknownStation(String),
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    #[error("too large: the file exceeds {max} bytes")]
    TooLarge { max: usize },
    #[error("no usable reading: {0}")]
    Unusable(String),
    #[error("not stored (send it again): {0}")]
    NotDurable(String),
    #[error("quantrac is stopping (send it again)")]
    Stopping,
}

impl Refusal {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::FileName(_) => "file_name",
            Refusal::UnknownStation(_) => "unknown_station",
            Refusal::NotAuthorized(_) => "not_authorized",
            Refusal::TooLarge { .. } => "too_large",
            Refusal::Unusable(_) => "unusable",
            Refusal::NotDurable(_) => "not_durable",
            Refusal::Stopping => "stopping",
        }
    }

    /// The file may be accepted if sent again (nothing was decided about it).
    pub fn is_transient(&self) -> bool {
        matches!(self, Refusal::NotDurable(_) | Refusal::Stopping)
    }
}

/// What the intake needs; cheap to share.
pub struct Intake {
    pipeline: Arc<Pipeline>,
    store: Arc<dyn Store>,
    notifier: Arc<Notifier>,
    registry: SharedRegistry,
    devices: SharedDevices,
    counters: Arc<Counters>,
    topic_prefix: String,
    closing: AtomicBool,
    /// Files being ingested now.
    inflight: watch::Sender<usize>,
}

/// Counts a file in flight while alive.
struct InFlight<'a>(&'a watch::Sender<usize>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Intake {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pipeline: Arc<Pipeline>,
        store: Arc<dyn Store>,
        notifier: Arc<Notifier>,
        registry: SharedRegistry,
        devices: SharedDevices,
        counters: Arc<Counters>,
        topic_prefix: String,
    ) -> Intake {
        Intake {
            pipeline,
            store,
            notifier,
            registry,
            devices,
            counters,
            topic_prefix,
            closing: AtomicBool::new(false),
            inflight: watch::Sender::new(0),
        }
    }

    pub fn devices(&self) -> &SharedDevices {
        &self.devices
    }

    /// Refuses new files ([`Refusal::Stopping`]) and resolves once the files in flight are
    /// done (they still reach the store, which stops after the intake).
    pub async fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let mut rx = self.inflight.subscribe();
        let _ = rx.wait_for(|&n| n == 0).await;
    }

    /// Ingests `body`, the file `file` (its base name) from `source`; `truncated` says the
    /// body was cut at `max` bytes. Returns once the outcome is durable.
    pub async fn ingest(
        &self,
        source: Source<'_>,
        file: &str,
        body: &[u8],
        truncated: Option<usize>,
    ) -> Result<Accepted, Refusal> {
        self.inflight.send_modify(|n| *n += 1);
        let _inflight = InFlight(&self.inflight);
        let started = Instant::now();
        let outcome = if self.closing.load(Ordering::SeqCst) {
            Err(Refusal::Stopping)
        } else {
            self.decide(source, file, body, truncated).await
        };
        let label = source.label();
        metrics::counter!(m::FILE_BYTES_TOTAL, m::LABEL_SOURCE => label)
            .increment(body.len() as u64);
        match &outcome {
            Ok(accepted) => {
                metrics::counter!(m::FILES_ACCEPTED_TOTAL, m::LABEL_SOURCE => label).increment(1);
                metrics::histogram!(m::FILE_DURABLE_SECONDS, m::LABEL_SOURCE => label)
                    .record(started.elapsed().as_secs_f64());
                tracing::debug!(file, station = %accepted.station, readings = accepted.readings, "file stored");
            }
            Err(refusal) => {
                metrics::counter!(m::FILES_REFUSED_TOTAL, m::LABEL_SOURCE => label, m::LABEL_REASON => refusal.label())
                    .increment(1);
                tracing::warn!(file, source = label, reason = %refusal, "file refused");
            }
        }
        outcome
    }

    async fn decide(
        &self,
        source: Source<'_>,
        file: &str,
        body: &[u8],
        truncated: Option<usize>,
    ) -> Result<Accepted, Refusal> {
        let now = Timestamp::now();
        // A refusal keeps the whole file (bounded by the size limit) in the dead-letter
        // store, and a short excerpt in the entry.
        let refuse = |reason: Reason, station: Option<&str>, refusal: Refusal| {
            let rejection = Rejection {
                reason,
                station: station.map(str::to_owned),
                param: None,
                ts: None,
                value: None,
                detail: refusal.to_string(),
            };
            let rejected = Rejected::new(
                now,
                source.origin(file),
                Some(Encoding::Tt10),
                // A name outside the registry shares the "no station" part of the quarantine.
                station
                    .filter(|_| reason != Reason::UnknownStation)
                    .map(str::to_owned),
                body,
                self.pipeline.excerpt_bytes(),
                [rejection],
            );
            self.counters.count(reason);
            async move {
                let handoff = handoff::quarantine(&*self.store, rejected)
                    .await
                    .map_err(|e| Refusal::NotDurable(e.to_string()))?;
                self.settle(handoff).await?;
                Err(refusal)
            }
        };
        if let Some(max) = truncated {
            return refuse(Reason::TooLarge, None, Refusal::TooLarge { max }).await;
        }
        let parsed = match name::parse(file) {
            Ok(parsed) => parsed,
            Err(e) => {
                return refuse(
                    Reason::MalformedPayload,
                    None,
                    Refusal::FileName(e.to_string()),
                )
                .await
            }
        };
        let registry = self.registry.load_full();
        let Some(station) = parsed.resolve(&registry) else {
            let [joined, code] = parsed.candidates();
            let detail = format!("neither `{joined}` nor `{code}` is a station of the registry");
            return refuse(
                Reason::UnknownStation,
                Some(&joined),
                Refusal::UnknownStation(detail),
            )
            .await;
        };
        if let Source::Ftp(device) = source {
            let devices = self.devices.load();
            let allowed = devices
                .current(device)
                .is_some_and(|d| d.stations.contains(&*station.id));
            if !allowed {
                let detail = format!(
                    "device `{}` may not upload for station `{}`",
                    device.username, station.id
                );
                return refuse(
                    Reason::NotAuthorized,
                    Some(&station.id),
                    Refusal::NotAuthorized(detail),
                )
                .await;
            }
        }
        let topic = self.topic(&station.zone, &station.id);
        let handoff = handoff::submit(&self.pipeline, &*self.store, &topic, body, now)
            .await
            .map_err(|e| Refusal::NotDurable(e.to_string()))?;
        let (readings, rejected) = (handoff.accepted, handoff.rejected);
        let first = handoff.first_rejection.clone();
        self.settle(handoff).await?;
        if readings == 0 {
            return Err(Refusal::Unusable(
                first.unwrap_or_else(|| "the file holds no reading".to_owned()),
            ));
        }
        Ok(Accepted {
            station: station.id.clone(),
            readings,
            rejected,
        })
    }

    async fn settle(&self, handoff: Handoff) -> Result<(), Refusal> {
        if handoff.settle(&self.notifier).await {
            Ok(())
        } else {
            Err(Refusal::NotDurable(
                "the store did not confirm the write".to_owned(),
            ))
        }
    }

    fn topic(&self, zone: &str, station: &str) -> String {
        let root = format!("quantrac/v1/{zone}/{station}/telemetry/{}", Encoding::Tt10);
        if self.topic_prefix.is_empty() {
            root
        } else {
            format!("{}/{root}", self.topic_prefix)
        }
    }
}
