//! The whole pipeline through a real broker: a gateway (`firmware-sim`) publishes, quantrac
//! ingests, and the HTTP API shows the result. Every scenario runs on the device endpoint and
//! on Mosquitto.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ms, recent_minute, record, Broker, Site, ALL_ENCODINGS};
use firmware_sim::{Encoding, Status};
use serde_json::Value;

const ZONE: &str = "DN-AMATA";
const WW: &str = "DN-AMATA-WW01";

on_both_brokers!(
    values_round_trip_exactly_in_all_three_encodings,
    each_rejection_reason_is_quarantined_with_its_reason_and_counted,
    a_backlog_array_is_stored_whole_and_latest_stays_the_newest,
    a_backlog_with_one_bad_element_stores_the_valid_records_and_keeps_the_payload_whole,
    a_resent_message_is_stored_once,
    data_and_latest_values_survive_a_restart,
    messages_published_while_quantrac_is_down_are_delivered_after_it_returns,
    gateway_presence_from_the_status_topic_is_shown_with_the_station,
);

fn values(body: &Value) -> Vec<(String, f64, String)> {
    body["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["param"].as_str().unwrap().to_owned(),
                r["value"].as_f64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn values_round_trip_exactly_in_all_three_encodings(broker: Broker) {
    let site = Site::new(broker, "roundtrip");
    let svc = site.start().await;
    let gw = svc.publisher().await;
    let t0 = recent_minute(30);
    // Values that do not survive a careless float path.
    let tricky = [
        71.3,
        0.1 + 0.2,
        1_234.567_890_123,
        5.5e-7,
        1_999.999_999_999_9,
    ];
    for (i, encoding) in ALL_ENCODINGS.into_iter().enumerate() {
        let ts = t0 + i as i64 * 60_000;
        let mut rec = record(
            WW,
            ts,
            i as u64,
            &[("COD", tricky[i], "mg/L"), ("pH", 7.25, "pH")],
        );
        rec.readings[1].status = Status::Calibrating;
        gw.publish_records(ZONE, WW, encoding, &[rec])
            .await
            .unwrap();
    }
    svc.wait_processed(3).await;
    let body = svc
        .ok(&format!(
            "/api/v1/readings?station={WW}&param=COD,pH&from={}&to={}",
            ms(t0),
            ms(t0 + 180_000)
        ))
        .await;
    let expected: Vec<(String, f64, String)> = (0..3)
        .flat_map(|i| {
            [
                ("COD".to_owned(), tricky[i], "00".to_owned()),
                ("pH".to_owned(), 7.25, "01".to_owned()),
            ]
        })
        .collect();
    assert_eq!(values(&body), expected);
    assert_eq!(body["readings"][0]["unit"], "mg/L");
    assert_eq!(body["has_more"], false);
    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}

async fn each_rejection_reason_is_quarantined_with_its_reason_and_counted(broker: Broker) {
    let site = Site::new(broker, "reasons");
    let svc = site.start().await;
    let gw = svc.publisher().await;
    let now = recent_minute(0);
    let json_topic = svc.topic(&format!("{ZONE}/{WW}/telemetry/json"));
    // Each record has the next counter, as a gateway's do (a repeated one is a replay).
    let seq = std::sync::atomic::AtomicU64::new(1);
    let good = |readings: &[(&str, f64, &str)]| {
        let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        record(WW, now - 60_000, n, readings)
    };

    // malformed_payload
    gw.publish_raw(&json_topic, b"{\"station\": ".to_vec(), false)
        .await
        .unwrap();
    // unknown_station (on its own topic, so that the topic agrees)
    gw.publish_records(
        ZONE,
        "NO-SUCH-STATION",
        Encoding::Json,
        &[record("NO-SUCH-STATION", now, 1, &[("COD", 1.0, "mg/L")])],
    )
    .await
    .unwrap();
    // topic_mismatch: a record of another station on this station's topic
    gw.publish_records(
        ZONE,
        WW,
        Encoding::Json,
        &[record("DN-AMATA-ST01", now, 1, &[("SO2", 1.0, "mg/Nm3")])],
    )
    .await
    .unwrap();
    // future_timestamp and expired_timestamp
    gw.publish_records(
        ZONE,
        WW,
        Encoding::Json,
        &[record(WW, now + 3_600_000, 1, &[("COD", 1.0, "mg/L")])],
    )
    .await
    .unwrap();
    gw.publish_records(
        ZONE,
        WW,
        Encoding::Json,
        &[record(WW, 0, 1, &[("COD", 1.0, "mg/L")])],
    )
    .await
    .unwrap();
    // unknown_parameter, unit_mismatch, non_finite_value (bincode can carry NaN), out_of_range
    gw.publish_records(ZONE, WW, Encoding::Json, &[good(&[("BOD5", 1.0, "mg/L")])])
        .await
        .unwrap();
    gw.publish_records(ZONE, WW, Encoding::Json, &[good(&[("COD", 1.0, "g/L")])])
        .await
        .unwrap();
    gw.publish_records(
        ZONE,
        WW,
        Encoding::Bincode,
        &[good(&[("COD", f64::NAN, "mg/L")])],
    )
    .await
    .unwrap();
    gw.publish_records(ZONE, WW, Encoding::Tt10, &[good(&[("pH", 14.5, "pH")])])
        .await
        .unwrap();
    svc.wait_processed(9).await;

    let body = svc.ok("/api/v1/quarantine?limit=100").await;
    let entries = body["entries"].as_array().unwrap();
    let reasons: Vec<&str> = entries
        .iter()
        .rev()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "malformed_payload",
            "unknown_station",
            "topic_mismatch",
            "future_timestamp",
            "expired_timestamp",
            "unknown_parameter",
            "unit_mismatch",
            "non_finite_value",
            "out_of_range",
        ]
    );
    let counts = &body["rejections_since_start"];
    for reason in reasons {
        assert_eq!(counts[reason], 1, "{reason} counted once");
    }
    let unit = entries
        .iter()
        .find(|e| e["reason"] == "unit_mismatch")
        .unwrap();
    assert_eq!(unit["station"], WW);
    assert_eq!(unit["param"], "COD");
    assert!(unit["detail"].as_str().unwrap().contains("g/L"));
    assert_eq!(unit["encoding"], "json");
    assert!(unit["payload_excerpt"]
        .as_str()
        .unwrap()
        .contains("\"g/L\""));
    let malformed = entries
        .iter()
        .find(|e| e["reason"] == "malformed_payload")
        .unwrap();
    assert!(malformed["detail"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));

    // Nothing rejected was stored as data.
    let data = svc
        .ok(&format!(
            "/api/v1/readings?station={WW}&from={}&to={}",
            ms(now - 2 * 86_400_000),
            ms(now + 7_200_000)
        ))
        .await;
    assert_eq!(data["readings"].as_array().unwrap().len(), 0, "{data}");
    let filtered = svc
        .ok(&format!(
            "/api/v1/quarantine?station={WW}&reason=out_of_range"
        ))
        .await;
    assert_eq!(filtered["entries"].as_array().unwrap().len(), 1);
    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}

