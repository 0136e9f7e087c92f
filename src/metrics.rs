//! Metric names, in one place, and the Prometheus exporter behind `GET /metrics`.
//!
//! Names follow Prometheus conventions: counters end in `_total`, durations are in seconds.
//! Labels have low cardinality: never a station or parameter id.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The process-wide recorder, installed on first use (the `metrics` facade allows one per
/// process; several quantrac instances in one test process share it).
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Histograms are durations in seconds, except batch sizes in rows.
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(STORE_BATCH_ROWS.to_owned()),
                        &[1.0, 10.0, 100.0, 1000.0, 10_000.0, 50_000.0],
                    )
                })
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

/// 1 while the store commits, 0 while its commits fail (a full disk, an I/O error): `/readyz`
/// then says `store: "unwritable: ..."`.
pub const STORE_WRITABLE: &str = "quantrac_store_writable";
/// Bookkeeping writes to the security database that failed (a token's last-use time): the
/// request went on.
pub const SECURITY_DB_WRITE_ERRORS_TOTAL: &str = "quantrac_security_db_write_errors_total";
/// Event streams (`/api/v1/alerts/stream`) open now.
pub const API_STREAMS_OPEN: &str = "quantrac_api_streams_open";
/// Event streams refused with 429, by `reason` (`per_token`, `total`).
pub const API_STREAMS_REFUSED_TOTAL: &str = "quantrac_api_streams_refused_total";
/// Messages received from the broker, by `encoding` (`json`, `bincode`, `tt10`, `status`).
pub const MESSAGES_TOTAL: &str = "quantrac_messages_total";
/// Readings accepted by validation, by `encoding`.
pub const READINGS_ACCEPTED_TOTAL: &str = "quantrac_readings_accepted_total";
/// Rejections (every rejected reading, record, element, line or message), by `reason`.
pub const REJECTIONS_TOTAL: &str = "quantrac_rejections_total";
/// Quarantine entries evicted (with their payloads) by `quarantine.capacity`, from the
/// station holding the most.
pub const QUARANTINE_EVICTED_TOTAL: &str = "quantrac_quarantine_evicted_total";
/// Whole payloads dropped from the dead-letter store by `quarantine.dead_letter_max_bytes`
/// (their entries stay).
pub const DEAD_LETTERS_DROPPED_TOTAL: &str = "quantrac_dead_letters_dropped_total";
/// Readings committed by the store.
pub const STORE_READINGS_TOTAL: &str = "quantrac_store_readings_total";
/// Stored readings replaced by a different value or status for the same `(station, param,
/// ts)`; the earlier version is kept as a revision.
pub const READING_REVISIONS_TOTAL: &str = "quantrac_reading_revisions_total";
/// Rows per store transaction.
pub const STORE_BATCH_ROWS: &str = "quantrac_store_batch_rows";
/// Duration of one store transaction, in seconds.
pub const STORE_COMMIT_SECONDS: &str = "quantrac_store_commit_seconds";
/// Store write failures (the batch is spooled, or retried when there is no spool).
pub const STORE_ERRORS_TOTAL: &str = "quantrac_store_errors_total";
/// Bytes of writes held in the spool while the store is unreachable.
pub const SPOOL_BYTES: &str = "quantrac_spool_bytes";
/// Batches the full spool could not take (ingest stops acknowledging meanwhile).
pub const SPOOL_FULL_TOTAL: &str = "quantrac_spool_full_total";
/// Spool bytes skipped as unreadable, by `reason`: `torn_tail` (a crash during an append:
/// never acknowledged) or `damaged` (corruption: acknowledged writes lost).
pub const SPOOL_SKIPPED_BYTES_TOTAL: &str = "quantrac_spool_skipped_bytes_total";
/// Unreadable spool regions skipped (each a run of bytes between intact records), by `reason`.
pub const SPOOL_SKIPPED_REGIONS_TOTAL: &str = "quantrac_spool_skipped_regions_total";
/// 1 while connected to the MQTT broker, else 0.
pub const MQTT_CONNECTED: &str = "quantrac_mqtt_connected";
/// Reconnects to the external broker that found quantrac's session gone (the broker lost it,
/// and the messages published for quantrac meanwhile).
pub const MQTT_SESSIONS_LOST_TOTAL: &str = "quantrac_mqtt_sessions_lost_total";
/// Connection attempts after a loss.
pub const MQTT_RECONNECTS_TOTAL: &str = "quantrac_mqtt_reconnects_total";
/// Clients, messages or subscriptions the device endpoint refused, by `reason` (see
/// [`crate::endpoint::peer::Refusal`]).
pub const MQTT_REFUSED_TOTAL: &str = "quantrac_mqtt_refused_total";
/// Log lines dropped because stderr's consumer fell behind (see [`crate::logging`]).
pub const LOG_LINES_DROPPED_TOTAL: &str = "quantrac_log_lines_dropped_total";
/// MQTT acknowledgements released after the data was durable.
pub const MQTT_ACKS_TOTAL: &str = "quantrac_mqtt_acks_total";
/// Connections open on quantrac's MQTT device endpoint (devices and subscribers).
pub const MQTT_DEVICE_CONNECTIONS: &str = "quantrac_mqtt_device_connections";
/// QoS 0 messages taken by the device endpoint (best effort: no acknowledgement to hold).
pub const MQTT_QOS0_TOTAL: &str = "quantrac_mqtt_qos0_messages_total";
/// Record counters that did not go as a gateway's should, by `event`: `resent` (an unsigned
/// record sent again: stored once), `jump` (more than a million ahead: not counted as
/// missing), `reset` (an unsigned counter that started again near zero).
pub const RECORD_COUNTER_EVENTS_TOTAL: &str = "quantrac_record_counter_events_total";
/// Messages received beyond the inbound queue's room, waiting in order in the event loop
/// (bounded by the broker's window of unacknowledged messages; see [`crate::ingest`]).
pub const MQTT_OVERFLOW_MESSAGES: &str = "quantrac_mqtt_overflow_messages";
/// Messages ingest holds (received, not yet acknowledged or withheld).
pub const INGEST_HELD_MESSAGES: &str = "quantrac_ingest_held_messages";
/// 1 while ingest holds messages and has settled none for `mqtt.stall_after`, else 0.
pub const INGEST_STALLED: &str = "quantrac_ingest_stalled";
/// Acknowledgements withheld (data not durable, or the connection it came on is gone).
pub const MQTT_ACKS_WITHHELD_TOTAL: &str = "quantrac_mqtt_acks_withheld_total";
/// Circular 10 files stored (every reading durable), by `source` (`ftp`, `dir`).
pub const FILES_ACCEPTED_TOTAL: &str = "quantrac_files_accepted_total";
/// Circular 10 files refused, by `source` and `reason` (`file_name`, `unknown_station`,
/// `not_authorized`, `too_large`, `unusable`, `not_durable`, `stopping`).
pub const FILES_REFUSED_TOTAL: &str = "quantrac_files_refused_total";
/// Bytes of Circular 10 files received, by `source`.
pub const FILE_BYTES_TOTAL: &str = "quantrac_file_bytes_total";
/// From a file fully received to its readings durable (the FTP 226 waits this long), in
/// seconds, by `source`.
pub const FILE_DURABLE_SECONDS: &str = "quantrac_file_durable_seconds";
/// FTP sessions open now.
pub const FTP_SESSIONS: &str = "quantrac_ftp_sessions";
/// FTP logins refused (wrong user or password).
pub const FTP_LOGINS_REFUSED_TOTAL: &str = "quantrac_ftp_logins_refused_total";
/// FTP logins refused unchecked: their user or address is blocked after failed logins.
pub const FTP_LOGINS_BLOCKED_TOTAL: &str = "quantrac_ftp_logins_blocked_total";

