//! The storage test suite: what every [`Store`] backend must do, written once.
//!
//! A backend's test file implements [`Backend`] and invokes
//! [`storage_conformance_tests!`](crate::storage_conformance_tests), which expands to one
//! `#[tokio::test]` per check below. Each check uses its own station ids, so backends that
//! share one server between tests (QuestDB) stay isolated.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed check

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    AggregateQuery, ArrivalQuery, PresenceRow, PresenceUpdate, QuarantineQuery, RawQuery, Store,
    StoredReading, WriteItem,
};
use crate::alerts::{Alert, AlertState, RuleKind, Severity};
use crate::quarantine::{DeadLetter, Reason, Rejected, Rejection};
use crate::storage::{AlertQuery, RevisionQuery};
use crate::telemetry::time::VIETNAM_OFFSET_SECS;
use crate::telemetry::{Encoding, GatewayState, Reading, Status, Timestamp};

/// How the suite gets stores.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Opens the store named `name`. Opening the same name again after `close` must show
    /// the same data (a restart).
    async fn open(&self, name: &str) -> Arc<dyn Store>;
}

/// Expands to one test per check, for the backend built by `$backend` (an expression of type
/// `Option<impl Backend>`; `None` skips, printing why, for servers that are not configured).
#[macro_export]
macro_rules! storage_conformance_tests {
    ($backend:expr) => {
        $crate::storage_conformance_tests!(@each $backend;
            a_written_reading_reads_back_exactly,
            rewriting_a_key_stores_it_once_and_the_last_value_wins,
            a_changed_rewrite_keeps_the_earlier_version_and_an_identical_one_keeps_nothing,
            a_large_item_of_new_resent_and_corrected_readings_keeps_each_key_once_and_each_change,
            raw_pages_follow_ts_then_param_order_and_cursors_neither_skip_nor_repeat,
            from_is_inclusive_and_to_is_exclusive,
            the_status_filter_selects_readings_by_status,
            aggregates_follow_the_calendar_of_the_alignment_offset,
            latest_returns_the_newest_reading_of_each_series,
            quarantine_lists_newest_first_with_filters_and_a_cursor,
            a_message_is_one_entry_counting_every_rejection_with_its_payload_kept_whole,
            presence_keeps_the_newest_arrival_and_the_last_gateway_announcement,
            every_item_is_confirmed_in_order_and_readable_after_a_flush,
            data_survives_closing_and_reopening_the_store,
            prune_deletes_only_readings_older_than_the_cutoff,
            writes_after_close_are_refused,
            alerts_are_kept_by_id_and_listed_newest_first_with_filters,
            active_alerts_and_rule_state_survive_reopening,
            the_newest_record_window_survives_reopening,
            records_list_each_reading_time_once_with_its_earliest_known_arrival,
        );
    };
    (@each $backend:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                match $backend {
                    Some(backend) => $crate::storage::conformance::$check(&backend).await,
                    None => return,
                }
            }
        )*
    };
}

/// A station id unique to this check and run.
fn station(check: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("T-{check}-{nanos:09}")
}

/// A recent, whole-hour time, so that time-partitioned backends accept it.
/// The stored presence of `station`.
async fn presence_of(store: &dyn Store, station: &str) -> PresenceRow {
    store
        .presence()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.station == station)
        .expect("presence stored")
}

fn base_time() -> Timestamp {
    let hour = 3_600_000;
    let now = Timestamp::now().as_millis();
    Timestamp::from_millis(now - now % hour - 48 * hour)
}

fn reading(station: &str, param: &str, ts: Timestamp, value: f64, status: Status) -> Reading {
    Reading {
        station: station.into(),
        zone: "TZ".into(),
        param: param.into(),
        ts,
        value,
        status,
    }
}

/// Writes, waits for the confirmation, then for visibility (`flush`).
async fn write_durably(store: &dyn Store, readings: Vec<Reading>) {
    let (done, wait) = crate::ack::pair();
    store
        .write(WriteItem {
            readings,
            done: Some(done),
            ..WriteItem::default()
        })
        .await
        .unwrap();
    assert!(wait.wait().await, "the store confirmed the write");
    store.flush().await.unwrap();
}

fn raw(station: &str, params: &[&str], from: Timestamp, to: Timestamp, limit: usize) -> RawQuery {
    RawQuery {
        station: station.to_owned(),
        params: params.iter().map(|p| (*p).to_owned()).collect(),
        from,
        to,
        after: None,
        limit,
        status: None,
    }
}

fn at(base: Timestamp, minutes: i64) -> Timestamp {
    Timestamp::from_millis(base.as_millis() + minutes * 60_000)
}

