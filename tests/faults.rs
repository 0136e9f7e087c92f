//! Faults: nothing acknowledged is ever lost.
//!
//! - the store fails for a while (a fault switch on the embedded store): writes are spooled
//!   and acknowledged, then replayed; every reading is stored once;
//! - quantrac is killed with SIGKILL in the middle of a load, then restarted: exactly the
//!   readings published are stored;
//! - the broker restarts in the middle of a load: nothing is lost;
//! - quantrac stops and starts again while a device publishes to its device endpoint: every
//!   message the device had acknowledged is stored;
//! - shutdown runs its steps in order, and SIGTERM stops the binary cleanly.
//!
//! The broker tests run their own Mosquitto (on a free port, configured as
//! `docs/configuration.md` advises for production) so that they can stop it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::processes::{
    serve_command, spawn, terminate, wait_ready, Api, PrivateMosquitto, Served,
};
use common::{record, Broker, Service, Site};
use firmware_sim::{BrokerOptions, Encoding, Publisher};
use quantrac::storage::faults::FaultSwitch;

const ZONE: &str = "BN-VSIP";
const ST: &str = "BN-VSIP-ST01";

/// Publishes readings `from..to` of one parameter, one message each, distinct times.
async fn publish(gw: &Publisher, t0: i64, range: std::ops::Range<u64>) {
    for i in range {
        let rec = record(
            ST,
            t0 + i as i64 * 1000,
            i,
            &[("SO2", (i % 400) as f64, "mg/Nm3")],
        );
        gw.publish_records(ZONE, ST, Encoding::Json, &[rec])
            .await
            .unwrap();
    }
}

/// quantrac's API with a token to read it.
impl Api {
    /// The API of an in-process quantrac.
    fn of(running: &quantrac::app::Running) -> Api {
        let (token, _) = running
            .security()
            .create_token("faults", quantrac::security::Role::Viewer, "test", None)
            .unwrap();
        Api {
            base: format!("http://{}", running.api_addr),
            http: common::authorized(&token),
        }
    }
}

/// How many SO2 readings are stored from `t0` on (0 while the API does not answer), from
/// daily counts: no page limit.
async fn stored(api: &Api, t0: i64) -> usize {
    let url = format!(
        "{}/api/v1/readings?station={ST}&param=SO2&from={t0}&to={}&bucket=1d&agg=count",
        api.base,
        t0 + 86_400_000
    );
    let Ok(response) = api.http.get(url).send().await else {
        return 0;
    };
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["series"][0]["points"].as_array().map_or(0, |points| {
        points
            .iter()
            .filter_map(|p| p["count"].as_u64())
            .sum::<u64>() as usize
    })
}