/// API requests, by `route` (the route pattern, e.g. `/api/v1/stations/{id}`) and `status`.
pub const API_REQUESTS_TOTAL: &str = "quantrac_api_requests_total";
/// API request duration in seconds, by `route`.
pub const API_REQUEST_SECONDS: &str = "quantrac_api_request_seconds";
/// Records a station's counter (`seq`) skipped: lost on the way, or still to come (a late
/// record filling the gap is not subtracted here; the station's `records.missing` is exact).
pub const RECORDS_MISSING_TOTAL: &str = "quantrac_records_missing_total";
/// API requests refused as unauthenticated (401), by `reason` (`missing`, `malformed`,
/// `unknown_token`, `wrong_secret`, `revoked`, `expired`).
pub const API_AUTH_FAILURES_TOTAL: &str = "quantrac_api_auth_failures_total";
/// API requests refused by a rate limit (429).
pub const API_RATE_LIMITED_TOTAL: &str = "quantrac_api_rate_limited_total";
/// Stations whose data is fresh (see `stations.offline_after`), set when metrics are read.
pub const STATIONS_ONLINE: &str = "quantrac_stations_online";
/// Stations in the registry.
pub const STATIONS_REGISTERED: &str = "quantrac_stations_registered";
/// The current VN_AQI of each ambient station, by `station` (its newest hour with data).
pub const AQI: &str = "quantrac_aqi";
/// CPU time used by the process so far (user + system), in seconds (a gauge read from /proc).
pub const PROCESS_CPU_SECONDS: &str = "quantrac_process_cpu_seconds";
/// Resident memory of the process, in bytes.
pub const PROCESS_RESIDENT_BYTES: &str = "quantrac_process_resident_bytes";
/// Peak resident memory of the process since start, in bytes.
pub const PROCESS_PEAK_RESIDENT_BYTES: &str = "quantrac_process_peak_resident_bytes";
/// Alert events, by rule `kind`, `severity` and `event` (opened, escalated, ...).
pub const ALERT_EVENTS_TOTAL: &str = "quantrac_alert_events_total";
/// Readings that arrived after a newer one of their series was evaluated (not evaluated).
pub const ALERT_LATE_READINGS_TOTAL: &str = "quantrac_alert_late_readings_total";
/// Alert events a notification sink could not take, by `sink` (mqtt, webhook).
pub const NOTIFICATIONS_DROPPED_TOTAL: &str = "quantrac_notifications_dropped_total";
/// Webhook deliveries that failed after every attempt (or could not be queued).
pub const WEBHOOK_FAILURES_TOTAL: &str = "quantrac_webhook_failures_total";

