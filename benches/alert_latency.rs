//! Publish-to-alert latency through the device endpoint: `cargo bench --bench alert_latency
//! [-- SECONDS]`.
//!
//! A gateway publishes single-reading messages at a fixed rate (1,000 and 10,000 readings per
//! second) whose values alternate above and below a limit, with a rule that opens on one
//! reading and clears at once, so every reading raises an alert event. A subscriber on the
//! MQTT alert topic notes when each event arrives; the latency is from the publish of the
//! reading to the arrival of its event: broker, ingest, validation, rule evaluation, the
//! store's durable commit (`storage.sync = "full"`), and the alert publisher.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firmware_sim::{BrokerOptions, Encoding, Publisher, Reading, Record, Status};
use parking_lot::Mutex;
use quantrac::config::Config;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const ZONE: &str = "DN-AMATA";
const STATION: &str = "DN-AMATA-WW01";

fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "readings/s", "events", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    let mut json = Vec::new();
    for rate in [1_000u64, 10_000] {
        let r = runtime.block_on(run(rate, Duration::from_secs(seconds)));
        println!(
            "{:>12} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            rate, r.events, r.p50, r.p95, r.p99, r.max
        );
        json.push(format!(
            "{{\"rate\":{rate},\"sent\":{},\"events\":{},\"p50_ms\":{:.2},\"p95_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
            r.sent, r.events, r.p50, r.p95, r.p99, r.max
        ));
    }
    println!("[{}]", json.join(","));
}

struct Outcome {
    sent: u64,
    events: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

fn seeds(dir: &Path) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for file in ["zones.toml", "stations.toml", "limits.csv"] {
        std::fs::copy(shipped.join(file), dir.join(file)).unwrap();
    }
    // Every reading above 135 mg/L opens, every one below clears: one event per reading.
    std::fs::write(
        dir.join("rules.toml"),
        "[exceedance]\nfor_count = 1\nhysteresis = 0.0\n",
    )
    .unwrap();
}

async fn run(rate: u64, duration: Duration) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    seeds(dir.path());
    let mut config = Config::builtin();
    config.api.listen = "127.0.0.1:0".parse().unwrap();
    config.storage.path = dir.path().join("data");
    config.registry.seeds = dir.path().to_owned();
    config.mqtt.endpoint.listen = quantrac::mqtt::free_local_addr().unwrap();
    let running = quantrac::app::start(config).await.unwrap();
    running.wait_ready().await;
    let broker = running.broker.clone();

    // The subscriber: arrival time of each event, by the reading's timestamp.
    let arrivals: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let mut options = MqttOptions::new("latency-sub", broker.host.clone(), broker.port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    client
        .subscribe("quantrac/v1/alerts/#", QoS::AtMostOnce)
        .await
        .unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let seen = arrivals.clone();
    tokio::spawn(async move {
        let _client = client;
        let mut ready = Some(ready_tx);
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let at = Instant::now();
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    // The reading that caused it: opening (last_at) or clearing (resolved_at).
                    let alert = &v["alert"];
                    let time = alert["resolved_at"]
                        .as_str()
                        .or(alert["last_at"].as_str())
                        .unwrap();
                    let ts = chrono::DateTime::parse_from_rfc3339(time)
                        .unwrap()
                        .timestamp_millis();
                    seen.lock().insert(ts, at);
                }
                _ => {}
            }
        }
    });
    ready_rx.await.unwrap();

    let mut options = BrokerOptions::new(broker.to_string(), format!("latency-pub-{rate}"));
    options.inflight = 1000;
    let publisher = Publisher::connect(options).await.unwrap();
    let sent_at: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let start_ms = chrono::Utc::now().timestamp_millis();
    let per_ms = (rate as f64 / 1000.0).max(0.001);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while started.elapsed() < duration {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * 1000.0 * per_ms) as u64;
        while sent < due {
            // Distinct times a tenth of a millisecond apart would collide: one ms each.
            let ts = start_ms + sent as i64;
            let value = if sent.is_multiple_of(2) { 200.0 } else { 100.0 };
            let record = Record {
                station: STATION.into(),
                ts_ms: ts,
                seq: Some(sent),
                readings: vec![Reading {
                    param: "COD".into(),
                    value,
                    unit: "mg/L".into(),
                    status: Status::Measuring,
                }],
            };
            sent_at.lock().insert(ts, Instant::now());
            publisher
                .publish_records(ZONE, STATION, Encoding::Json, &[record])
                .await
                .unwrap();
            sent += 1;
        }
    }
    publisher.wait_acked().await.unwrap();
    running.wait_processed(sent).await;
    // Let the last events reach the subscriber.
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrivals.lock().len() < sent as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latencies: Vec<f64> = {
        let sent_at = sent_at.lock();
        arrivals
            .lock()
            .iter()
            .filter_map(|(ts, at)| {
                sent_at
                    .get(ts)
                    .map(|s| at.duration_since(*s).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let outcome = Outcome {
        sent,
        events: latencies.len(),
        p50: q(0.50),
        p95: q(0.95),
        p99: q(0.99),
        max: *latencies.last().unwrap(),
    };
    publisher.disconnect().await.unwrap();
    running.stop().await;
    outcome
}
