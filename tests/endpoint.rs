//! quantrac's own MQTT device endpoint, through clients nobody here wrote: Python's
//! paho-mqtt (MQTT 5 and 3.1.1) and Mosquitto's `mosquitto_pub` / `mosquitto_sub`, plus raw
//! frames (rumqttc's codec) for what those clients refuse to send.
//!
//! Every PUBLISH is stored, quarantined with a reason, or refused at protocol level: MQTT 5
//! clients see the reason code in the PUBACK, MQTT 3.1.1 clients the connection closed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use common::{Broker, Service, Site};
use rumqttc::mqttbytes::v4;
use serde_json::Value;

const ZONE: &str = "DN-AMATA";
const WW: &str = "DN-AMATA-WW01";
const OTHER: &str = "DN-AMATA-AQ01";
const PASSWORD: &str = "s3cret-gw";

/// A site whose endpoint knows one device, `gw-amata`, for DN-AMATA-WW01 only (and
/// `gw-other`, same password, for DN-AMATA-AQ01).
fn site_with_a_device(label: &str) -> Site {
    let mut site = Site::new(Broker::Embedded, label);
    let seeds = site.dir.path().join("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    for file in ["zones.toml", "limits.csv", "rules.toml", "stations.toml"] {
        std::fs::copy(common::seeds().join(file), seeds.join(file)).unwrap();
    }
    let hash = quantrac::mqtt::devices::hash_password(PASSWORD).unwrap();
    std::fs::write(
        seeds.join("devices.toml"),
        format!(
            "[[device]]\nusername = \"gw-amata\"\npassword_hash = \"{hash}\"\nstations = [\"{WW}\"]\n\n[[device]]\nusername = \"gw-other\"\npassword_hash = \"{hash}\"\nstations = [\"{OTHER}\"]\n"
        ),
    )
    .unwrap();
    site.seeds = Some(seeds);
    site
}

