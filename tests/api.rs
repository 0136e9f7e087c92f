//! The HTTP API as a client sees it: paging, aggregation, errors, probes; and the "new user"
//! path of publishing with `mosquitto_pub` as `docs/telemetry.md` describes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ms, q, recent_minute, record, Broker, Service, Site, StoreKind};
use firmware_sim::{Encoding, Status};

const ZONE: &str = "BN-VSIP";
const AQ: &str = "BN-VSIP-AQ01";
const WW: &str = "BN-VSIP-WW01";

async fn with_hourly_pm25(site: &Site, hours: i64, end: i64) -> Service {
    let svc = site.start().await;
    let gw = svc.publisher().await;
    let records: Vec<_> = (0..hours)
        .map(|h| {
            let mut r = record(
                AQ,
                end - (hours - h) * 3_600_000,
                h as u64,
                &[("PM2.5", h as f64, "ug/Nm3"), ("PM10", 50.0, "ug/Nm3")],
            );
            if h == 0 {
                r.readings[0].status = Status::Calibrating;
            }
            r
        })
        .collect();
    gw.publish_records(ZONE, AQ, Encoding::Bincode, &records)
        .await
        .unwrap();
    svc.wait_processed(1).await;
    gw.disconnect().await.unwrap();
    svc
}

async fn raw_readings_page_through_the_api_with_cursors_without_gaps_or_repeats(store: StoreKind) {
    let Some(site) = Site::on(store, Broker::Embedded, "paging") else {
        return;
    };
    let end = recent_minute(0);
    let svc = with_hourly_pm25(&site, 30, end).await;
    let mut url = format!(
        "/api/v1/readings?station={AQ}&from={}&to={}&limit=7",
        ms(end - 31 * 3_600_000),
        ms(end)
    );
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let body = svc.ok(&url).await;
        pages += 1;
        for r in body["readings"].as_array().unwrap() {
            seen.push((
                r["ts"].as_str().unwrap().to_owned(),
                r["param"].as_str().unwrap().to_owned(),
            ));
        }
        match body["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(body["has_more"], true);
                url = format!(
                    "/api/v1/readings?station={AQ}&from={}&to={}&limit=7&cursor={cursor}",
                    ms(end - 31 * 3_600_000),
                    ms(end)
                );
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 60);
    assert_eq!(pages, 9);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "ordered by time then parameter, no repeats");
    svc.stop().await;
}