pub const LABEL_ENCODING: &str = "encoding";
pub const LABEL_KIND: &str = "kind";
pub const LABEL_SEVERITY: &str = "severity";
pub const LABEL_EVENT: &str = "event";
pub const LABEL_SINK: &str = "sink";
pub const LABEL_ROUTE: &str = "route";
pub const LABEL_STATUS: &str = "status";
pub const LABEL_REASON: &str = "reason";
pub const LABEL_SOURCE: &str = "source";
pub const LABEL_STATION: &str = "station";

/// CPU seconds, resident and peak resident bytes of this process, from `/proc/self`
/// (Linux; `None` elsewhere).
pub fn process_usage() -> Option<(f64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the name), in clock
    // ticks of 1/100 s on Linux.
    let cpu = (ticks(11)? + ticks(12)?) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    Some((cpu, kib("VmRSS:")?, kib("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_name_is_documented() {
        let source = include_str!("metrics.rs");
        let docs = include_str!("../docs/metrics.md");
        let names: Vec<&str> = source
            .lines()
            .filter(|l| l.starts_with("pub const ") && !l.contains("LABEL_"))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert!(names.len() > 10);
        for name in names {
            assert!(
                docs.contains(&format!("`{name}`")),
                "docs/metrics.md misses {name}"
            );
        }
    }
}