async fn start_without_anonymous(site: &Site) -> Service {
    let mut config = site.config();
    config.mqtt.endpoint.allow_anonymous = false;
    Service::start(config).await
}

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Fails loudly (never skips) when paho-mqtt is missing: `.ci/run` installs it.
fn require_paho() {
    let ok = Command::new("python3")
        .args(["-c", "import paho.mqtt"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "these tests need Python's paho-mqtt: `pip install paho-mqtt` (.ci/run installs it)"
    );
}

/// A quarantine entry of `reason`, if any.
async fn quarantined(svc: &Service, reason: &str) -> Option<Value> {
    let q = svc.ok(&format!("/api/v1/quarantine?reason={reason}")).await;
    q["entries"].as_array().and_then(|e| e.first().cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_clients_on_mqtt_5_and_3_1_1_get_the_answer_each_message_deserves() {
    require_paho();
    let site = site_with_a_device("paho");
    let svc = start_without_anonymous(&site).await;
    let port = svc.running.broker.port.to_string();
    let output = tokio::process::Command::new("python3")
        .arg(script("paho_reasons.py"))
        .args(["--port", &port, "--prefix", &site.prefix, "--zone", ZONE])
        .args(["--station", WW, "--other", OTHER])
        .args(["--user", "gw-amata", "--password", PASSWORD])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "paho script failed: {stderr}");
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("{seen:#}");

    assert_eq!(seen["v5_connack"], "Success");
    assert_eq!(seen["v5_stored"]["code"], 0, "stored: success");
    assert_eq!(
        seen["v5_unknown_topic"]["code"], 0x90,
        "an unknown topic: topic name invalid"
    );
    assert!(
        seen["v5_unknown_topic"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown_topic")),
        "with the reason: {seen}"
    );
    assert_eq!(seen["v5_malformed"]["code"], 0x99, "payload format invalid");
    assert_eq!(
        seen["v5_not_allowed"]["code"], 0x87,
        "another station's topic: not authorized"
    );
    assert_eq!(seen["v5_bad_password_connack"], "Bad user name or password");
    assert_eq!(seen["v311_connack"], "Success");
    assert_eq!(seen["v311_stored"]["code"], 0);
    assert_eq!(
        seen["v311_not_allowed_closed"], true,
        "MQTT 3.1.1 has no negative PUBACK: the connection ends"
    );

    // What was acknowledged as stored is stored; what was rejected is in quarantine, whole.
    let entry = quarantined(&svc, "unknown_topic")
        .await
        .expect("the unknown topic is quarantined");
    assert!(
        entry["topic"].as_str().unwrap().ends_with("/telemetry/xml"),
        "{entry}"
    );
    assert!(quarantined(&svc, "malformed_payload").await.is_some());
    let latest = svc.ok(&format!("/api/v1/stations/{WW}/latest")).await;
    assert_eq!(latest["readings"][0]["param"], "COD", "{latest}");
    let refused = svc.metrics_text().await;
    assert!(
        refused.contains("reason=\"publish_not_allowed\""),
        "refusals are counted"
    );
    svc.stop().await;
}

/// Raw MQTT 3.1.1 frames (rumqttc's codec) on a plain socket: for what well-behaved clients
/// refuse to send.
struct Raw {
    stream: std::net::TcpStream,
}

impl Raw {
    fn connect(svc: &Service, client_id: &str) -> Raw {
        Raw::connect_as(svc, client_id, None)
    }

    fn connect_as(svc: &Service, client_id: &str, login: Option<(&str, &str)>) -> Raw {
        let stream = std::net::TcpStream::connect(("127.0.0.1", svc.running.broker.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = Raw { stream };
        let mut connect = v4::Connect::new(client_id);
        connect.keep_alive = 30;
        if let Some((user, password)) = login {
            connect.set_login(user, password);
        }
        raw.send(v4::Packet::Connect(connect));
        match raw.next() {
            Some(v4::Packet::ConnAck(ack)) => assert_eq!(ack.code, v4::ConnectReturnCode::Success),
            other => panic!("no CONNACK: {other:?}"),
        }
        raw
    }

    fn send(&mut self, packet: v4::Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    /// The next packet, or `None` once the server closed the connection.
    fn next(&mut self) -> Option<v4::Packet> {
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Ok(p) = v4::Packet::read(&mut buf, 1 << 20) {
                return Some(p);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_names_with_wildcards_or_nul_are_refused_at_protocol_level_and_nothing_is_stored() {
    let site = Site::new(Broker::Embedded, "wildcards");
    let svc = site.start().await;
    let record = serde_json::json!({"station": WW, "ts": common::recent_minute(5),
        "readings": [{"param": "COD", "value": 50.0, "unit": "mg/L", "status": "00"}]})
    .to_string();
    for (i, topic) in [
        format!("{}/quantrac/v1/{ZONE}/+/telemetry/json", site.prefix),
        "#".to_owned(),
        format!("{}/quantrac/v1/{ZONE}/{WW}/telemetry/json\0", site.prefix),
    ]
    .into_iter()
    .enumerate()
    {
        let mut raw = Raw::connect(&svc, &format!("raw-{i}"));
        let mut publish =
            v4::Publish::new(topic.clone(), rumqttc::QoS::AtLeastOnce, record.clone());
        publish.pkid = 1;
        raw.send(v4::Packet::Publish(publish));
        assert_eq!(
            raw.next(),
            None,
            "{topic:?}: no PUBACK, the connection is closed"
        );
    }
    let latest = svc.ok(&format!("/api/v1/stations/{WW}/latest")).await;
    assert_eq!(
        latest["readings"].as_array().map_or(0, Vec::len),
        0,
        "{latest}"
    );
    assert!(svc
        .metrics_text()
        .await
        .contains("quantrac_mqtt_refused_total{reason=\"protocol\"}"));
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_client_id_takes_the_session_over() {
    let site = Site::new(Broker::Embedded, "takeover");
    let svc = site.start().await;
    let mut first = Raw::connect(&svc, "gateway-7");
    let mut second = Raw::connect(&svc, "gateway-7");
    assert_eq!(first.next(), None, "the first connection is closed");
    second.send(v4::Packet::PingReq);
    assert_eq!(
        second.next(),
        Some(v4::Packet::PingResp),
        "the second goes on"
    );
    // Clients that send no client id get one each: they never take each other over.
    let mut nameless: Vec<Raw> = (0..2).map(|_| Raw::connect(&svc, "")).collect();
    for client in &mut nameless {
        client.send(v4::Packet::PingReq);
        assert_eq!(
            client.next(),
            Some(v4::Packet::PingResp),
            "both stay connected"
        );
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_device_using_the_same_client_id_cannot_cut_a_device_off() {
    let site = site_with_a_device("no-hijack");
    let svc = start_without_anonymous(&site).await;
    let mut victim = Raw::connect_as(&svc, "gateway-7", Some(("gw-amata", PASSWORD)));
    let mut intruder = Raw::connect_as(&svc, "gateway-7", Some(("gw-other", PASSWORD)));
    victim.send(v4::Packet::PingReq);
    assert_eq!(victim.next(), Some(v4::Packet::PingResp), "still connected");
    intruder.send(v4::Packet::PingReq);
    assert_eq!(
        intruder.next(),
        Some(v4::Packet::PingResp),
        "a session of its own"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_on_mqtt_5_and_3_1_1_is_acknowledged_once_stored() {
    let site = site_with_a_device("mosquitto-pub");
    let svc = start_without_anonymous(&site).await;
    let port = svc.running.broker.port.to_string();
    let topic = format!("{}/quantrac/v1/{ZONE}/{WW}/telemetry/json", site.prefix);
    let t = common::recent_minute(10);
    for (i, version) in ["mqttv5", "mqttv311"].into_iter().enumerate() {
        let ts = t + i as i64 * 60_000;
        let message = serde_json::json!({"station": WW, "ts": ts,
            "readings": [{"param": "COD", "value": 40.0 + i as f64, "unit": "mg/L", "status": "00"}]})
        .to_string();
        // mosquitto_pub exits 0 only once its QoS 1 message is acknowledged.
        let status = tokio::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-q", "1"])
            .args([
                "-u", "gw-amata", "-P", PASSWORD, "-t", &topic, "-m", &message,
            ])
            .status()
            .await
            .expect("mosquitto_pub is installed (.ci/run installs mosquitto-clients)");
        assert!(status.success(), "{version}: acknowledged");
    }
    let page = svc
        .ok(&format!(
            "/api/v1/readings?station={WW}&param=COD&from={t}&to={}",
            t + 3_600_000
        ))
        .await;
    let values: Vec<f64> = page["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, vec![40.0, 41.0], "{page}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspector_follows_alerts_with_mosquitto_sub_and_an_api_token_as_password() {
    let site = site_with_a_device("alerts-sub");
    let svc = start_without_anonymous(&site).await;
    let port = svc.running.broker.port.to_string();
    let (token, _) = svc
        .running
        .security()
        .create_token(
            "duty officer",
            quantrac::security::Role::Viewer,
            "test",
            None,
        )
        .unwrap();
    let filter = format!("{}/quantrac/v1/alerts/{ZONE}/#", site.prefix);
    // A filter outside the alert topics is refused (SUBACK failure: mosquitto_sub says so).
    let refused = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-q", "1"])
        .args([
            "-u",
            "inspector",
            "-P",
            &token,
            "-t",
            "#",
            "-C",
            "1",
            "-W",
            "3",
        ])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr).to_string()
        + &String::from_utf8_lossy(&refused.stdout);
    assert!(
        said.contains("denied") && refused.stdout.is_empty(),
        "`#` is not an alert filter: {said} ({:?})",
        refused.status
    );
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-v",
        ])
        .args([
            "-u",
            "inspector",
            "-P",
            &token,
            "-t",
            &filter,
            "-C",
            "1",
            "-W",
            "60",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The subscription is in place once the endpoint counts the connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !svc
        .metrics_text()
        .await
        .contains("quantrac_mqtt_device_connections 1")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto_sub connects"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give the SUBSCRIBE its round trip: the SUBACK follows the CONNACK at once.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut options = firmware_sim::BrokerOptions::new(svc.broker_url(), common::unique("gw"));
    options.topic_prefix = Some(site.prefix.clone());
    options.username = Some("gw-amata".into());
    options.password = Some(PASSWORD.into());
    let gw = firmware_sim::Publisher::connect(options).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    for i in 0..2 {
        let record = common::record(
            WW,
            now - 2000 + i * 1000,
            now as u64 + i as u64,
            &[("COD", 300.0, "mg/L")],
        );
        gw.publish_records(ZONE, WW, firmware_sim::Encoding::Json, &[record])
            .await
            .unwrap();
    }
    gw.wait_acked().await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), sub.wait_with_output())
        .await
        .expect("mosquitto_sub gets the alert")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let (topic, payload) = text.trim().split_once(' ').unwrap();
    assert_eq!(
        topic,
        format!("{}/quantrac/v1/alerts/{ZONE}/{WW}", site.prefix)
    );
    let event: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(event["event"], "opened");
    assert_eq!(event["alert"]["param"], "COD");
    gw.disconnect().await.unwrap();
    svc.stop().await;
}

/// One gateway of a storm: connects, publishes one record at QoS 1, waits for its PUBACK.
async fn storm_gateway(port: u16, prefix: String, i: i64, t0: i64) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut out = BytesMut::new();
    let mut connect = v4::Connect::new(format!("storm-{i}"));
    connect.keep_alive = 30;
    v4::Packet::Connect(connect)
        .write(&mut out, usize::MAX)
        .unwrap();
    let record = serde_json::json!({"station": WW, "ts": t0 + i * 1000,
        "readings": [{"param": "COD", "value": 50.0, "unit": "mg/L", "status": "00"}]})
    .to_string();
    let mut publish = v4::Publish::new(
        format!("{prefix}/quantrac/v1/{ZONE}/{WW}/telemetry/json"),
        rumqttc::QoS::AtLeastOnce,
        record,
    );
    publish.pkid = 1;
    v4::Packet::Publish(publish)
        .write(&mut out, usize::MAX)
        .unwrap();
    if stream.write_all(&out).await.is_err() {
        return false;
    }
    let mut buf = BytesMut::new();
    loop {
        while let Ok(packet) = v4::Packet::read(&mut buf, 1 << 20) {
            if let v4::Packet::PubAck(ack) = packet {
                return ack.pkid == 1;
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

/// 400 gateways connect and publish at the same instant (a reconnect storm after a network
/// outage; 400 keeps the test within a default limit of 1,024 open files): every one gets
/// its PUBACK, every record is stored, and the API answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_is_served_whole_and_the_api_keeps_answering() {
    let site = Site::new(Broker::Embedded, "storm");
    let svc = site.start().await;
    let port = svc.running.broker.port;
    const N: i64 = 400;
    let t0 = common::recent_minute(60);
    let storm: Vec<_> = (0..N)
        .map(|i| tokio::spawn(storm_gateway(port, site.prefix.clone(), i, t0)))
        .collect();
    let ready = svc.ok("/api/v1/stations").await;
    assert!(
        ready["stations"].is_array(),
        "the API answers during the storm"
    );
    let mut acked = 0;
    for gateway in storm {
        if tokio::time::timeout(Duration::from_secs(60), gateway)
            .await
            .expect("every gateway is answered within a minute")
            .unwrap()
        {
            acked += 1;
        }
    }
    assert_eq!(acked, N, "every gateway got its PUBACK");
    let page = svc
        .ok(&format!(
            "/api/v1/readings?station={WW}&param=COD&from={t0}&to={}&limit=1000",
            t0 + N * 1000
        ))
        .await;
    assert_eq!(
        page["readings"].as_array().map_or(0, Vec::len),
        N as usize,
        "every acknowledged record is stored"
    );
    svc.stop().await;
}