/// Waits (bounded) until the API shows `n` readings; returns what it shows last.
async fn wait_stored(api: &Api, t0: i64, n: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let got = stored(api, t0).await;
        if got >= n || Instant::now() > deadline {
            return got;
        }
        // Replay and redelivery have no signal visible from outside: poll the API.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn t0() -> i64 {
    common::recent_minute(120)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_loses_nothing_and_stores_every_reading_once() {
    let site = Site::new(Broker::Embedded, "outage");
    let faults = FaultSwitch::new();
    let options = quantrac::app::Options {
        store_faults: Some(faults.clone()),
    };
    let running = quantrac::app::start_with(site.config(), options)
        .await
        .unwrap();
    running.wait_ready().await;
    let svc_base = Api::of(&running);
    let mut opts = BrokerOptions::new(running.broker.to_string(), common::unique("gw"));
    opts.topic_prefix = Some(site.prefix.clone());
    let gw = Publisher::connect(opts).await.unwrap();
    let t0 = t0();
    const N: u64 = 600;

    publish(&gw, t0, 0..200).await;
    running.wait_processed(200).await;
    faults.set_failing(true);
    publish(&gw, t0, 200..400).await;
    // Acknowledged from the spool while the store is down...
    tokio::time::timeout(Duration::from_secs(30), running.wait_processed(400))
        .await
        .unwrap();
    assert!(faults.refused() > 0, "the store really refused writes");
    assert_eq!(
        stored(&svc_base, t0).await,
        200,
        "...and not in the store yet"
    );
    // The same readings again while it is down (a gateway re-sending): still stored once.
    publish(&gw, t0, 300..400).await;
    faults.set_failing(false);
    publish(&gw, t0, 400..N).await;
    let got = wait_stored(&svc_base, t0, N as usize, Duration::from_secs(60)).await;
    assert_eq!(got, N as usize, "every reading, once");
    gw.disconnect().await.unwrap();
    let report = running.stop().await;
    assert!(report.all_done(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_device_endpoint_first_and_the_api_last_within_bounded_time() {
    // The gateway outlives quantrac, as in production: what quantrac had not yet
    // acknowledged when it stopped, the gateway sends again when it comes back.
    let site = Site::with_lasting_broker(Broker::Embedded, "order");
    let svc = site.start().await;
    let gw = svc.publisher().await;
    let t0 = t0();
    publish(&gw, t0, 0..50).await;
    gw.wait_acked().await.unwrap();
    let base = svc.base.clone();
    let report = svc.running.stop().await;
    assert_eq!(
        report.order(),
        ["endpoint", "monitor", "notifiers", "store", "api"]
    );
    assert!(report.all_done(), "{report:?}");
    assert!(report.took() < Duration::from_secs(15), "{report:?}");
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "the API is down last"
    );
    // Every message is stored after a restart: what quantrac acknowledged was durable, and
    // what it had not acknowledged is sent again.
    let svc = site.start().await;
    assert_eq!(
        wait_stored(&Api::of(&svc.running), t0, 50, Duration::from_secs(30)).await,
        50
    );
    gw.disconnect().await.unwrap();
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_holds_back_acknowledgements_and_the_gateway_keeps_the_rest() {
    let site = Site::new(Broker::Embedded, "backpressure");
    let mut config = site.config();
    // The gateway sends at most 100 unacknowledged messages (its window), all held by the
    // endpoint while the store stalls; it keeps the rest.
    config.mqtt.queue_capacity = 128;
    config.storage.queue_capacity = 16;
    config.storage.batch_max_rows = 16;
    config.storage.spool.enabled = false; // no spool: a failing store stalls the writer
    config.mqtt.stall_after = Duration::from_secs(1);
    let faults = FaultSwitch::new();
    faults.set_failing(true);
    let options = quantrac::app::Options {
        store_faults: Some(faults.clone()),
    };
    let running = quantrac::app::start_with(config, options).await.unwrap();
    running.wait_ready().await;
    let mut opts = BrokerOptions::new(running.broker.to_string(), common::unique("gw"));
    opts.topic_prefix = Some(site.prefix.clone());
    let gw = std::sync::Arc::new(Publisher::connect(opts).await.unwrap());
    let t0 = t0();
    const N: u64 = 400;
    // The gateway publishes as fast as it may: at most its window (100) unacknowledged.
    let load = tokio::spawn({
        let gw = gw.clone();
        async move { publish(&gw, t0, 0..N).await }
    });
    while running.ingest().received() == 0 {
        // Another task's progress: nothing to wait on but the count.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // For two seconds, what quantrac holds never exceeds the gateway's window (100), and
    // nothing is acknowledged.
    let bound = 100;
    let mut held = 0;
    for _ in 0..40 {
        let ingest = running.ingest();
        held = ingest.received() - *running.processed().borrow();
        assert!(held <= bound, "quantrac holds {held} messages");
        assert_eq!(
            *running.processed().borrow(),
            0,
            "nothing acknowledged while the store is down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(held > 0, "it did take what its queues hold");
    assert!(running.ingest().received() < N, "the gateway kept the rest");
    let base = Api::of(&running);
    let (code, body) = readiness(&base.base).await;
    assert_eq!(code, 503, "a stuck ingest is not ready: {body}");
    assert!(
        body["ingest"]
            .as_str()
            .is_some_and(|s| s.starts_with("stalled")),
        "readiness says why: {body}"
    );
    faults.set_failing(false);
    tokio::time::timeout(Duration::from_secs(60), running.wait_processed(N))
        .await
        .expect("everything flows once the store is back");
    let (code, body) = readiness(&base.base).await;
    assert_eq!(code, 200, "ready again once ingest moves: {body}");
    load.await.unwrap();
    gw.wait_acked().await.unwrap();
    assert_eq!(
        wait_stored(&base, t0, N as usize, Duration::from_secs(30)).await,
        N as usize
    );
    let Ok(gw) = std::sync::Arc::try_unwrap(gw) else {
        panic!("the load is over: nothing else holds the gateway");
    };
    gw.disconnect().await.unwrap();
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_in_the_middle_of_a_load_loses_nothing() {
    let broker = PrivateMosquitto::start();
    let mut broker = broker;
    let site = Site::new(Broker::Embedded, "broker-restart");
    let mut config = site.config();
    config.mqtt.url = Some(broker.url());
    let svc = Service::start(config).await;
    let mut opts = BrokerOptions::new(broker.url(), common::unique("gw"));
    opts.topic_prefix = Some(site.prefix.clone());
    let gw = Publisher::connect(opts).await.unwrap();
    let t0 = t0();
    const N: u64 = 1000;
    publish(&gw, t0, 0..N / 2).await;
    gw.wait_acked().await.unwrap();
    broker.restart();
    publish(&gw, t0, N / 2..N).await;
    tokio::time::timeout(Duration::from_secs(60), gw.wait_acked())
        .await
        .unwrap()
        .unwrap();
    let got = wait_stored(
        &Api::of(&svc.running),
        t0,
        N as usize,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(got, N as usize);
    gw.disconnect().await.unwrap();
    svc.stop().await;
}

/// A broker restarted without its persistence has forgotten quantrac's session and dropped
/// what was published for it meanwhile: quantrac cannot get that back, but it must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_lost_quantracs_session_is_reported_and_counted() {
    let mut broker = PrivateMosquitto::start_without_persistence();
    let site = Site::new(Broker::Embedded, "session-lost");
    let mut config = site.config();
    config.mqtt.url = Some(broker.url());
    let svc = Service::start(config).await;
    let lost = |text: &str| text.contains("quantrac_mqtt_sessions_lost_total 1");
    assert!(!lost(&svc.metrics_text().await), "nothing lost yet");
    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The reconnect happens inside quantrac; from outside it shows in the metrics.
    while !lost(&svc.metrics_text().await) {
        assert!(
            Instant::now() < deadline,
            "the lost session was not counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Subscribed again (the readiness signal): what is published now is stored.
    tokio::time::timeout(Duration::from_secs(30), svc.running.wait_ready())
        .await
        .expect("subscribed again");
    let mut opts = BrokerOptions::new(broker.url(), common::unique("gw"));
    opts.topic_prefix = Some(site.prefix.clone());
    let gw = Publisher::connect(opts).await.unwrap();
    let t0 = t0();
    publish(&gw, t0, 0..10).await;
    gw.wait_acked().await.unwrap();
    let stored = wait_stored(&Api::of(&svc.running), t0, 10, Duration::from_secs(30)).await;
    assert_eq!(stored, 10);
    gw.disconnect().await.unwrap();
    svc.stop().await;
}

/// `quantrac serve` on `broker`, configured by environment variables.
/// `quantrac serve` on `broker` with queues far smaller than the broker's window (1,000):
/// a flood overflows every one of them, so a kill lands with messages in each.
fn serve(data: &Path, api: &str, broker: &str, prefix: &str) -> Served {
    let mut command = serve_command(data, api, prefix);
    command
        .env("QUANTRAC_MQTT__URL", broker)
        .env("QUANTRAC_MQTT__QUEUE_CAPACITY", "64")
        .env("QUANTRAC_STORAGE__QUEUE_CAPACITY", "64");
    spawn(command)
}

/// A `quantrac serve` with its device endpoint (open to anonymous devices), started and
/// started again on the same data, API and MQTT addresses.
struct EndpointSite {
    data: tempfile::TempDir,
    api: String,
    mqtt: String,
    base: String,
    prefix: String,
}

impl EndpointSite {
    fn new(label: &str) -> EndpointSite {
        let api = quantrac::mqtt::free_local_addr().unwrap().to_string();
        EndpointSite {
            data: tempfile::tempdir().unwrap(),
            base: format!("http://{api}"),
            api,
            mqtt: quantrac::mqtt::free_local_addr().unwrap().to_string(),
            prefix: common::unique(label),
        }
    }

    /// Starts it and waits until it is ready.
    async fn serve(&self) -> Served {
        self.serve_with(&[]).await
    }

    /// Starts it with more configuration (environment variables) and waits until it is ready.
    async fn serve_with(&self, env: &[(&str, &str)]) -> Served {
        let mut command = serve_command(self.data.path(), &self.api, &self.prefix);
        command
            .env("QUANTRAC_MQTT__ENDPOINT__LISTEN", &self.mqtt)
            .env("QUANTRAC_MQTT__ENDPOINT__ALLOW_ANONYMOUS", "true")
            .envs(env.iter().copied());
        let served = spawn(command);
        wait_ready(&self.base).await;
        served
    }

    fn reader(&self) -> Api {
        Api::for_data(self.data.path(), &self.base)
    }

    fn broker_url(&self) -> String {
        format!("mqtt://{}", self.mqtt)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_load_then_restart_stores_exactly_every_reading() {
    let broker = PrivateMosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let api = quantrac::mqtt::free_local_addr().unwrap().to_string();
    let base = format!("http://{api}");
    let prefix = common::unique("kill");
    let reader = Api::for_data(data.path(), &base);
    let mut quantrac = serve(data.path(), &api, &broker.url(), &prefix);
    wait_ready(&base).await;

    let mut opts = BrokerOptions::new(broker.url(), common::unique("gw"));
    opts.topic_prefix = Some(prefix.clone());
    opts.inflight = 200;
    let gw = Publisher::connect(opts).await.unwrap();
    // An open-loop flood over ten times every queue (quantrac's 64s, Mosquitto's window of
    // 1,000): 12,000 readings a second apart, all in the past.
    let t0 = common::recent_minute(4 * 60);
    const N: u64 = 12_000;
    let load = {
        let gw_ref = &gw;
        async move { publish(gw_ref, t0, 0..N).await }
    };
    let killer = async {
        // Kill once a part of the load is stored: mid-flight, with messages in every stage.
        let mut before = 0;
        while before < 2_000 {
            before = stored(&reader, t0).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        quantrac.kill();
        eprintln!("SIGKILL with at least {before} of {N} readings stored");
    };
    tokio::join!(load, killer);
    tokio::time::timeout(Duration::from_secs(60), gw.wait_acked())
        .await
        .unwrap()
        .unwrap();

    let quantrac = serve(data.path(), &api, &broker.url(), &prefix);
    wait_ready(&base).await;
    let got = wait_stored(&reader, t0, N as usize, Duration::from_secs(90)).await;
    eprintln!("published {N}, stored after the kill and restart: {got}");
    assert_eq!(got, N as usize, "exactly the readings published, each once");

    // SIGTERM: an orderly stop, logged step by step, exit status 0.
    terminate(&quantrac.child);
    let (status, log) = quantrac.finish();
    assert!(status.success(), "{log}");
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no `{needle}` in the log:\n{log}"))
    };
    assert!(at("stopping ingest") < at("closing the store"));
    assert!(at("closing the store") < at("stopping the API"));
    gw.disconnect().await.unwrap();
}

/// The times of the SO2 readings the API returns from `t0` on.
async fn stored_times(api: &Api, t0: i64) -> std::collections::HashSet<i64> {
    let url = format!(
        "{}/api/v1/readings?station={ST}&param=SO2&from={t0}&to={}&limit=10000",
        api.base,
        t0 + 86_400_000
    );
    let body: serde_json::Value = api
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let at = r["ts"].as_str().unwrap();
            chrono::DateTime::parse_from_rfc3339(at)
                .unwrap()
                .timestamp_millis()
        })
        .collect()
}

/// A gateway that sends one message at a time and remembers which ones the broker
/// acknowledged (PUBACK). An unacknowledged message is not sent again (a new session drops
/// it): what it proves is that every acknowledged one is stored.
async fn gateway(
    url: String,
    topic: String,
    t0: i64,
    acked: std::sync::Arc<std::sync::Mutex<Vec<i64>>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let (host, port) = url.trim_start_matches("mqtt://").rsplit_once(':').unwrap();
    let mut options = rumqttc::MqttOptions::new(common::unique("gw"), host, port.parse().unwrap());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
    let mut i: u64 = 0;
    while !stop.is_cancelled() {
        let ts = t0 + i as i64 * 1000;
        let payload = firmware_sim::encode::encode_signed(
            &[record(ST, ts, i, &[("SO2", 50.0, "mg/Nm3")])],
            Encoding::Json,
            None,
        );
        client
            .publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        i += 1;
        let mut cut = false;
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    acked.lock().unwrap().push(ts);
                    break;
                }
                // Connected again after a cut, in a new session: the message was dropped.
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) if cut => break,
                Ok(_) => {}
                Err(_) => {
                    // Refused or cut: this message is not acknowledged; reconnect and go on.
                    cut = true;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if stop.is_cancelled() {
                        return;
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_quantrac_keeps_every_message_a_device_had_acknowledged_on_the_device_endpoint(
) {
    let site = EndpointSite::new("drain");
    let reader = site.reader();
    let quantrac = site.serve().await;

    let t0 = t0();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let topic = format!("{}/quantrac/v1/{ZONE}/{ST}/telemetry/json", site.prefix);
    let device = tokio::spawn(gateway(
        site.broker_url(),
        topic,
        t0,
        acked.clone(),
        stop.clone(),
    ));
    let count = || acked.lock().unwrap().len();
    let wait_for = |n: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        // The gateway's progress is in its own task: poll the shared count.
        while count() < n {
            assert!(
                Instant::now() < deadline,
                "the gateway got {} acknowledgements",
                count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    wait_for(300).await;
    // Stop in the middle of the stream: the device keeps publishing while quantrac stops.
    terminate(&quantrac.child);
    let (status, log) = quantrac.finish();
    assert!(status.success(), "{log}");
    let before = count();
    let quantrac = site.serve().await;
    wait_for(before + 300).await;
    stop.cancel();
    device.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let stored = stored_times(&reader, t0).await;
        let missing: Vec<i64> = acked
            .iter()
            .copied()
            .filter(|t| !stored.contains(t))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "{} messages acknowledged to the device, {} before the restart",
        acked.len(),
        before
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost, first at {:?}",
        missing.len(),
        missing.first()
    );
    terminate(&quantrac.child);
    let (status, log) = quantrac.finish();
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_in_the_middle_of_a_flood_on_the_device_endpoint_loses_nothing() {
    let site = EndpointSite::new("flood-stop");
    let reader = site.reader();
    let quantrac = site.serve().await;

    // A gateway with a wide window: many messages are in flight when the stop comes.
    let mut opts = BrokerOptions::new(site.broker_url(), common::unique("gw"));
    opts.topic_prefix = Some(site.prefix.clone());
    opts.inflight = 200;
    let gw = Publisher::connect(opts).await.unwrap();
    let t0 = t0();
    const N: u64 = 3000;
    let load = async { publish(&gw, t0, 0..N).await };
    let stopper = async {
        while stored(&reader, t0).await < 500 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        terminate(&quantrac.child);
        let (status, log) = quantrac.finish();
        assert!(status.success(), "{log}");
        site.serve().await
    };
    let ((), quantrac) = tokio::join!(load, stopper);
    // The gateway sends again what was not acknowledged; what was is stored already.
    tokio::time::timeout(Duration::from_secs(60), gw.wait_acked())
        .await
        .unwrap()
        .unwrap();
    let got = wait_stored(&reader, t0, N as usize, Duration::from_secs(60)).await;
    assert_eq!(got, N as usize, "every message of the flood is stored");
    gw.disconnect().await.unwrap();
    terminate(&quantrac.child);
    let (status, log) = quantrac.finish();
    assert!(status.success(), "{log}");
}

/// A flood far larger than every queue (the endpoint's window of 16 messages per
/// connection, the store's queue of 16): it is held at the gateway (TCP), and every reading
/// of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_larger_than_every_queue_is_held_at_the_device_and_loses_nothing() {
    let site = Site::new(Broker::Embedded, "held");
    let mut config = site.config();
    config.mqtt.endpoint.receive_maximum = 16;
    config.storage.queue_capacity = 16;
    let svc = Service::start(config).await;
    let mut opts = BrokerOptions::new(svc.broker_url(), common::unique("gw"));
    opts.topic_prefix = Some(site.prefix.clone());
    opts.inflight = 500;
    let gw = Publisher::connect(opts).await.unwrap();
    let t0 = t0();
    // Backlog flushes of 10 records each, 100 ms apart: 40,000 readings.
    const MESSAGES: u64 = 4_000;
    const PER_MESSAGE: u64 = 10;
    for m in 0..MESSAGES {
        let records: Vec<_> = (0..PER_MESSAGE)
            .map(|j| {
                let k = m * PER_MESSAGE + j;
                record(ST, t0 + k as i64 * 100, k, &[("SO2", 50.0, "mg/Nm3")])
            })
            .collect();
        gw.publish_records(ZONE, ST, Encoding::Json, &records)
            .await
            .unwrap();
        // What quantrac holds never exceeds its window (plus what one read brought in).
        assert!(
            svc.running.ingest().held() <= 16 + 64,
            "quantrac holds too much"
        );
    }
    tokio::time::timeout(Duration::from_secs(120), gw.wait_acked())
        .await
        .unwrap()
        .unwrap();
    let want = (MESSAGES * PER_MESSAGE) as usize;
    let got = wait_stored(&Api::of(&svc.running), t0, want, Duration::from_secs(120)).await;
    assert_eq!(got, want, "every reading of the flood is stored");
    gw.disconnect().await.unwrap();
    svc.stop().await;
}

/// `/readyz` of an in-process quantrac: its status code and body.
async fn readiness(base: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap_or_default())
}

/// The Mosquitto of the field report: a window of 1,000 unacknowledged messages towards
/// quantrac, nothing dropped for a slow subscriber; quantrac's own queues 64 and 16 here.
/// An open-loop gateway publishes as fast as Mosquitto acknowledges, 20,000 messages (over
/// ten times every queue, the broker's window included). Before the fix the event loop waited
/// for room in a full inbound queue while the acknowledgements waited for the event loop:
/// nothing more was ever stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_through_mosquitto_larger_than_every_queue_is_stored_whole_and_readiness_stays_true(
) {
    let broker = PrivateMosquitto::start();
    let site = Site::new(Broker::Embedded, "mosquitto-flood");
    let mut config = site.config();
    config.mqtt.url = Some(broker.url());
    config.mqtt.queue_capacity = 64;
    config.mqtt.stall_after = Duration::from_secs(5);
    config.storage.queue_capacity = 16;
    let svc = Service::start(config).await;
    let api = Api::of(&svc.running);
    let base = api.base.clone();
    // Readiness, sampled all along: a stalled ingest must never be reported ready, and a
    // moving one must never be reported stalled.
    let done = tokio_util::sync::CancellationToken::new();
    let watch = tokio::spawn({
        let done = done.clone();
        async move {
            let mut samples = Vec::new();
            while !done.is_cancelled() {
                samples.push(readiness(&base).await);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            samples
        }
    });
    let mut opts = BrokerOptions::new(broker.url(), common::unique("gw"));
    opts.topic_prefix = Some(site.prefix.clone());
    let gw = Publisher::connect(opts).await.unwrap();
    // 20,000 readings a second apart: 5.6 hours, all in the past.
    let t0 = common::recent_minute(8 * 60);
    const N: u64 = 20_000;
    publish(&gw, t0, 0..N).await;
    tokio::time::timeout(Duration::from_secs(120), gw.wait_acked())
        .await
        .expect("Mosquitto acknowledges the whole flood")
        .unwrap();
    let got = wait_stored(&api, t0, N as usize, Duration::from_secs(180)).await;
    done.cancel();
    let samples = watch.await.unwrap();
    let (code, body) = readiness(&api.base).await;
    assert_eq!(got, N as usize, "every acknowledged message is stored");
    let stalled: Vec<_> = samples
        .iter()
        .filter(|(_, b)| b["ingest"] != "ok")
        .collect();
    assert!(
        stalled.is_empty(),
        "ingest moved all along, yet readiness said otherwise: {stalled:?}"
    );
    assert!(samples.len() > 3, "readiness was sampled during the flood");
    assert_eq!(code, 200, "ready once the flood is stored: {body}");
    assert_eq!(body["ingest"], "ok");
    gw.disconnect().await.unwrap();
    svc.stop().await;
}

/// The field report's reproduction on the device endpoint: an open-loop gateway (paho-mqtt,
/// a client nobody here wrote) floods 20,000 records, one per message, as fast as quantrac
/// acknowledges (over ten times every queue: the store's, set to 1,024 here, a connection's
/// window of 256, the client's own of 1,000); quantrac is killed with SIGKILL in the middle
/// and started again; the gateway reconnects and goes on. Every record it was told is
/// received (PUBACK) is stored.
async fn sigkill_in_the_middle_of_a_paho_flood_loses_nothing_acknowledged(version: &str) {
    let paho = Command::new("python3")
        .args(["-c", "import paho.mqtt"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        paho,
        "this test needs Python's paho-mqtt (.ci/run installs it)"
    );
    let site = EndpointSite::new(&format!("kill9-{version}"));
    let reader = site.reader();
    let mut quantrac = site
        .serve_with(&[("QUANTRAC_STORAGE__QUEUE_CAPACITY", "1024")])
        .await;
    const N: usize = 20_000;
    // A second apart: 5.6 hours, all in the past.
    let t0 = common::recent_minute(6 * 60);
    let scratch = tempfile::tempdir().unwrap();
    let acked_file = scratch.path().join("acked.txt");
    let port = site.mqtt.rsplit_once(':').unwrap().1.to_owned();
    let topic = format!("{}/quantrac/v1/{ZONE}/{ST}/telemetry/json", site.prefix);
    let flood = tokio::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/paho_flood.py"))
        .args(["--port", &port, "--version", version, "--topic", &topic])
        .args(["--station", ST, "--param", "SO2", "--unit", "mg/Nm3"])
        .args(["--t0", &t0.to_string(), "--count", &N.to_string()])
        .arg("--out")
        .arg(&acked_file)
        .args(["--timeout", "240"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let acked = || {
        std::fs::read_to_string(&acked_file)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    // The flood's progress is in another process: poll its file.
    while acked() < 3_000 {
        assert!(
            Instant::now() < deadline,
            "the flood got {} acknowledgements",
            acked()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    quantrac.kill();
    let before = acked();
    let quantrac = site
        .serve_with(&[("QUANTRAC_STORAGE__QUEUE_CAPACITY", "1024")])
        .await;
    let out = tokio::time::timeout(Duration::from_secs(300), flood.wait_with_output())
        .await
        .expect("the flood ends")
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    let acked: Vec<i64> = std::fs::read_to_string(&acked_file)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let (stored, _) = reader
        .stored_times(ST, "SO2", t0, t0 + N as i64 * 1000)
        .await;
    let missing: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|t| !stored.contains(t))
        .collect();
    eprintln!(
        "MQTT {version}: {} records acknowledged ({before} before the kill), {} stored, {} acknowledged but missing; {said}",
        acked.len(),
        stored.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged records lost, first at {:?}",
        missing.len(),
        missing.first()
    );
    assert!(
        out.status.success(),
        "every record was acknowledged in the end: {said}"
    );
    assert_eq!(stored.len(), N, "and stored once");
    terminate(&quantrac.child);
    let (status, log) = quantrac.finish();
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_flood_on_the_device_endpoint_loses_nothing_acknowledged_mqtt_3_1_1(
) {
    sigkill_in_the_middle_of_a_paho_flood_loses_nothing_acknowledged("311").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_flood_on_the_device_endpoint_loses_nothing_acknowledged_mqtt_5()
{
    sigkill_in_the_middle_of_a_paho_flood_loses_nothing_acknowledged("5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_quantrac_on_the_same_data_directory_is_refused_with_a_clear_error() {
    let site = Site::new(Broker::Embedded, "lock");
    let first = site.start().await;
    let mut config = site.config();
    // Another endpoint port, the same data directory.
    config.mqtt.endpoint.listen = quantrac::mqtt::free_local_addr().unwrap();
    let Err(second) = quantrac::app::start(config.clone()).await else {
        panic!("a second quantrac started on the same data directory");
    };
    let said = second.to_string();
    assert!(said.contains("in use by another quantrac"), "{said}");
    first.stop().await;
    // Once the first one is gone, the directory is free again.
    let again = quantrac::app::start(config)
        .await
        .expect("the lock is released");
    again.stop().await;
}
