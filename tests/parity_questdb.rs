//! Parity: the same readings, published to a quantrac on the embedded store and to one on
//! QuestDB, give the same `/api/v1/readings` and `/latest` JSON: values, times, cursors, and
//! buckets on the Vietnam calendar, for every readings form the API offers.
//!
//! Needs `QUANTRAC_TEST_QUESTDB_URL` (and `QUANTRAC_TEST_QUESTDB_PG`); says SKIPPED otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{record, Broker, Service, Site, StoreKind};
use firmware_sim::{Encoding, Status};
use serde_json::Value;

const ZONE: &str = "BN-VSIP";
const AQ: &str = "BN-VSIP-AQ01";
const PARAMS: [(&str, &str); 6] = [
    ("PM2.5", "ug/Nm3"),
    ("PM10", "ug/Nm3"),
    ("SO2", "ug/Nm3"),
    ("NO2", "ug/Nm3"),
    ("CO", "ug/Nm3"),
    ("O3", "ug/Nm3"),
];
/// Three days and a bit of 10-minute records, crossing Vietnam midnights.
const RECORDS: i64 = 460;
const STEP: i64 = 600_000;

/// Values with long fractions (sums and averages of them are not exact), some calibrating
/// (01) or faulty (02) readings, and a parameter missing now and then.
fn records(end: i64) -> Vec<firmware_sim::Record> {
    (0..RECORDS)
        .map(|i| {
            let readings: Vec<(&str, f64, &str)> = PARAMS
                .iter()
                .enumerate()
                .filter(|(p, _)| (i + *p as i64) % 17 != 0)
                .map(|(p, &(name, unit))| {
                    let x = (i * 31 + p as i64 * 7) as f64;
                    (name, (x.sin() + 1.1) * 97.3 + x / 7.0, unit)
                })
                .collect();
            let mut r = record(AQ, end - (RECORDS - i) * STEP, i as u64, &readings);
            for (k, reading) in r.readings.iter_mut().enumerate() {
                match (i as usize + k) % 11 {
                    3 => reading.status = Status::Calibrating,
                    7 => reading.status = Status::DeviceError,
                    _ => {}
                }
            }
            r
        })
        .collect()
}

async fn load(svc: &Service, records: &[firmware_sim::Record]) {
    let gw = svc.publisher().await;
    let mut messages = 0;
    for chunk in records.chunks(40) {
        gw.publish_records(ZONE, AQ, Encoding::Json, chunk)
            .await
            .unwrap();
        messages += 1;
    }
    svc.wait_processed(messages).await;
    gw.disconnect().await.unwrap();
}

/// Every page of a raw query, following `next_cursor`.
async fn pages(svc: &Service, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = format!("/api/v1/readings?{query}");
    loop {
        let body = svc.ok(&url).await;
        let next = body["next_cursor"].as_str().map(str::to_owned);
        out.push(body);
        match next {
            Some(cursor) => url = format!("/api/v1/readings?{query}&cursor={cursor}"),
            None => return out,
        }
        assert!(out.len() < 1000, "paging does not end");
    }
}

/// The first difference between two JSON documents, by path (averages within 1e-12).
fn difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                difference(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (a, b))| difference(&format!("{path}[{i}]"), a, b)),
        _ if a == b => None,
        // Averages: both stores sum with compensation (SQLite's Kahan-Babushka-Neumaier,
        // QuestDB's `nsum`), in orders that may differ; over a day of readings the last bit
        // of the average can differ. Everything else (times, counts, min, max, raw values)
        // must be identical.
        (Value::Number(x), Value::Number(y))
            if path.contains(".points[")
                && path.ends_with(".value")
                && x.as_f64().zip(y.as_f64()).is_some_and(|(x, y)| {
                    (x - y).abs() <= 1e-12 * x.abs().max(1.0) && x.fract() != 0.0
                }) =>
        {
            None
        }
        _ => Some(format!("{path}: sqlite {a} / questdb {b}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_readings_give_the_same_api_answers_on_sqlite_and_on_questdb() {
    let Some(quest_site) = Site::on(StoreKind::QuestDb, Broker::Embedded, "parity") else {
        return;
    };
    let lite_site = Site::new(Broker::Embedded, "parity");
    let end = common::recent_minute(0);
    let data = records(end);
    let lite = lite_site.start().await;
    let quest = quest_site.start().await;
    load(&lite, &data).await;
    load(&quest, &data).await;

    let from = end - (RECORDS + 1) * STEP;
    let window = format!("station={AQ}&from={from}&to={end}");
    let vn_days = {
        let day = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .with_timezone(&quantrac::telemetry::time::VIETNAM)
                .format("%Y-%m-%d")
                .to_string()
        };
        format!(
            "station={AQ}&from={}&to={}",
            day(from),
            day(end + 86_400_000)
        )
    };
    let mut raw = vec![
        format!("{window}&limit=97"),
        format!("{window}&limit=10000"),
        format!("{window}&param=PM2.5,CO&limit=50"),
        format!("{window}&param=O3"),
    ];
    for status in ["00", "01", "02", "all"] {
        raw.push(format!("{window}&status={status}&limit=333"));
    }
    let mut compared = 0;
    for query in &raw {
        let (a, b) = (pages(&lite, query).await, pages(&quest, query).await);
        assert_eq!(a.len(), b.len(), "pages of {query}");
        let d = difference("", &Value::Array(a), &Value::Array(b));
        assert!(d.is_none(), "{query}: {}", d.unwrap_or_default());
        compared += 1;
    }
    for range in [&window, &vn_days] {
        for bucket in ["1m", "5m", "15m", "1h", "1d"] {
            for agg in ["avg", "min", "max", "count"] {
                for status in ["", "&status=all", "&status=01", "&param=PM10,NO2&status=02"] {
                    let query = format!("{range}&bucket={bucket}&agg={agg}{status}");
                    let url = format!("/api/v1/readings?{query}");
                    let (a, b) = (lite.ok(&url).await, quest.ok(&url).await);
                    assert!(
                        a["series"][0]["points"]
                            .as_array()
                            .is_some_and(|p| !p.is_empty())
                            || status.contains("02"),
                        "{query} has data: {a}"
                    );
                    let d = difference("", &a, &b);
                    assert!(d.is_none(), "{query}: {}", d.unwrap_or_default());
                    compared += 1;
                }
            }
        }
    }
    let latest = format!("/api/v1/stations/{AQ}/latest");
    let (mut a, mut b) = (lite.ok(&latest).await, quest.ok(&latest).await);
    // When each service received its messages: not a property of the store.
    a["last_seen"].take();
    b["last_seen"].take();
    assert!(difference("", &a, &b).is_none(), "{a}\n{b}");
    eprintln!("{compared} readings queries and latest: identical on both stores");
    lite.stop().await;
    quest.stop().await;
}