/// Reads every page of `query`, following cursors.
async fn read_all(store: &dyn Store, mut query: RawQuery) -> (Vec<StoredReading>, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.readings(query.clone()).await.unwrap();
        pages += 1;
        assert!(page.readings.len() <= query.limit);
        let last = page.readings.last().map(|r| (r.ts, r.param.clone()));
        all.extend(page.readings);
        match (page.has_more, last) {
            (true, Some(last)) => query.after = Some(last),
            _ => return (all, pages),
        }
        assert!(pages < 10_000, "paging does not terminate");
    }
}

pub async fn a_written_reading_reads_back_exactly(b: &dyn Backend) {
    let store = b.open("exact").await;
    let s = station("exact");
    let t0 = base_time();
    let values = [71.3, 0.1 + 0.2, 1e-300, 123_456.789_012_345, 0.0, 7.2];
    let readings: Vec<Reading> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| reading(&s, "COD", at(t0, i as i64), v, Status::Calibrating))
        .collect();
    write_durably(&*store, readings).await;
    let page = store
        .readings(raw(&s, &["COD"], t0, at(t0, 60), 100))
        .await
        .unwrap();
    let got: Vec<f64> = page.readings.iter().map(|r| r.value).collect();
    assert_eq!(got, values, "values round-trip bit for bit");
    assert!(page
        .readings
        .iter()
        .all(|r| r.status == Status::Calibrating));
    assert_eq!(page.readings[2].ts, at(t0, 2));
    assert!(!page.has_more);
    store.close().await.unwrap();
}

/// COD 900 at T, then COD 20 at T: 20 is stored, 900 is kept as a revision. Re-sending 20
/// (idempotent) keeps nothing more; a status change is a revision too, also within one item.
pub async fn a_changed_rewrite_keeps_the_earlier_version_and_an_identical_one_keeps_nothing(
    b: &dyn Backend,
) {
    let store = b.open("revisions").await;
    let s = station("revisions");
    let t0 = base_time();
    let other = at(t0, 1);
    write_durably(
        &*store,
        vec![
            reading(&s, "COD", t0, 900.0, Status::Measuring),
            reading(&s, "COD", other, 5.0, Status::Measuring),
        ],
    )
    .await;
    write_durably(
        &*store,
        vec![reading(&s, "COD", t0, 20.0, Status::Measuring)],
    )
    .await;
    write_durably(
        &*store,
        vec![reading(&s, "COD", t0, 20.0, Status::Measuring)],
    )
    .await;
    write_durably(
        &*store,
        vec![
            reading(&s, "COD", other, 5.0, Status::Calibrating),
            reading(&s, "COD", other, 6.0, Status::Calibrating),
        ],
    )
    .await;
    let page = store
        .readings(raw(&s, &["COD"], t0, at(t0, 2), 10))
        .await
        .unwrap();
    let stored: Vec<(f64, Status)> = page.readings.iter().map(|r| (r.value, r.status)).collect();
    assert_eq!(
        stored,
        [(20.0, Status::Measuring), (6.0, Status::Calibrating)],
        "the last write wins"
    );
    let history = store
        .revisions(RevisionQuery {
            station: s.clone(),
            params: vec!["COD".into()],
            from: t0,
            to: at(t0, 2),
            limit: 10,
        })
        .await
        .unwrap();
    let kept: Vec<(Timestamp, f64, Status)> = history
        .revisions
        .iter()
        .map(|r| (r.ts, r.value, r.status))
        .collect();
    assert_eq!(
        kept,
        [
            (t0, 900.0, Status::Measuring),
            (other, 5.0, Status::Measuring),
            (other, 5.0, Status::Calibrating),
        ],
        "every replaced version, oldest reading first; the identical re-send added none"
    );
    assert!(!history.has_more);
    assert!(history
        .revisions
        .iter()
        .all(|r| r.param == "COD" && r.station == s));
    store.close().await.unwrap();
}