async fn a_backlog_array_is_stored_whole_and_latest_stays_the_newest(broker: Broker) {
    let site = Site::new(broker, "backlog");
    let svc = site.start().await;
    let gw = svc.publisher().await;
    let t_new = recent_minute(1);
    // The live record first, then an outage's backlog of 24 older records in two encodings.
    gw.publish_records(
        ZONE,
        WW,
        Encoding::Tt10,
        &[record(WW, t_new, 100, &[("COD", 99.0, "mg/L")])],
    )
    .await
    .unwrap();
    // The gateway's counter runs on through its backlog: records 0..24, flushed after the
    // live record 100 (still within the window of 1024, so they count as late, not replays).
    let backlog = |from: i64, first_seq: u64| -> Vec<_> {
        (0..12)
            .map(|i| {
                record(
                    WW,
                    from + i * 300_000,
                    first_seq + i as u64,
                    &[("COD", i as f64, "mg/L"), ("TSS", 10.0, "mg/L")],
                )
            })
            .collect()
    };
    let t_old = t_new - 10 * 3_600_000;
    gw.publish_records(ZONE, WW, Encoding::Json, &backlog(t_old, 0))
        .await
        .unwrap();
    gw.publish_records(ZONE, WW, Encoding::Bincode, &backlog(t_old + 3_600_000, 12))
        .await
        .unwrap();
    svc.wait_processed(3).await;

    let page = svc
        .ok(&format!(
            "/api/v1/readings?station={WW}&param=COD,TSS&from={}&to={}&limit=10000",
            ms(t_old),
            ms(t_new + 1)
        ))
        .await;
    // Two parameters in each of 24 backlog records, and the live reading.
    assert_eq!(page["readings"].as_array().unwrap().len(), 2 * 24 + 1);
    let latest = svc.ok(&format!("/api/v1/stations/{WW}/latest")).await;
    let cod = latest["readings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["param"] == "COD")
        .unwrap();
    assert_eq!(
        cod["value"], 99.0,
        "the backlog did not replace the newest value"
    );
    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}

async fn a_backlog_with_one_bad_element_stores_the_valid_records_and_keeps_the_payload_whole(
    broker: Broker,
) {
    let site = Site::new(broker, "bad-element");
    let svc = site.start().await;
    let gw = svc.publisher().await;
    let t = recent_minute(20);
    let json = |i: i64| {
        format!(
            r#"{{"station":"{WW}","ts":{},"seq":{},"readings":[{{"param":"COD","value":{},"unit":"mg/L","status":"00"}}]}}"#,
            t + i * 60_000,
            i + 1,
            10 + i
        )
    };
    let backlog = format!("[{}, {{\"junk\":1}}, {}]", json(0), json(1));
    gw.publish_raw(
        &svc.topic(&format!("{ZONE}/{WW}/telemetry/json")),
        backlog.clone().into_bytes(),
        false,
    )
    .await
    .unwrap();
    // Bincode: the second of two records damaged (its last byte, a status, made 9).
    let records = [
        record(WW, t + 2 * 60_000, 3, &[("COD", 12.0, "mg/L")]),
        record(WW, t + 3 * 60_000, 4, &[("COD", 13.0, "mg/L")]),
    ];
    let mut binary = firmware_sim::encode::encode(&records, Encoding::Bincode);
    *binary.last_mut().unwrap() = 9;
    gw.publish_raw(
        &svc.topic(&format!("{ZONE}/{WW}/telemetry/bincode")),
        binary.clone(),
        false,
    )
    .await
    .unwrap();
    svc.wait_processed(2).await;

    let stored = svc
        .ok(&format!(
            "/api/v1/readings?station={WW}&param=COD&from={}&to={}",
            ms(t),
            ms(t + 4 * 60_000)
        ))
        .await;
    let values: Vec<f64> = stored["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert_eq!(
        values,
        [10.0, 11.0, 12.0],
        "every readable record: {stored}"
    );

    let q = svc.ok(&format!("/api/v1/quarantine?station={WW}")).await;
    let entries = q["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "one entry per message: {q}");
    let (bin, js) = (&entries[0], &entries[1]);
    assert_eq!(js["total"], 1, "{js}");
    assert_eq!(js["reasons"]["malformed_payload"], 1, "{js}");
    assert!(
        js["detail"]
            .as_str()
            .unwrap()
            .starts_with("element 1: missing field `station`"),
        "{js}"
    );
    assert!(
        bin["detail"].as_str().unwrap().starts_with("record 1 of 2"),
        "{bin}"
    );
    for (entry, sent, content_type) in [
        (js, backlog.as_bytes(), "application/json"),
        (bin, &binary[..], "application/octet-stream"),
    ] {
        assert_eq!(entry["payload"]["held"], true, "{entry}");
        let url = entry["payload"]["url"].as_str().unwrap();
        let response = svc
            .http
            .get(format!("{}{url}", svc.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["content-type"], content_type);
        let kept = response.bytes().await.unwrap();
        assert_eq!(&kept[..], sent, "the payload byte for byte");
    }
    let (status, body) = svc.get("/api/v1/quarantine/999999/payload").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_entry"))
    );
    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}

async fn a_resent_message_is_stored_once(broker: Broker) {
    let site = Site::new(broker, "dup");
    let svc = site.start().await;
    let gw = svc.publisher().await;
    let t = recent_minute(5);
    let rec = record(WW, t, 7, &[("COD", 50.0, "mg/L"), ("pH", 7.0, "pH")]);
    for encoding in ALL_ENCODINGS {
        gw.publish_records(ZONE, WW, encoding, std::slice::from_ref(&rec))
            .await
            .unwrap();
        gw.publish_records(ZONE, WW, encoding, std::slice::from_ref(&rec))
            .await
            .unwrap();
    }
    svc.wait_processed(6).await;
    let page = svc
        .ok(&format!(
            "/api/v1/readings?station={WW}&from={}&to={}",
            ms(t - 60_000),
            ms(t + 60_000)
        ))
        .await;
    assert_eq!(
        values(&page),
        [
            ("COD".into(), 50.0, "00".into()),
            ("pH".into(), 7.0, "00".into())
        ]
    );
    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}

async fn data_and_latest_values_survive_a_restart(broker: Broker) {
    let site = Site::new(broker, "restart");
    let t = recent_minute(2);
    {
        let svc = site.start().await;
        let gw = svc.publisher().await;
        gw.publish_records(
            ZONE,
            WW,
            Encoding::Json,
            &[record(WW, t, 1, &[("NH4", 3.25, "mg/L")])],
        )
        .await
        .unwrap();
        gw.publish_status(ZONE, WW, true).await.unwrap();
        svc.wait_processed(2).await;
        gw.disconnect().await.unwrap();
        svc.stop().await;
    }
    let svc = site.start().await;
    let page = svc
        .ok(&format!(
            "/api/v1/readings?station={WW}&param=NH4&from={}&to={}",
            ms(t),
            ms(t + 1)
        ))
        .await;
    assert_eq!(values(&page), [("NH4".into(), 3.25, "00".into())]);
    let latest = svc.ok(&format!("/api/v1/stations/{WW}/latest")).await;
    assert_eq!(latest["readings"][0]["param"], "NH4");
    assert_eq!(latest["readings"][0]["value"], 3.25);
    assert!(
        latest["last_seen"].is_string(),
        "presence restored: {latest}"
    );
    let station = svc.ok(&format!("/api/v1/stations/{WW}")).await;
    assert_eq!(station["gateway"]["state"], "online");
    let gw = svc.publisher().await;
    gw.publish_raw(&svc.topic(&format!("{ZONE}/{WW}/status")), Vec::new(), true)
        .await
        .unwrap();
    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}

async fn messages_published_while_quantrac_is_down_are_delivered_after_it_returns(broker: Broker) {
    let site = Site::with_lasting_broker(broker, "offline");
    // First start creates the persistent session (and its subscriptions) on a broker.
    let svc = site.start().await;
    let broker_url = svc.broker_url();
    let mut options = firmware_sim::BrokerOptions::new(broker_url, common::unique("gw"));
    options.topic_prefix = Some(site.prefix.clone());
    let gw = firmware_sim::Publisher::connect(options).await.unwrap();
    svc.stop().await;

    // quantrac is down: a broker keeps these for its session; on the device endpoint the
    // gateway keeps them, unacknowledged, and sends them again when quantrac is back.
    let t = recent_minute(3);
    for i in 0..20 {
        gw.publish_records(
            ZONE,
            WW,
            Encoding::Json,
            &[record(
                WW,
                t + i * 1000,
                i as u64,
                &[("TSS", i as f64, "mg/L")],
            )],
        )
        .await
        .unwrap();
    }

    let svc = site.start().await;
    tokio::time::timeout(std::time::Duration::from_secs(60), gw.wait_acked())
        .await
        .expect("every message is acknowledged once quantrac is back")
        .unwrap();
    let page = svc
        .ok(&format!(
            "/api/v1/readings?station={WW}&param=TSS&from={}&to={}",
            ms(t),
            ms(t + 60_000)
        ))
        .await;
    assert_eq!(page["readings"].as_array().unwrap().len(), 20, "{page}");
    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}

async fn gateway_presence_from_the_status_topic_is_shown_with_the_station(broker: Broker) {
    let site = Site::new(broker, "presence");
    let svc = site.start().await;
    let gw = svc.publisher().await;
    gw.publish_records(
        ZONE,
        WW,
        Encoding::Json,
        &[record(WW, recent_minute(0), 1, &[("pH", 7.0, "pH")])],
    )
    .await
    .unwrap();
    svc.wait_processed(1).await;
    let station = svc.ok(&format!("/api/v1/stations/{WW}")).await;
    assert_eq!(station["online"], true, "{station}");
    gw.publish_status(ZONE, WW, false).await.unwrap();
    svc.wait_processed(2).await;
    let station = svc.ok(&format!("/api/v1/stations/{WW}")).await;
    assert_eq!(station["gateway"]["state"], "offline");
    assert_eq!(
        station["online"], false,
        "the gateway announced it left after its data"
    );
    let listed = svc
        .ok("/api/v1/stations?zone=DN-AMATA&kind=wastewater")
        .await;
    assert_eq!(listed["stations"].as_array().unwrap().len(), 1);
    // Clear the retained status so the shared broker keeps no litter.
    gw.publish_raw(&svc.topic(&format!("{ZONE}/{WW}/status")), Vec::new(), true)
        .await
        .unwrap();
    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}
