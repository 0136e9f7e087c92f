//! Alerts end to end, through a real broker: a gateway plays a scenario (`firmware-sim`),
//! quantrac raises alerts, and inspectors see them on the MQTT alert topic, on the event
//! stream and in the API, acknowledge them, and see them resolve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Broker, Service, Site, StoreKind};
use firmware_sim::scenario::{Scenario, Step};
use firmware_sim::{Encoding, Fleet, Publisher};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

const ZONE: &str = "DN-AMATA";
const WW: &str = "DN-AMATA-WW01";
const WAIT: Duration = Duration::from_secs(15);

/// Alert events published on the MQTT alert topics of the site.
struct MqttAlerts(mpsc::UnboundedReceiver<Value>);

impl MqttAlerts {
    async fn subscribe(svc: &Service) -> MqttAlerts {
        let url = svc.broker_url();
        let address = url.trim_start_matches("mqtt://");
        let (host, port) = address.rsplit_once(':').unwrap();
        let mut options =
            MqttOptions::new(common::unique("alert-sub"), host, port.parse().unwrap());
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client
            .subscribe(svc.topic("alerts/#"), QoS::AtLeastOnce)
            .await
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _client = client;
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v: Value = serde_json::from_slice(&p.payload).unwrap();
                        assert_eq!(
                            p.topic.rsplit('/').next(),
                            v["alert"]["station"].as_str(),
                            "topic names the station"
                        );
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        tokio::time::timeout(WAIT, ready_rx).await.unwrap().unwrap();
        MqttAlerts(rx)
    }

    /// The next event of `kind` for `rule` (others are skipped), within the wait.
    async fn next(&mut self, kind: &str, rule: &str) -> Value {
        let wanted = async {
            loop {
                let v = self.0.recv().await.expect("the subscriber runs");
                if v["event"] == kind && v["alert"]["rule"] == rule && v["alert"]["station"] == WW {
                    return v;
                }
            }
        };
        tokio::time::timeout(WAIT, wanted)
            .await
            .unwrap_or_else(|_| panic!("no {kind} event of {rule} on MQTT"))
    }
}

/// Server-sent events from `GET /api/v1/alerts/stream`.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(svc: &Service, query: &str) -> Stream {
        let response = svc
            .http
            .get(format!("{}/api/v1/alerts/stream?{query}", svc.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Stream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (name and JSON data), skipping keep-alive comments.
    async fn next(&mut self) -> (String, Value) {
        let next = async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut name = None;
                    let mut data = None;
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            name = Some(v.trim().to_owned());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
                        }
                    }
                    if let (Some(name), Some(data)) = (name, data) {
                        return (name, data);
                    }
                    continue;
                }
                let chunk = self
                    .response
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream stays open");
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        };
        tokio::time::timeout(WAIT, next)
            .await
            .expect("an event on the stream")
    }

    async fn next_of(&mut self, kind: &str, rule: &str) -> Value {
        loop {
            let (name, data) = self.next().await;
            if name == kind && data["alert"]["rule"] == rule {
                return data;
            }
        }
    }
}

async fn play(svc: &Service, gw: &Publisher, scenario: Scenario, param: &str) -> u64 {
    let fleet = Fleet::load(svc.running.config().registry.seeds.as_path()).unwrap();
    let station = fleet.station(WW).unwrap();
    let param = station.parameters.iter().find(|p| p.name == param).unwrap();
    let steps = scenario.steps(param, 6);
    let report = firmware_sim::play(
        gw,
        station,
        param,
        Encoding::Json,
        &steps,
        Duration::from_millis(150),
    )
    .await
    .unwrap();
    report.messages
}

/// Publishes one COD reading stamped now (later than any before it, even within a
/// millisecond: readings are identified by their time).
async fn cod(gw: &Publisher, value: f64) {
    static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let now = chrono::Utc::now().timestamp_millis();
    let ts = now.max(LAST.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1);
    LAST.fetch_max(ts, std::sync::atomic::Ordering::SeqCst);
    // The record counter goes up with every record, as a gateway's does; numbered by time
    // like `firmware_sim::play`'s records, so that the two can take turns on a station.
    let seq = u64::try_from(ts).unwrap_or(0);
    let record = common::record(WW, ts, seq, &[("COD", value, "mg/L")]);
    gw.publish_records(ZONE, WW, Encoding::Json, &[record])
        .await
        .unwrap();
}

async fn alerts(svc: &Service, query: &str) -> Vec<Value> {
    svc.ok(&format!("/api/v1/alerts?{query}")).await["alerts"]
        .as_array()
        .unwrap()
        .clone()
}

on_both_brokers!(a_sustained_exceedance_opens_one_alert_seen_everywhere_and_resolves_only_below_the_clear_threshold);