/// One item of 152 readings (more than one statement's worth in a store that writes many
/// rows per statement): 50 new, one key twice with different values, and 100 re-sent of
/// which every tenth is corrected. Each key is stored once with its last value; the
/// corrections and the first of the pair are kept as revisions, the identical re-sends not.
pub async fn a_large_item_of_new_resent_and_corrected_readings_keeps_each_key_once_and_each_change(
    b: &dyn Backend,
) {
    let store = b.open("large-item").await;
    let s = station("large-item");
    let t0 = base_time();
    let first: Vec<Reading> = (0..100)
        .map(|i| reading(&s, "COD", at(t0, i), i as f64, Status::Measuring))
        .collect();
    write_durably(&*store, first).await;
    let corrected = |i: i64| {
        if i % 10 == 0 {
            i as f64 + 1000.0
        } else {
            i as f64
        }
    };
    let mut item: Vec<Reading> = (100..150)
        .map(|i| reading(&s, "COD", at(t0, i), i as f64, Status::Measuring))
        .collect();
    item.push(reading(&s, "COD", at(t0, 150), 1.0, Status::Measuring));
    item.push(reading(&s, "COD", at(t0, 150), 2.0, Status::Measuring));
    item.extend((0..100).map(|i| reading(&s, "COD", at(t0, i), corrected(i), Status::Measuring)));
    write_durably(&*store, item).await;

    let (stored, _) = read_all(&*store, raw(&s, &["COD"], t0, at(t0, 151), 1000)).await;
    let expected: Vec<(Timestamp, f64)> = (0..151)
        .map(|i| match i {
            0..100 => (at(t0, i), corrected(i)),
            150 => (at(t0, i), 2.0),
            _ => (at(t0, i), i as f64),
        })
        .collect();
    let got: Vec<(Timestamp, f64)> = stored.iter().map(|r| (r.ts, r.value)).collect();
    assert_eq!(got, expected, "each key once, with its last value");
    let history = store
        .revisions(RevisionQuery {
            station: s.clone(),
            params: vec!["COD".into()],
            from: t0,
            to: at(t0, 151),
            limit: 100,
        })
        .await
        .unwrap();
    let kept: Vec<(Timestamp, f64)> = history.revisions.iter().map(|r| (r.ts, r.value)).collect();
    let mut want: Vec<(Timestamp, f64)> = (0..100)
        .step_by(10)
        .map(|i| (at(t0, i), i as f64))
        .collect();
    want.push((at(t0, 150), 1.0));
    assert_eq!(
        kept, want,
        "the corrected and the replaced versions, nothing else"
    );
    store.close().await.unwrap();
}

pub async fn rewriting_a_key_stores_it_once_and_the_last_value_wins(b: &dyn Backend) {
    let store = b.open("dedup").await;
    let s = station("dedup");
    let t0 = base_time();
    for value in [1.0, 1.0, 2.0] {
        write_durably(
            &*store,
            vec![reading(&s, "pH", t0, value, Status::Measuring)],
        )
        .await;
    }
    let page = store
        .readings(raw(&s, &["pH"], t0, at(t0, 1), 10))
        .await
        .unwrap();
    assert_eq!(page.readings.len(), 1);
    assert_eq!(page.readings[0].value, 2.0);
    store.close().await.unwrap();
}

pub async fn raw_pages_follow_ts_then_param_order_and_cursors_neither_skip_nor_repeat(
    b: &dyn Backend,
) {
    let store = b.open("paging").await;
    let s = station("paging");
    let t0 = base_time();
    let params = ["COD", "NH4", "pH"];
    let mut readings = Vec::new();
    for m in 0..25_i64 {
        for (i, p) in (0_i64..).zip(params) {
            // Not every parameter at every minute, to exercise the merge.
            if (m + i) % 4 != 0 {
                readings.push(reading(&s, p, at(t0, m), m as f64, Status::Measuring));
            }
        }
    }
    write_durably(&*store, readings.clone()).await;
    let mut expected: Vec<(Timestamp, String)> = readings
        .iter()
        .map(|r| (r.ts, r.param.to_string()))
        .collect();
    expected.sort();
    let (all, pages) = read_all(&*store, raw(&s, &params, t0, at(t0, 25), 7)).await;
    let got: Vec<(Timestamp, String)> = all.iter().map(|r| (r.ts, r.param.clone())).collect();
    assert_eq!(got, expected);
    assert_eq!(pages, expected.len().div_ceil(7));
    store.close().await.unwrap();
}

pub async fn from_is_inclusive_and_to_is_exclusive(b: &dyn Backend) {
    let store = b.open("range").await;
    let s = station("range");
    let t0 = base_time();
    let readings = (0..10)
        .map(|m| reading(&s, "TSS", at(t0, m), m as f64, Status::Measuring))
        .collect();
    write_durably(&*store, readings).await;
    let page = store
        .readings(raw(&s, &["TSS"], at(t0, 2), at(t0, 5), 100))
        .await
        .unwrap();
    let minutes: Vec<f64> = page.readings.iter().map(|r| r.value).collect();
    assert_eq!(minutes, [2.0, 3.0, 4.0]);
    let none = store
        .readings(raw(&s, &["Other"], t0, at(t0, 10), 100))
        .await
        .unwrap();
    assert!(
        none.readings.is_empty(),
        "an unknown series is empty, not an error"
    );
    store.close().await.unwrap();
}

