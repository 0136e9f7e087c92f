//! `run` and `flood` end to end against a real broker (see `common` for which one and when
//! tests skip).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use firmware_sim::{
    flood, run, BrokerOptions, Encoding, EncodingChoice, Fleet, RunOptions, SimConfig,
};
use tokio_util::sync::CancellationToken;

mod common;
use common::{broker_available, broker_url, drain, subscribe, unique};

fn fleet() -> Fleet {
    Fleet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds")).unwrap()
}

#[tokio::test]
async fn a_run_announces_backfills_publishes_live_and_says_goodbye() {
    if !broker_available().await {
        return;
    }
    let prefix = unique("run");
    let mut received = subscribe(&format!("{prefix}/#")).await;
    let mut broker = BrokerOptions::new(broker_url(), unique("run"));
    broker.topic_prefix = Some(prefix.clone());
    let options = RunOptions {
        broker,
        seeds: "seeds".into(),
        stations: 3,
        encoding: EncodingChoice::Mixed,
        interval: Some(Duration::from_secs(1)),
        backfill: Some(Duration::from_secs(3600)),
        duration: Some(Duration::from_millis(2500)),
        sim: SimConfig::default(),
        counters: Default::default(),
    };
    let report = run(options, fleet(), CancellationToken::new())
        .await
        .unwrap();
    let messages = drain(&mut received, Duration::from_secs(1)).await;

    let status: Vec<&(String, Vec<u8>)> = messages
        .iter()
        .filter(|(t, _)| t.ends_with("/status"))
        .collect();
    assert_eq!(status.len(), 6);
    assert!(status[..3].iter().all(|(_, p)| p == b"online"));
    assert!(status[3..].iter().all(|(_, p)| p == b"offline"));
    let telemetry: Vec<&String> = messages
        .iter()
        .map(|(t, _)| t)
        .filter(|t| t.contains("/telemetry/"))
        .collect();
    assert_eq!(telemetry.len() as u64, report.messages);
    for suffix in ["/telemetry/json", "/telemetry/bincode", "/telemetry/tt10"] {
        assert!(telemetry.iter().any(|t| t.ends_with(suffix)), "{suffix}");
    }
    // 1 h of backfill at the stations' own 5-minute pace (12 records each), then live
    // records every second for about 2.5 s, for 3 stations.
    assert!(report.records >= 3 * (12 + 2), "{report:?}");
    assert!(
        report.records <= 3 * (12 + 10),
        "history is not at the live pace: {report:?}"
    );
    assert!(report.readings > report.records);

    let topics: Vec<String> = status.iter().take(3).map(|(t, _)| t.clone()).collect();
    clear_retained(&topics).await;
}

#[tokio::test]
async fn a_cancelled_run_stops_promptly() {
    if !broker_available().await {
        return;
    }
    let prefix = unique("cancel");
    let mut broker = BrokerOptions::new(broker_url(), unique("cancel"));
    broker.topic_prefix = Some(prefix.clone());
    let options = RunOptions {
        broker,
        seeds: "seeds".into(),
        stations: 1,
        encoding: EncodingChoice::One(Encoding::Json),
        interval: None,
        backfill: None,
        duration: None,
        sim: SimConfig::default(),
        counters: Default::default(),
    };
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(options, fleet(), cancel.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run did not stop")
        .unwrap()
        .unwrap();
    // The first tick sends the current interval at once.
    assert_eq!((report.messages, report.records), (1, 1));

    let station = &fleet().stations[0];
    let status = firmware_sim::status_topic(Some(&prefix), &station.zone, &station.id);
    clear_retained(&[status]).await;
}

#[tokio::test]
async fn a_flood_delivers_every_record_and_reports_it() {
    if !broker_available().await {
        return;
    }
    let prefix = unique("flood");
    let mut received = subscribe(&format!("{prefix}/#")).await;
    let mut broker = BrokerOptions::new(broker_url(), unique("flood"));
    broker.topic_prefix = Some(prefix.clone());
    let report = flood(broker, &fleet(), Encoding::Json, 500, 5, 1_795_662_300_000)
        .await
        .unwrap();
    // 6 stations: 84, 84, 83, 83, 83, 83 records, 17 messages of at most 5 each.
    assert_eq!((report.records, report.messages), (500, 102));
    assert!(report.records_per_s() > 0.0);
    let messages = drain(&mut received, Duration::from_secs(1)).await;
    let records: usize = messages
        .iter()
        .map(|(_, p)| {
            let v: serde_json::Value = serde_json::from_slice(p).unwrap();
            v.as_array().map_or(1, Vec::len)
        })
        .sum();
    assert_eq!(records, 500);
}

/// Leaves no retained status behind.
async fn clear_retained(topics: &[String]) {
    let cleanup =
        firmware_sim::Publisher::connect(BrokerOptions::new(broker_url(), unique("cleanup")))
            .await
            .unwrap();
    for topic in topics {
        cleanup.publish_raw(topic, Vec::new(), true).await.unwrap();
    }
    cleanup.disconnect().await.unwrap();
}