async fn a_sustained_exceedance_opens_one_alert_seen_everywhere_and_resolves_only_below_the_clear_threshold(
    broker: Broker,
) {
    let site = Site::new(broker, "exceedance");
    let svc = site.start().await;
    let mut mqtt = MqttAlerts::subscribe(&svc).await;
    let mut stream = Stream::open(&svc, &format!("station={WW}&severity=warning")).await;
    let gw = svc.publisher().await;

    // Three normal readings, then six above the limit (135 mg/L), then... (first 9 steps).
    let fleet = Fleet::load(svc.running.config().registry.seeds.as_path()).unwrap();
    let station = fleet.station(WW).unwrap();
    let param = station.parameters.iter().find(|p| p.name == "COD").unwrap();
    let steps: Vec<Step> = Scenario::Exceedance
        .steps(param, 0)
        .into_iter()
        .take(9)
        .collect();
    firmware_sim::play(
        &gw,
        station,
        param,
        Encoding::Json,
        &steps,
        Duration::from_millis(150),
    )
    .await
    .unwrap();
    svc.wait_processed(9).await;

    let opened = mqtt.next("opened", "limit-inst").await;
    let id = opened["alert"]["id"].as_u64().unwrap();
    assert_eq!(opened["alert"]["param"], "COD");
    assert_eq!(opened["alert"]["threshold"], 135.0);
    assert_eq!(opened["backfilled"], false);
    let streamed = stream.next_of("opened", "limit-inst").await;
    assert_eq!(streamed["alert"]["id"], id);
    let open = alerts(&svc, &format!("station={WW}&state=open")).await;
    assert_eq!(open.len(), 1, "exactly one alert: {open:?}");
    assert_eq!(open[0]["id"], id);
    assert_eq!(open[0]["count"], 6, "every exceeding reading counted");

    // Acknowledge.
    let ack = svc
        .http
        .post(format!("{}/api/v1/alerts/{id}/ack", svc.base))
        .json(&serde_json::json!({"by": "Nguyen Van A", "note": "team on the way"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 200);
    let acked: Value = ack.json().await.unwrap();
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(acked["ack"]["by"], "Nguyen Van A");
    assert_eq!(
        mqtt.next("acknowledged", "limit-inst").await["alert"]["id"],
        id
    );
    assert_eq!(
        stream.next_of("acknowledged", "limit-inst").await["alert"]["ack"]["note"],
        "team on the way"
    );

    // Below the limit but inside the 5% band: still active.
    cod(&gw, 130.0).await;
    svc.wait_processed(10).await;
    let one = svc.ok(&format!("/api/v1/alerts/{id}")).await;
    assert_eq!(one["state"], "acknowledged");
    // Below the clear threshold (128.25): resolved.
    cod(&gw, 120.0).await;
    let resolved = mqtt.next("resolved", "limit-inst").await;
    assert_eq!(resolved["alert"]["id"], id);
    assert_eq!(
        stream.next_of("resolved", "limit-inst").await["alert"]["id"],
        id
    );
    let one = svc.ok(&format!("/api/v1/alerts/{id}")).await;
    assert_eq!(one["state"], "resolved");
    assert!(one["resolved_at"].is_string());

    // Acknowledging a resolved alert is a conflict; an unknown one is not found.
    let again = svc
        .http
        .post(format!("{}/api/v1/alerts/{id}/ack", svc.base))
        .json(&serde_json::json!({"by": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "alert_resolved");
    let (status, _) = svc.get("/api/v1/alerts/999999").await;
    assert_eq!(status, 404);
    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}

async fn an_early_warning_is_raised_before_the_limit_is_crossed(store: StoreKind) {
    let Some(site) = Site::on(store, Broker::Embedded, "early") else {
        return;
    };
    let svc = site.start().await;
    let mut mqtt = MqttAlerts::subscribe(&svc).await;
    let gw = svc.publisher().await;
    let sent = play(&svc, &gw, Scenario::EarlyWarning, "COD").await;
    svc.wait_processed(sent).await;
    let warning = mqtt.next("opened", "early-warning").await;
    assert_eq!(warning["alert"]["severity"], "info");
    assert!(
        warning["alert"]["last_value"].as_f64().unwrap() >= 135.0,
        "projected past the limit"
    );
    // ...while no reading crossed it: no limit alert at all.
    let limit = alerts(&svc, &format!("station={WW}")).await;
    assert!(limit.iter().all(|a| a["rule"] != "limit-inst"), "{limit:?}");
    let latest = svc.ok(&format!("/api/v1/stations/{WW}/latest")).await;
    assert!(latest["readings"][0]["value"].as_f64().unwrap() < 135.0);
    gw.disconnect().await.unwrap();
    svc.stop().await;
}

async fn a_device_fault_reported_with_status_02_raises_an_alert_that_clears_when_measuring_resumes(
    store: StoreKind,
) {
    let Some(site) = Site::on(store, Broker::Embedded, "fault") else {
        return;
    };
    let svc = site.start().await;
    let mut mqtt = MqttAlerts::subscribe(&svc).await;
    let gw = svc.publisher().await;
    play(&svc, &gw, Scenario::DeviceFault, "NH4").await;
    let opened = mqtt.next("opened", "device-fault").await;
    assert_eq!(opened["alert"]["param"], "NH4");
    mqtt.next("resolved", "device-fault").await;
    gw.disconnect().await.unwrap();
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_that_stops_sending_raises_no_data_on_the_clock_and_clears_when_data_returns() {
    let site = Site::fast(Broker::Mosquitto, "nodata");
    let svc = site.start().await;
    let mut stream = Stream::open(&svc, &format!("station={WW}")).await;
    let gw = svc.publisher().await;
    cod(&gw, 50.0).await;
    svc.wait_processed(1).await;
    // Expected every second, no data after three: the clock opens the alert.
    let opened = stream.next_of("opened", "no-data").await;
    assert_eq!(opened["alert"]["param"], Value::Null);
    assert!(opened["alert"]["message"]
        .as_str()
        .unwrap()
        .contains("no data from DN-AMATA-WW01"));
    cod(&gw, 50.0).await;
    let resolved = stream.next_of("resolved", "no-data").await;
    assert_eq!(resolved["alert"]["id"], opened["alert"]["id"]);
    // The gateway's own announcement is a separate alert.
    gw.publish_status(ZONE, WW, false).await.unwrap();
    stream.next_of("opened", "gateway-offline").await;
    gw.publish_status(ZONE, WW, true).await.unwrap();
    stream.next_of("resolved", "gateway-offline").await;
    gw.publish_raw(&svc.topic(&format!("{ZONE}/{WW}/status")), Vec::new(), true)
        .await
        .unwrap();
    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}

async fn open_alerts_survive_a_restart_and_are_not_announced_again(store: StoreKind) {
    let Some(site) = Site::on(store, Broker::Embedded, "restart") else {
        return;
    };
    let id = {
        let svc = site.start().await;
        let gw = svc.publisher().await;
        let mut mqtt = MqttAlerts::subscribe(&svc).await;
        cod(&gw, 150.0).await;
        cod(&gw, 160.0).await;
        let id = mqtt.next("opened", "limit-inst").await["alert"]["id"]
            .as_u64()
            .unwrap();
        gw.disconnect().await.unwrap();
        svc.stop().await;
        id
    };
    let svc = site.start().await;
    let mut mqtt = MqttAlerts::subscribe(&svc).await;
    let open = alerts(&svc, &format!("station={WW}&state=open")).await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["id"], id);
    let gw = svc.publisher().await;
    // Still above the limit: the same alert goes on, nothing is announced as new...
    cod(&gw, 170.0).await;
    // ...and below the clear threshold it resolves: that is the first event after the restart.
    cod(&gw, 100.0).await;
    let first = tokio::time::timeout(WAIT, mqtt.0.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first["event"], "resolved", "{first}");
    assert_eq!(first["alert"]["id"], id);
    assert_eq!(first["alert"]["count"], 3);
    assert_eq!(first["alert"]["peak_value"], 170.0);
    gw.disconnect().await.unwrap();
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_receive_events_of_their_zone_and_failed_deliveries_are_listed() {
    use axum::routing::post;
    // A webhook receiver that records what it gets.
    let (tx, mut received) = mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dead = format!("http://{}/gone", quantrac::mqtt::free_local_addr().unwrap());

    let site = Site::new(Broker::Embedded, "webhooks");
    let mut config = site.config();
    config.alerts.delivery.max_attempts = 2;
    config.alerts.delivery.backoff_min = Duration::from_millis(10);
    config.alerts.delivery.backoff_max = Duration::from_millis(20);
    let route = |url: &str, zones: &[&str]| quantrac::config::WebhookConfig {
        url: url.to_owned(),
        zones: zones.iter().map(|z| (*z).to_owned()).collect(),
        min_severity: quantrac::alerts::Severity::Warning,
        include_backfilled: false,
    };
    config.alerts.webhooks = vec![
        route(&hook, &[ZONE]),
        route(&dead, &[]),
        route(&hook, &["BN-VSIP"]),
    ];
    let svc = Service::start(config).await;
    let gw = svc.publisher().await;
    cod(&gw, 150.0).await;
    cod(&gw, 160.0).await;
    let got = tokio::time::timeout(WAIT, received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["event"], "opened");
    assert_eq!(got["alert"]["station"], WW);
    // The dead endpoint's failure is listed once its attempts are spent.
    let listed = tokio::time::timeout(WAIT, async {
        loop {
            let body = svc.ok("/api/v1/alerts/webhooks").await;
            if body["webhooks"][1]["failed"] == 1 {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the failure is listed");
    let hooks = listed["webhooks"].as_array().unwrap();
    assert_eq!(hooks[0]["delivered"], 1);
    assert_eq!(hooks[1]["recent_failures"][0]["attempts"], 2);
    assert_eq!(
        hooks[2]["delivered"], 0,
        "another zone's webhook got nothing"
    );
    assert!(received.try_recv().is_err(), "one event, delivered once");
    gw.disconnect().await.unwrap();
    svc.stop().await;
}

on_both_stores!(
    an_early_warning_is_raised_before_the_limit_is_crossed,
    a_device_fault_reported_with_status_02_raises_an_alert_that_clears_when_measuring_resumes,
    open_alerts_survive_a_restart_and_are_not_announced_again,
);