pub async fn the_status_filter_selects_readings_by_status(b: &dyn Backend) {
    let store = b.open("status").await;
    let s = station("status");
    let t0 = base_time();
    let statuses = [Status::Measuring, Status::Calibrating, Status::DeviceError];
    let readings = (0..9)
        .map(|m| reading(&s, "COD", at(t0, m), m as f64, statuses[m as usize % 3]))
        .collect();
    write_durably(&*store, readings).await;
    let mut q = raw(&s, &["COD"], t0, at(t0, 9), 100);
    q.status = Some(Status::DeviceError);
    let page = store.readings(q).await.unwrap();
    let values: Vec<f64> = page.readings.iter().map(|r| r.value).collect();
    assert_eq!(values, [2.0, 5.0, 8.0]);
    store.close().await.unwrap();
}

pub async fn aggregates_follow_the_calendar_of_the_alignment_offset(b: &dyn Backend) {
    let store = b.open("agg").await;
    let s = station("agg");
    // Vietnam midnight two days ago, and readings every hour for two days.
    let day = 86_400_000;
    let offset = i64::from(VIETNAM_OFFSET_SECS) * 1000;
    let now = Timestamp::now().as_millis();
    let midnight = now - (now + offset).rem_euclid(day) - 3 * day;
    let t0 = Timestamp::from_millis(midnight);
    let mut readings: Vec<Reading> = (0..48)
        .map(|h| reading(&s, "PM2.5", at(t0, h * 60), h as f64, Status::Measuring))
        .collect();
    readings.push(reading(
        &s,
        "PM2.5",
        at(t0, 30),
        1000.0,
        Status::Calibrating,
    ));
    write_durably(&*store, readings).await;
    let query = AggregateQuery {
        station: s.clone(),
        params: vec!["PM2.5".into(), "PM10".into()],
        from: t0,
        to: Timestamp::from_millis(midnight + 2 * day),
        bucket_ms: day,
        align_offset_ms: offset,
        status: Some(Status::Measuring),
    };
    let series = store.aggregate(query.clone()).await.unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].param, "PM2.5");
    let days = &series[0].buckets;
    assert_eq!(days.len(), 2, "{days:?}");
    assert_eq!(days[0].start, t0, "day buckets start at Vietnam midnight");
    assert_eq!(days[0].count, 24);
    assert_eq!((days[0].min, days[0].max, days[0].avg), (0.0, 23.0, 11.5));
    assert_eq!((days[1].min, days[1].max, days[1].avg), (24.0, 47.0, 35.5));
    assert!(series[1].buckets.is_empty(), "no data, no buckets");
    assert_eq!(
        query.bucket_start(at(t0, 60 * 30)),
        Timestamp::from_millis(midnight + day)
    );

    let hourly = store
        .aggregate(AggregateQuery {
            bucket_ms: 3_600_000,
            status: None,
            ..query
        })
        .await
        .unwrap();
    let first = &hourly[0].buckets[0];
    assert_eq!(
        (first.count, first.max),
        (2, 1000.0),
        "no filter includes status 01"
    );
    store.close().await.unwrap();
}

pub async fn latest_returns_the_newest_reading_of_each_series(b: &dyn Backend) {
    let store = b.open("latest").await;
    let s = station("latest");
    let t0 = base_time();
    write_durably(
        &*store,
        vec![
            reading(&s, "COD", at(t0, 5), 5.0, Status::Measuring),
            reading(&s, "pH", at(t0, 1), 7.0, Status::DeviceError),
        ],
    )
    .await;
    // A late backlog does not replace the newest value.
    write_durably(
        &*store,
        vec![reading(&s, "COD", at(t0, 1), 1.0, Status::Measuring)],
    )
    .await;
    let mut mine: Vec<_> = store
        .latest()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.station == s)
        .collect();
    mine.sort_by(|a, b| a.param.cmp(&b.param));
    assert_eq!(mine.len(), 2);
    assert_eq!((mine[0].param.as_str(), mine[0].value), ("COD", 5.0));
    assert_eq!(mine[0].ts, at(t0, 5));
    assert_eq!(
        (mine[1].param.as_str(), mine[1].status),
        ("pH", Status::DeviceError)
    );
    store.close().await.unwrap();
}

/// One message from `station` with one rejection per reason of `reasons`.
fn rejected(station: &str, reasons: &[Reason]) -> Rejected {
    Rejected::new(
        Timestamp::now(),
        format!("quantrac/v1/TZ/{station}/telemetry/json"),
        Some(Encoding::Json),
        Some(station.to_owned()),
        b"{\"bad\":",
        512,
        reasons.iter().map(|&reason| Rejection {
            reason,
            station: Some(station.to_owned()),
            param: Some("COD".into()),
            ts: Some(base_time()),
            value: Some(1.5),
            detail: format!("detail of {}", reason.code()),
        }),
    )
}