async fn aggregates_bucket_on_vietnam_days_and_describe_valid_data_by_default(store: StoreKind) {
    let Some(site) = Site::on(store, Broker::Embedded, "agg") else {
        return;
    };
    // End at a Vietnam midnight so that 48 hourly readings fill two local days exactly.
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000;
    let offset = 7 * 3_600_000;
    let midnight = now - (now + offset).rem_euclid(day);
    let svc = with_hourly_pm25(&site, 48, midnight).await;
    let from = chrono::DateTime::from_timestamp_millis(midnight - 2 * day)
        .unwrap()
        .with_timezone(&quantrac::telemetry::time::VIETNAM)
        .format("%Y-%m-%d")
        .to_string();
    let body = svc
        .ok(&format!(
            "/api/v1/readings?station={AQ}&param=PM2.5&from={from}&to={}&bucket=1d&agg=max",
            ms(midnight)
        ))
        .await;
    assert_eq!(body["status"], "00");
    let points = body["series"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{body}");
    assert!(
        points[0]["ts"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00+07:00"),
        "{body}"
    );
    // Hour 0 was calibrating: excluded from the default (valid data only).
    assert_eq!(points[0]["count"], 23);
    assert_eq!(points[0]["value"], 23.0);
    assert_eq!(points[1]["value"], 47.0);
    let all = svc
        .ok(&format!("/api/v1/readings?station={AQ}&param=PM2.5&from={from}&to={}&bucket=1d&agg=count&status=all", ms(midnight)))
        .await;
    assert_eq!(all["series"][0]["points"][0]["value"], 24);
    assert_eq!(all["series"][0]["unit"], "ug/Nm3");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_400_naming_the_parameter_and_unknown_things_404() {
    let site = Site::new(Broker::Embedded, "errors");
    let svc = site.start().await;
    let now = recent_minute(0);
    let cases: &[(String, u16, &str, Option<&str>)] = &[
        (
            "/api/v1/readings".into(),
            400,
            "bad_parameter",
            Some("station"),
        ),
        (
            format!("/api/v1/readings?station={AQ}&param=COD"),
            400,
            "bad_parameter",
            Some("param"),
        ),
        (
            format!("/api/v1/readings?station={AQ}&from=yesterday"),
            400,
            "bad_parameter",
            Some("from"),
        ),
        (
            format!(
                "/api/v1/readings?station={AQ}&from={}&to={}",
                ms(now),
                ms(now - 1)
            ),
            400,
            "bad_parameter",
            Some("from"),
        ),
        (
            format!(
                "/api/v1/readings?station={AQ}&from={}",
                q("2020-01-01T00:00:00+07:00")
            ),
            400,
            "bad_parameter",
            Some("to"),
        ),
        (
            format!("/api/v1/readings?station={AQ}&limit=0"),
            400,
            "bad_parameter",
            Some("limit"),
        ),
        (
            format!("/api/v1/readings?station={AQ}&limit=100000"),
            400,
            "bad_parameter",
            Some("limit"),
        ),
        (
            format!("/api/v1/readings?station={AQ}&cursor=abc"),
            400,
            "bad_parameter",
            Some("cursor"),
        ),
        (
            format!("/api/v1/readings?station={AQ}&agg=avg"),
            400,
            "bad_parameter",
            Some("agg"),
        ),
        (
            format!("/api/v1/readings?station={AQ}&bucket=2h"),
            400,
            "bad_parameter",
            Some("bucket"),
        ),
        (
            format!(
                "/api/v1/readings?station={AQ}&bucket=1m&from={}&to={}",
                ms(now - 30 * 86_400_000),
                ms(now)
            ),
            400,
            "bad_parameter",
            Some("bucket"),
        ),
        (
            format!("/api/v1/readings?station={AQ}&bucket=1h&limit=5"),
            400,
            "bad_parameter",
            Some("limit"),
        ),
        (
            format!("/api/v1/readings?station={AQ}&status=03"),
            400,
            "bad_parameter",
            Some("status"),
        ),
        (
            format!("/api/v1/readings?station={AQ}&statoin=x"),
            400,
            "bad_parameter",
            Some("query"),
        ),
        (
            "/api/v1/readings?station=NOPE".into(),
            404,
            "unknown_station",
            None,
        ),
        ("/api/v1/stations/NOPE".into(), 404, "unknown_station", None),
        (
            "/api/v1/stations/NOPE/latest".into(),
            404,
            "unknown_station",
            None,
        ),
        (
            "/api/v1/stations?zone=NOPE".into(),
            404,
            "unknown_zone",
            None,
        ),
        (
            "/api/v1/stations?kind=river".into(),
            400,
            "bad_parameter",
            Some("kind"),
        ),
        (
            "/api/v1/quarantine?reason=bad".into(),
            400,
            "bad_parameter",
            Some("reason"),
        ),
        ("/api/v1/nothing".into(), 404, "not_found", None),
        (
            "/api/v1/stations/%FF".into(),
            400,
            "bad_parameter",
            Some("path"),
        ),
    ];
    for (path, status, code, parameter) in cases {
        let (got, body) = svc.get(path).await;
        assert_eq!(got, *status, "{path}: {body}");
        assert_eq!(body["error"]["code"], *code, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{path}"
        );
        if let Some(p) = parameter {
            assert_eq!(body["error"]["parameter"], *p, "{path}: {body}");
        }
    }
    let response = svc
        .http
        .post(format!("{}/api/v1/stations", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert!(response.headers().contains_key("x-request-id"));
    svc.stop().await;
}

async fn health_readiness_and_metrics_report_the_broker_and_the_store(store: StoreKind) {
    let Some(site) = Site::on(store, Broker::Embedded, "probes") else {
        return;
    };
    let svc = site.start().await;
    assert_eq!(svc.ok("/healthz").await["status"], "ok");
    let ready = svc.ok("/readyz").await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["mqtt"], "connected");
    assert_eq!(ready["store"], "ok");
    let zones = svc.ok("/api/v1/zones").await;
    assert_eq!(zones["zones"].as_array().unwrap().len(), 2);
    let metrics = svc
        .http
        .get(format!("{}/metrics", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("quantrac_mqtt_connected"), "{text}");
    // Requests are counted and timed by route pattern, never by concrete path.
    svc.ok(&format!("/api/v1/stations/{AQ}")).await;
    let text = svc.metrics_text().await;
    for expected in [
        "quantrac_api_requests_total{route=\"/api/v1/stations/{id}\",status=\"200\"}",
        "quantrac_api_request_seconds_bucket{route=\"/api/v1/stations/{id}\",le=\"0.001\"}",
        "quantrac_stations_registered ",
        "quantrac_stations_online ",
        "quantrac_process_cpu_seconds ",
        "quantrac_process_peak_resident_bytes ",
    ] {
        assert!(text.contains(expected), "no {expected} in\n{text}");
    }
    assert!(!text.contains(&format!("route=\"/api/v1/stations/{AQ}\"")));
    svc.stop().await;
}

/// What a new user does: publish a record by hand with `mosquitto_pub`, then find it in the
/// API, and find a malformed one in the quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_published_with_mosquitto_pub_is_returned_and_a_malformed_one_quarantined() {
    let site = Site::new(Broker::Mosquitto, "mosquitto-pub");
    let svc = site.start().await;
    let topic = svc.topic(&format!("{ZONE}/{AQ}/telemetry/json"));
    let ts = chrono::DateTime::from_timestamp_millis(recent_minute(1))
        .unwrap()
        .with_timezone(&quantrac::telemetry::time::VIETNAM)
        .to_rfc3339();
    let good = format!(
        r#"{{"station":"{AQ}","ts":"{ts}","seq":1,"readings":[{{"param":"PM2.5","value":35.5,"unit":"ug/Nm3","status":"00"}}]}}"#
    );
    let url = common::mosquitto_url();
    let addr = url.trim_start_matches("mqtt://");
    let (host, port) = addr.split_once(':').unwrap_or((addr, "1883"));
    for payload in [good.as_str(), "{not json"] {
        let status = std::process::Command::new("mosquitto_pub")
            .args([
                "-h", host, "-p", port, "-q", "1", "-t", &topic, "-m", payload,
            ])
            .status()
            .expect("mosquitto_pub is installed (package mosquitto-clients; .ci/run installs it)");
        assert!(status.success());
    }
    svc.wait_processed(2).await;
    let latest = svc.ok(&format!("/api/v1/stations/{AQ}/latest")).await;
    assert_eq!(latest["readings"][0]["param"], "PM2.5");
    assert_eq!(latest["readings"][0]["value"], 35.5);
    let quarantine = svc.ok(&format!("/api/v1/quarantine?station={AQ}")).await;
    assert_eq!(quarantine["entries"][0]["reason"], "malformed_payload");
    assert_eq!(quarantine["entries"][0]["payload_excerpt"], "{not json");
    svc.stop().await;
    site.finish().await;
}

/// `quantrac demo` on a machine where the broker port is taken (CI has Mosquitto on 1883):
/// the device endpoint moves, and live data from every seed station reaches the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_moves_off_a_taken_broker_port_and_shows_every_station_live() {
    let site = Site::new(Broker::Embedded, "demo");
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = site.config();
    config.mqtt.endpoint.listen = occupied.local_addr().unwrap();
    let options = quantrac::demo::Options {
        stations: 0,
        interval: std::time::Duration::from_secs(1),
        backfill: std::time::Duration::from_secs(3600),
        seed: 42,
    };
    let demo = quantrac::demo::start(config, options).await.unwrap();
    let (taken, used) = demo.broker_moved.expect("the broker moved");
    assert_eq!(taken, occupied.local_addr().unwrap());
    assert_ne!(used, taken);
    // Six stations: an `online` status each, then an hour of history in messages of twelve
    // records, then live records: well over 24 messages once every station has reported.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        demo.running.wait_processed(40),
    )
    .await
    .expect("the fleet's messages are stored");
    let svc_base = format!("http://{}", demo.running.api_addr);
    let (token, _) = demo
        .running
        .security()
        .create_token("demo test", quantrac::security::Role::Viewer, "test", None)
        .unwrap();
    let http = common::authorized(&token);
    let stations: serde_json::Value = http
        .get(format!("{svc_base}/api/v1/stations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stations = stations["stations"].as_array().unwrap();
    assert_eq!(stations.len(), 6);
    for s in stations {
        assert_eq!(s["online"], true, "{}", s["id"]);
        assert_eq!(s["gateway"]["state"], "online", "{}", s["id"]);
    }
    let pm: serde_json::Value = http
        .get(format!(
            "{svc_base}/api/v1/readings?station=DN-AMATA-AQ01&param=PM2.5&bucket=5m&status=all"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        pm["series"][0]["points"].as_array().unwrap().len() >= 12,
        "{pm}"
    );
    demo.stop().await;
}

/// SIGHUP re-reads the seeds: a station added to the files appears without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_the_registry_picks_up_a_new_station() {
    let site = Site::new(Broker::Embedded, "reload");
    let seeds = site.dir.path().join("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    for file in ["zones.toml", "stations.toml", "limits.csv"] {
        std::fs::copy(common::seeds().join(file), seeds.join(file)).unwrap();
    }
    let mut config = site.config();
    config.registry.seeds = seeds.clone();
    let svc = Service::start(config).await;
    assert_eq!(svc.get("/api/v1/stations/BN-VSIP-WW02").await.0, 404);
    let extra = r#"
[[station]]
id = "BN-VSIP-WW02"
zone = "BN-VSIP"
kind = "wastewater"
name = "Second outfall"
operator = "VSIP Bac Ninh Co."
location = { lat = 21.1, lon = 106.0 }
expected_interval = "5m"
limit_profile = "qcvn40-2011-A"

[[station.parameter]]
name = "COD"
unit = "mg/L"
range = [0, 2000]
"#;
    let mut stations = std::fs::read_to_string(seeds.join("stations.toml")).unwrap();
    stations.push_str(extra);
    std::fs::write(seeds.join("stations.toml"), stations).unwrap();
    let summary = svc.running.reload_registry().unwrap();
    assert!(summary.contains("7 stations"), "{summary}");
    let station = svc.ok("/api/v1/stations/BN-VSIP-WW02").await;
    assert_eq!(station["parameters"][0]["limits"][0]["upper"], 75.0);

    // A broken edit is refused and the registry in use stays.
    std::fs::write(seeds.join("stations.toml"), "[[station]]\nid = 1\n").unwrap();
    assert!(svc.running.reload_registry().is_err());
    assert_eq!(svc.get("/api/v1/stations/BN-VSIP-WW02").await.0, 200);
    svc.stop().await;
}

/// Readings are evidence: COD 900 at T then COD 20 at T stores 20 and keeps 900 as a revision
/// the API shows; an identical re-send keeps nothing more.
async fn a_reading_rewritten_with_another_value_keeps_its_earlier_version(store: StoreKind) {
    let Some(site) = Site::on(store, Broker::Embedded, "revisions") else {
        return;
    };
    // The metrics are the process's: the two stores' runs of this test, which both count a
    // revision, take turns so that each sees only its own.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let svc = site.start().await;
    let revisions_before = revisions_counted(&svc.metrics_text().await);
    let gw = svc.publisher().await;
    let t = recent_minute(5);
    for (seq, value) in [(1, 900.0), (2, 20.0), (3, 20.0)] {
        let r = record(WW, t, seq, &[("COD", value, "mg/L")]);
        gw.publish_records(ZONE, WW, Encoding::Json, &[r])
            .await
            .unwrap();
    }
    svc.wait_processed(3).await;
    gw.disconnect().await.unwrap();
    let range = format!("from={}&to={}", ms(t), ms(t + 60_000));
    let body = svc
        .ok(&format!("/api/v1/readings?station={WW}&param=COD&{range}"))
        .await;
    let readings = body["readings"].as_array().unwrap();
    assert_eq!(readings.len(), 1, "{body}");
    assert_eq!(readings[0]["value"], 20.0);
    let body = svc
        .ok(&format!(
            "/api/v1/readings/revisions?station={WW}&param=COD&{range}"
        ))
        .await;
    let revisions = body["revisions"].as_array().unwrap();
    assert_eq!(revisions.len(), 1, "{body}");
    assert_eq!(revisions[0]["value"], 900.0);
    assert_eq!(revisions[0]["status"], "00");
    assert_eq!(revisions[0]["unit"], "mg/L");
    assert_eq!(revisions[0]["ts"], readings[0]["ts"]);
    assert!(revisions[0]["replaced_at"].as_str().is_some(), "{body}");
    let text = svc.metrics_text().await;
    assert_eq!(
        revisions_counted(&text) - revisions_before,
        1.0,
        "counted once: {text}"
    );
    svc.stop().await;
}

/// `quantrac_reading_revisions_total` in a `/metrics` text (0 before the first).
fn revisions_counted(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("quantrac_reading_revisions_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

on_both_stores!(
    raw_readings_page_through_the_api_with_cursors_without_gaps_or_repeats,
    aggregates_bucket_on_vietnam_days_and_describe_valid_data_by_default,
    health_readiness_and_metrics_report_the_broker_and_the_store,
    a_reading_rewritten_with_another_value_keeps_its_earlier_version,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_query_values_are_refused_with_400_naming_the_parameter() {
    let site = Site::new(Broker::Embedded, "empty");
    let svc = site.start().await;
    for (path, parameter) in [
        ("/api/v1/readings?station=DN-AMATA-WW01&from=", "from"),
        ("/api/v1/alerts?to=", "to"),
        ("/api/v1/alerts?state=open&station=", "station"),
        ("/api/v1/quarantine?limit=", "limit"),
    ] {
        let (status, body) = svc.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_parameter", "{path}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{path}: {body}");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_outside_the_years_1970_to_9999_are_refused_with_400() {
    let site = Site::new(Broker::Embedded, "absurd");
    let svc = site.start().await;
    for (path, parameter) in [
        ("/api/v1/alerts?to=9223372036854775807", "to"),
        ("/api/v1/alerts?from=-9223372036854775808", "from"),
        ("/api/v1/alerts?from=%2B10000-01-02", "from"),
        (
            "/api/v1/readings?station=DN-AMATA-WW01&from=9223372036854775000&to=9223372036854775807",
            "to",
        ),
    ] {
        let (status, body) = svc.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{path}: {body}");
    }
    let (status, body) = svc
        .get("/api/v1/alerts?from=0&to=9999-12-31T23:59:59Z")
        .await;
    assert_eq!(status, 200, "the whole allowed span: {body}");
    svc.stop().await;
}
