//! The load tool against a real quantrac, as `benches/perf.sh` uses it: a short run at a
//! fixed rate must be stored completely and yield every figure of the report.
//!
//! In a file of its own because the tool reads quantrac's process-wide metrics, which other
//! services in the same test process would move.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{unique, Broker, Site};
use firmware_sim::fleet::generate;
use firmware_sim::load::{ceiling, load, LoadOptions};
use firmware_sim::{BrokerOptions, Encoding, Fleet};

async fn load_at_a_fixed_rate(broker: Broker) {
    let mut site = Site::new(broker, "load");
    let seeds = site.dir.path().join("load-seeds");
    generate::write(&seeds, 20, 4, "1m").unwrap();
    site.seeds = Some(seeds.clone());
    let fleet = Fleet::load(&seeds).unwrap();
    // The load tool polls quantrac's API far above the default per-token rate limit.
    let mut config = site.config();
    config.api.rate_limit.per_token_per_second = 10_000;
    config.api.rate_limit.per_token_burst = 10_000;
    config.api.rate_limit.per_address_per_second = 10_000;
    config.api.rate_limit.per_address_burst = 10_000;
    let svc = common::Service::start(config).await;
    let mut options = BrokerOptions::new(svc.broker_url(), unique("load"));
    options.topic_prefix = Some(site.prefix.clone());

    let fixed = LoadOptions {
        broker: options,
        api: svc.base.clone(),
        token: Some(svc.token.clone()),
        stations: 20,
        params: 4,
        rate: 2000,
        max_backlog: 10_000,
        duration: Duration::from_secs(2),
        encoding: Encoding::Bincode,
        settle: Duration::from_secs(30),
    };
    let report = load(fixed.clone(), &fleet).await.unwrap();

    assert!(report.complete, "{report:?}");
    assert_eq!(report.readings_stored, report.readings_published);
    // 2 s at 2,000 readings/s, plus the alert probe's 20 a second.
    assert!(
        (3000..=4500).contains(&report.readings_published),
        "{report:?}"
    );
    assert!(report.publish_to_store_ms.samples >= 50, "{report:?}");
    assert!(report.publish_to_store_ms.p50 > 0.0);
    assert!(report.publish_to_store_ms.p99 >= report.publish_to_store_ms.p50);
    // Every probe reading crosses the limit one way or the other: an event each.
    assert!(report.publish_to_alert_ms.samples >= 20, "{report:?}");
    assert!(report.quantrac_cpu_seconds.is_some_and(|s| s > 0.0));
    assert!(report.quantrac_peak_rss_bytes.is_some_and(|b| b > 1e6));

    // As fast as quantrac stores, never more than 400 readings (100 messages) ahead of it:
    // the shared Mosquitto keeps at most 1,000 messages for a subscriber by default.
    let report = load(
        LoadOptions {
            rate: 0,
            max_backlog: 400,
            duration: Duration::from_secs(1),
            ..fixed
        },
        &fleet,
    )
    .await
    .unwrap();
    assert!(report.complete, "{report:?}");
    assert!(report.readings_published > 400, "{report:?}");

    svc.stop().await;
    site.finish().await;
}

/// The broker's ceiling: the same traffic straight to an idle subscriber; every message
/// arrives. (On a Mosquitto of the test's own with the production settings: the shared one
/// keeps at most 1,000 messages for a subscriber and drops the rest of a flood. The device
/// endpoint routes nothing to subscribers: its ceiling is the store's, measured by
/// `cargo bench --bench store_write`.)
async fn ceiling_of_a_broker() {
    let broker = common::processes::PrivateMosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let seeds = dir.path().join("load-seeds");
    generate::write(&seeds, 20, 4, "1m").unwrap();
    let fleet = Fleet::load(&seeds).unwrap();
    let mut sink = BrokerOptions::new(broker.url(), unique("ceiling"));
    sink.topic_prefix = Some(unique("ceiling"));
    let top = ceiling(
        sink,
        &fleet,
        20,
        4,
        Encoding::Json,
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    assert!(top.messages > 0);
    assert_eq!(top.readings, top.messages * 4);
    assert!(top.readings_per_second > 0.0);
}

// One test, brokers in turn: two loads at once would move each other's metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_measures_a_complete_load_on_both_brokers_and_the_broker_ceiling() {
    load_at_a_fixed_rate(Broker::Embedded).await;
    load_at_a_fixed_rate(Broker::Mosquitto).await;
    ceiling_of_a_broker().await;
}