async fn write_rejected(store: &dyn Store, rejected: Rejected) {
    let (done, wait) = crate::ack::pair();
    store
        .write(WriteItem {
            rejected: Some(rejected),
            done: Some(done),
            ..WriteItem::default()
        })
        .await
        .unwrap();
    assert!(wait.wait().await);
}

pub async fn quarantine_lists_newest_first_with_filters_and_a_cursor(b: &dyn Backend) {
    let store = b.open("quarantine").await;
    let s = station("quarantine");
    let reasons = [Reason::OutOfRange, Reason::UnitMismatch, Reason::OutOfRange];
    for reason in reasons {
        write_rejected(&*store, rejected(&s, &[reason])).await;
    }
    store.flush().await.unwrap();
    let query = QuarantineQuery {
        station: Some(s.clone()),
        limit: 2,
        ..QuarantineQuery::default()
    };
    let page = store.quarantine(query.clone()).await.unwrap();
    assert_eq!(page.entries.len(), 2);
    assert!(page.has_more);
    assert!(page.entries[0].id > page.entries[1].id, "newest first");
    assert_eq!(page.entries[1].samples[0].reason, Reason::UnitMismatch);
    let e = &page.entries[0];
    assert_eq!(e.encoding, Some(Encoding::Json));
    assert_eq!(e.station.as_deref(), Some(s.as_str()));
    assert_eq!(e.samples[0].detail, "detail of out_of_range");
    assert_eq!(e.samples[0].value, Some(1.5));
    assert_eq!(e.samples[0].ts, Some(base_time()));
    assert_eq!(e.excerpt, "{\"bad\":");
    assert_eq!(e.counts, [(Reason::OutOfRange, 1)]);
    let rest = store
        .quarantine(QuarantineQuery {
            before_id: Some(page.entries[1].id),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(rest.entries.len(), 1);
    assert!(!rest.has_more);
    let by_reason = store
        .quarantine(QuarantineQuery {
            reason: Some(Reason::OutOfRange),
            limit: 10,
            ..query
        })
        .await
        .unwrap();
    assert_eq!(by_reason.entries.len(), 2);
    store.close().await.unwrap();
}

pub async fn a_message_is_one_entry_counting_every_rejection_with_its_payload_kept_whole(
    b: &dyn Backend,
) {
    let store = b.open("one-entry").await;
    let s = station("one-entry");
    // 30 rejections of two reasons in one message; a binary payload.
    let mut reasons = vec![Reason::OutOfRange; 28];
    reasons.insert(3, Reason::UnitMismatch);
    reasons.push(Reason::UnitMismatch);
    let mut message = rejected(&s, &reasons);
    let payload: Vec<u8> = (0..=255u8).chain([0, 0xff, b'\n']).collect();
    message.encoding = Some(Encoding::Bincode);
    message.payload = Some(payload.clone());
    write_rejected(&*store, message).await;
    store.flush().await.unwrap();
    let all = |reason| QuarantineQuery {
        station: Some(s.clone()),
        reason,
        limit: 10,
        ..QuarantineQuery::default()
    };
    let page = store.quarantine(all(None)).await.unwrap();
    assert_eq!(page.entries.len(), 1, "one entry for the message");
    let e = &page.entries[0];
    assert_eq!(
        e.counts,
        [(Reason::UnitMismatch, 2), (Reason::OutOfRange, 28)]
    );
    assert_eq!(e.total(), 30);
    assert_eq!(e.samples.len(), crate::quarantine::SAMPLES);
    assert_eq!(e.samples[3].reason, Reason::UnitMismatch);
    assert_eq!(e.payload_bytes, Some(payload.len() as u64));
    assert!(e.payload_held);
    for reason in [Reason::UnitMismatch, Reason::OutOfRange] {
        let found = store.quarantine(all(Some(reason))).await.unwrap();
        assert_eq!(found.entries.len(), 1, "found by each of its reasons");
    }
    let none = store
        .quarantine(all(Some(Reason::BadSignature)))
        .await
        .unwrap();
    assert!(none.entries.is_empty());
    assert_eq!(
        store.dead_letter(e.id).await.unwrap(),
        DeadLetter::Held {
            encoding: Some(Encoding::Bincode),
            payload,
        }
    );
    assert_eq!(
        store.dead_letter(e.id + 1_000_000).await.unwrap(),
        DeadLetter::Unknown
    );
    store.close().await.unwrap();
}

pub async fn presence_keeps_the_newest_arrival_and_the_last_gateway_announcement(b: &dyn Backend) {
    let store = b.open("presence").await;
    let s = station("presence");
    let t0 = base_time();
    let updates = [
        (Some(at(t0, 10)), None),
        (Some(at(t0, 5)), Some((GatewayState::Online, at(t0, 1)))),
        (None, Some((GatewayState::Offline, at(t0, 11)))),
    ];
    for (last_seen, gateway) in updates {
        store
            .write(WriteItem {
                presence: Some(PresenceUpdate {
                    station: s.as_str().into(),
                    last_seen,
                    gateway,
                }),
                ..WriteItem::default()
            })
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    let row = presence_of(&*store, &s).await;
    assert_eq!(row.last_seen, Some(at(t0, 10)));
    assert_eq!(row.gateway, Some((GatewayState::Offline, at(t0, 11))));
    store.close().await.unwrap();
}

pub async fn every_item_is_confirmed_in_order_and_readable_after_a_flush(b: &dyn Backend) {
    let store = b.open("durable").await;
    let s = station("durable");
    let t0 = base_time();
    let mut waits = Vec::new();
    for m in 0..50 {
        let (done, wait) = crate::ack::pair();
        store
            .write(WriteItem {
                readings: vec![reading(&s, "COD", at(t0, m), m as f64, Status::Measuring)],
                done: Some(done),
                ..WriteItem::default()
            })
            .await
            .unwrap();
        waits.push(wait);
    }
    let last = waits.pop().expect("fifty waits");
    assert!(last.wait().await);
    store.flush().await.unwrap();
    let page = store
        .readings(raw(&s, &["COD"], t0, at(t0, 60), 100))
        .await
        .unwrap();
    assert_eq!(
        page.readings.len(),
        50,
        "everything queued before is readable"
    );
    for w in waits {
        assert!(w.wait().await, "earlier items were confirmed too");
    }
    store.close().await.unwrap();
}

pub async fn data_survives_closing_and_reopening_the_store(b: &dyn Backend) {
    let s = station("reopen");
    let t0 = base_time();
    let store = b.open("reopen").await;
    write_durably(
        &*store,
        vec![reading(&s, "NOx", t0, 321.5, Status::Measuring)],
    )
    .await;
    store.close().await.unwrap();
    drop(store);
    let store = b.open("reopen").await;
    let page = store
        .readings(raw(&s, &["NOx"], t0, at(t0, 1), 10))
        .await
        .unwrap();
    assert_eq!(page.readings.len(), 1);
    assert_eq!(page.readings[0].value, 321.5);
    store.close().await.unwrap();
}

pub async fn prune_deletes_only_readings_older_than_the_cutoff(b: &dyn Backend) {
    // Whole UTC days: backends may drop whole partitions (QuestDB partitions by day).
    let store = b.open("prune").await;
    let s = station("prune");
    let day = 86_400_000;
    let now = Timestamp::now().as_millis();
    let today = now - now.rem_euclid(day);
    let old = Timestamp::from_millis(today - 3 * day);
    let recent = Timestamp::from_millis(today - 2 * day);
    let readings = (0..5)
        .flat_map(|m| {
            [
                reading(&s, "SO2", at(old, m), m as f64, Status::Measuring),
                reading(&s, "SO2", at(recent, m), m as f64, Status::Measuring),
            ]
        })
        .collect();
    write_durably(&*store, readings).await;
    store.prune(recent).await.unwrap();
    store.flush().await.unwrap();
    let page = store
        .readings(raw(&s, &["SO2"], old, at(recent, 10), 100))
        .await
        .unwrap();
    assert_eq!(page.readings.len(), 5, "{page:?}");
    assert!(page.readings.iter().all(|r| r.ts >= recent));
    store.close().await.unwrap();
}

pub async fn writes_after_close_are_refused(b: &dyn Backend) {
    let store = b.open("closed").await;
    store.close().await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), store.write(WriteItem::default()))
        .await
        .expect("a write after close returns at once");
    assert!(matches!(outcome, Err(super::Error::Closed)));
}

/// An alert of `station` (ids must be unique per backend: derive them from the station).
fn alert(
    id: u64,
    station: &str,
    zone: &str,
    severity: Severity,
    state: AlertState,
    minutes: i64,
) -> Alert {
    let t0 = base_time();
    Alert {
        id,
        station: station.into(),
        zone: zone.into(),
        param: Some("COD".into()),
        rule: "limit-inst".into(),
        kind: RuleKind::Exceedance,
        severity,
        state,
        message: "COD above the limit".into(),
        threshold: Some(135.0),
        unit: Some("mg/L".into()),
        source: Some("QCVN".into()),
        first_at: at(t0, minutes),
        last_at: at(t0, minutes + 10),
        first_value: Some(140.0),
        last_value: Some(150.0),
        peak_value: Some(160.0),
        count: 3,
        resolved_at: (state == AlertState::Resolved).then(|| at(t0, minutes + 15)),
        ack: None,
        backfilled: false,
        notified_at: Some(at(t0, minutes)),
        updated_at: at(t0, minutes + 10),
    }
}

/// Alert ids unique to this run (backends may be shared between runs).
fn id_base() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos / 1000) % 1_000_000_000_000 * 100
}

