//! Plays a [`Scenario`](crate::scenario::Scenario) live: one step per interval, each record
//! stamped with the wall clock at the moment it is sent.

use std::time::Duration;

use super::{Result, RunReport};
use crate::encode::Encoding;
use crate::fleet::{ParamSpec, StationSpec};
use crate::publish::Publisher;
use crate::scenario::Step;

/// Sends `steps` for `station`'s `param`, `interval` apart, and waits for the broker's
/// acknowledgements.
pub async fn play(
    publisher: &Publisher,
    station: &StationSpec,
    param: &ParamSpec,
    encoding: Encoding,
    steps: &[Step],
    interval: Duration,
) -> Result<RunReport> {
    let started = tokio::time::Instant::now();
    let mut report = RunReport::default();
    // Records are numbered by the wall clock in milliseconds (and at least one apart), so
    // that scenarios played one after another on a station keep its counter increasing.
    let mut seq: u64 = 0;
    for (i, step) in steps.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        match step {
            Step::Silence(n) => {
                let n = u32::try_from(*n).unwrap_or(u32::MAX).saturating_sub(1);
                tokio::time::sleep(interval.saturating_mul(n)).await;
            }
            Step::Status(online) => {
                publisher
                    .publish_status(&station.zone, &station.id, *online)
                    .await?;
            }
            Step::Reading { .. } => {
                let now = chrono::Utc::now().timestamp_millis();
                seq = (seq + 1).max(u64::try_from(now).unwrap_or(0));
                if let Some(record) = step.record(station, param, now, seq) {
                    publisher
                        .publish_records(
                            &station.zone,
                            &station.id,
                            encoding,
                            std::slice::from_ref(&record),
                        )
                        .await?;
                    report.messages += 1;
                    report.records += 1;
                    report.readings += 1;
                }
            }
        }
    }
    publisher.wait_acked().await?;
    report.elapsed = started.elapsed();
    Ok(report)
}
