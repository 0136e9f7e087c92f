//! End to end: how many readings per second quantrac stores when `firmware-sim` floods the
//! device endpoint. Not a criterion bench (one long run per case, not many short ones):
//! `cargo bench --bench e2e_flood [-- RECORDS]`.
//!
//! For each encoding and message shape it starts a fresh quantrac (device endpoint on a free
//! port, embedded store in a temporary directory, the default `storage.sync = "full"`),
//! publishes RECORDS records (6-8 readings each) as fast as the broker acknowledges them,
//! and stops the clock when quantrac reports every message durable and acknowledged
//! (its own progress signal). Prints one line per case and a JSON summary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right
use std::path::Path;
use std::time::{Duration, Instant};

use firmware_sim::{flood, BrokerOptions, Encoding, Fleet};
use quantrac::config::Config;

fn main() {
    let records: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(60_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let fleet = Fleet::load(&seeds).expect("the fleet loads");
    let mut results = Vec::new();
    println!(
        "{:<8} {:>11} {:>9} {:>10} {:>13} {:>14}",
        "encoding", "per_message", "messages", "readings", "seconds", "readings/s"
    );
    for per_message in [1usize, 12] {
        for encoding in [Encoding::Json, Encoding::Bincode, Encoding::Tt10] {
            let r = runtime.block_on(run_case(&seeds, &fleet, encoding, per_message, records));
            println!(
                "{:<8} {:>11} {:>9} {:>10} {:>13.2} {:>14.0}",
                encoding.as_str(),
                per_message,
                r.messages,
                r.readings,
                r.seconds,
                r.readings as f64 / r.seconds
            );
            results.push(format!(
                "{{\"encoding\":\"{}\",\"per_message\":{},\"messages\":{},\"readings\":{},\"seconds\":{:.3},\"readings_per_s\":{:.0}}}",
                encoding.as_str(), per_message, r.messages, r.readings, r.seconds, r.readings as f64 / r.seconds
            ));
        }
    }
    println!("[{}]", results.join(","));
}

struct Outcome {
    messages: u64,
    readings: u64,
    seconds: f64,
}

async fn run_case(
    seeds: &Path,
    fleet: &Fleet,
    encoding: Encoding,
    per_message: usize,
    records: u64,
) -> Outcome {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = Config::builtin();
    config.api.listen = "127.0.0.1:0".parse().expect("an address");
    config.storage.path = dir.path().join("data");
    config.registry.seeds = seeds.to_owned();
    config.mqtt.endpoint.listen = quantrac::mqtt::free_local_addr().expect("a free port");
    let running = quantrac::app::start(config).await.expect("quantrac starts");
    running.wait_ready().await;

    let stations = fleet.stations.len() as i64;
    let span_ms = (records as i64 / stations + 1) * 1000;
    let start_ms = chrono::Utc::now().timestamp_millis() - span_ms - 60_000;
    let broker = BrokerOptions::new(
        running.broker.to_string(),
        format!("flood-{}", encoding.as_str()),
    );
    let started = Instant::now();
    let report = flood(broker, fleet, encoding, records, per_message, start_ms)
        .await
        .expect("the flood completes");
    tokio::time::timeout(
        Duration::from_secs(600),
        running.wait_processed(report.messages),
    )
    .await
    .expect("quantrac stores everything");
    let seconds = started.elapsed().as_secs_f64();
    running.stop().await;
    Outcome {
        messages: report.messages,
        readings: report.readings,
        seconds,
    }
}