async fn write_alerts(store: &dyn Store, alerts: Vec<Alert>) {
    let (done, wait) = crate::ack::pair();
    store
        .write(WriteItem {
            alerts,
            done: Some(done),
            ..WriteItem::default()
        })
        .await
        .unwrap();
    assert!(wait.wait().await);
    store.flush().await.unwrap();
}

pub async fn alerts_are_kept_by_id_and_listed_newest_first_with_filters(b: &dyn Backend) {
    let store = b.open("alerts").await;
    let s = station("alerts");
    let other = station("alerts-other");
    let base = id_base();
    write_alerts(
        &*store,
        vec![
            alert(base + 1, &s, "Z1", Severity::Warning, AlertState::Open, 0),
            alert(
                base + 2,
                &s,
                "Z1",
                Severity::Critical,
                AlertState::Resolved,
                30,
            ),
            alert(base + 3, &other, "Z2", Severity::Info, AlertState::Open, 60),
        ],
    )
    .await;
    // An event later: the first alert is acknowledged (the row is replaced, not added).
    let mut acked = alert(
        base + 1,
        &s,
        "Z1",
        Severity::Critical,
        AlertState::Acknowledged,
        0,
    );
    acked.ack = Some(crate::alerts::Ack {
        by: "inspector".into(),
        note: "on site".into(),
        at: at(base_time(), 20),
    });
    write_alerts(&*store, vec![acked.clone()]).await;

    assert_eq!(store.alert(base + 1).await.unwrap(), Some(acked));
    assert_eq!(store.alert(base + 99).await.unwrap(), None);
    assert!(store.max_alert_id().await.unwrap() >= base + 3);

    let query = AlertQuery {
        station: Some(s.clone()),
        limit: 10,
        ..AlertQuery::default()
    };
    let mine = store.alerts(query.clone()).await.unwrap();
    let ids: Vec<u64> = mine.alerts.iter().map(|a| a.id).collect();
    assert_eq!(ids, [base + 2, base + 1], "newest first");
    let critical = store
        .alerts(AlertQuery {
            severity: Some(Severity::Critical),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(critical.alerts.len(), 2, "severity is a minimum");
    let resolved = store
        .alerts(AlertQuery {
            state: Some(AlertState::Resolved),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(resolved.alerts[0].id, base + 2);
    let page = store
        .alerts(AlertQuery {
            limit: 1,
            ..query.clone()
        })
        .await
        .unwrap();
    assert!(page.has_more);
    let rest = store
        .alerts(AlertQuery {
            before_id: Some(page.alerts[0].id),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(rest.alerts.len(), 1);
    // Active during [25, 28): only the open-acknowledged one (first_at 0, still going).
    let t0 = base_time();
    let during = store
        .alerts(AlertQuery {
            from: Some(at(t0, 25)),
            to: Some(at(t0, 28)),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(during.alerts.len(), 1);
    let zone2 = store
        .alerts(AlertQuery {
            zone: Some("Z2".into()),
            station: Some(other.clone()),
            limit: 10,
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(zone2.alerts.len(), 1);
    store.close().await.unwrap();
}

pub async fn active_alerts_and_rule_state_survive_reopening(b: &dyn Backend) {
    let s = station("active");
    let base = id_base();
    let store = b.open("active").await;
    write_alerts(
        &*store,
        vec![
            alert(base + 1, &s, "Z", Severity::Warning, AlertState::Open, 0),
            alert(
                base + 2,
                &s,
                "Z",
                Severity::Warning,
                AlertState::Resolved,
                0,
            ),
            alert(
                base + 3,
                &s,
                "Z",
                Severity::Warning,
                AlertState::Acknowledged,
                0,
            ),
        ],
    )
    .await;
    let (done, wait) = crate::ack::pair();
    store
        .write(WriteItem {
            rule_states: vec![(s.as_str().into(), vec![1, 2, 3])],
            done: Some(done),
            ..WriteItem::default()
        })
        .await
        .unwrap();
    assert!(wait.wait().await);
    store.close().await.unwrap();
    drop(store);

    let store = b.open("active").await;
    let active: Vec<u64> = store
        .active_alerts()
        .await
        .unwrap()
        .into_iter()
        .filter(|a| *a.station == *s)
        .map(|a| a.id)
        .collect();
    assert_eq!(active, [base + 1, base + 3]);
    let states = store.rule_states().await.unwrap();
    let mine = states
        .iter()
        .find(|(station, _)| *station == s)
        .expect("rule state kept");
    assert_eq!(mine.1, [1, 2, 3]);
    store.close().await.unwrap();
}

pub async fn the_newest_record_window_survives_reopening(b: &dyn Backend) {
    let s = station("window");
    let id: Arc<str> = s.as_str().into();
    let t0 = base_time();
    let store = b.open("window").await;
    let mut counters = crate::security::sequence::Sequences::new();
    let mut waits = Vec::new();
    for seq in [1, 2, 5] {
        counters.check(&id, seq);
        let (done, wait) = crate::ack::pair();
        store
            .write(WriteItem {
                readings: vec![reading(
                    &s,
                    "COD",
                    at(t0, seq as i64),
                    1.0,
                    Status::Measuring,
                )],
                presence: Some(PresenceUpdate {
                    station: id.clone(),
                    last_seen: Some(at(t0, seq as i64)),
                    gateway: None,
                }),
                record_window: counters.window(&s).map(|w| (id.clone(), *w)),
                done: Some(done),
                ..WriteItem::default()
            })
            .await
            .unwrap();
        waits.push(wait);
    }
    // A later message without a counter keeps the saved window.
    store
        .write(WriteItem {
            presence: Some(PresenceUpdate {
                station: id.clone(),
                last_seen: Some(at(t0, 9)),
                gateway: None,
            }),
            ..WriteItem::default()
        })
        .await
        .unwrap();
    for wait in waits {
        assert!(wait.wait().await);
    }
    store.close().await.unwrap();
    drop(store);

    let store = b.open("window").await;
    let row = presence_of(&*store, &s).await;
    assert_eq!(row.last_seen, Some(at(t0, 9)));
    assert_eq!(row.record_window.as_ref(), counters.window(&s));
    let mut restored =
        crate::security::sequence::Sequences::restore([(id.clone(), row.record_window.unwrap())]);
    assert_eq!(
        restored.check(&id, 2),
        crate::security::sequence::Verdict::Replayed { highest: 5 }
    );
    store.close().await.unwrap();
}

/// What the connectivity report reads: a station's records (distinct reading times) with the
/// earliest arrival of their readings, from the message's presence update; none when the
/// message carried none (as for readings stored before arrival times were kept).
pub async fn records_list_each_reading_time_once_with_its_earliest_known_arrival(b: &dyn Backend) {
    let store = b.open("arrivals").await;
    let s = station("arrivals");
    let t0 = base_time();
    let item = |readings: Vec<Reading>, arrived: Option<Timestamp>| WriteItem {
        readings,
        presence: arrived.map(|a| PresenceUpdate {
            station: s.as_str().into(),
            last_seen: Some(a),
            gateway: None,
        }),
        ..WriteItem::default()
    };
    let r = |param: &str, ts: Timestamp| reading(&s, param, ts, 1.0, Status::Measuring);
    let items = [
        item(
            vec![r("COD", at(t0, 5)), r("pH", at(t0, 5))],
            Some(at(t0, 6)),
        ),
        item(vec![r("COD", at(t0, 10))], Some(at(t0, 20))),
        // A re-send of one reading of the first record, much later.
        item(vec![r("pH", at(t0, 5))], Some(at(t0, 30))),
        item(vec![r("TSS", at(t0, 15))], None),
        item(vec![r("COD", at(t0, 25))], Some(at(t0, 26))),
    ];
    for i in items {
        store.write(i).await.unwrap();
    }
    store.flush().await.unwrap();
    let records = store
        .arrivals(ArrivalQuery {
            station: s.clone(),
            from: at(t0, 5),
            to: at(t0, 25),
        })
        .await
        .unwrap();
    let got: Vec<(Timestamp, Option<Timestamp>)> =
        records.iter().map(|r| (r.ts, r.arrived)).collect();
    assert_eq!(
        got,
        [
            (at(t0, 5), Some(at(t0, 6))),
            (at(t0, 10), Some(at(t0, 20))),
            (at(t0, 15), None),
        ],
        "from inclusive, to exclusive, each time once, its earliest arrival"
    );
    store.close().await.unwrap();
}
