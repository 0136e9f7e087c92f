//! VN_AQI through the whole service: readings published to the device endpoint, the index
//! read back from `GET /api/v1/aqi` as JSON and CSV, on both stores. The figures are the
//! worked examples of Decision 1459/QD-TCMT (`../shared/reference/regulations.md`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{record, Broker, Site, StoreKind};
use firmware_sim::{Encoding, Record};

const ZONE: &str = "BN-VSIP";
const AQ: &str = "BN-VSIP-AQ01";
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
const VIETNAM: i64 = 7 * HOUR;

/// Local midnight (Vietnam) `days` days ago, in epoch milliseconds.
fn local_midnight(days_ago: i64) -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    let local = now + VIETNAM;
    local - local.rem_euclid(DAY) - VIETNAM - days_ago * DAY
}

/// Twelve 5-minute records in the hour starting at `hour`, each with `readings`.
fn hour_of(hour: i64, seq: &mut u64, readings: &[(&str, f64)]) -> Vec<Record> {
    (0..12)
        .map(|k| {
            *seq += 1;
            let values: Vec<(&str, f64, &str)> =
                readings.iter().map(|&(p, v)| (p, v, "ug/Nm3")).collect();
            record(AQ, hour + k * 300_000, *seq, &values)
        })
        .collect()
}

async fn the_hourly_and_daily_index_follow_the_decisions_examples(store: StoreKind) {
    let Some(site) = Site::on(store, Broker::Embedded, "aqi") else {
        return;
    };
    let svc = site.start().await;
    let gw = svc.publisher().await;
    let mut seq = 0;
    let mut messages = 0;
    // Hourly: PM2.5 hourly means 09:00 .. 20:00 of the decision's NowCast example, and in
    // the last hour O3 136.1 and NO2 118.7.
    let day = local_midnight(3);
    let pm = [
        26.9, 24.7, 20.5, 23.5, 19.5, 16.5, 19.0, 16.5, 20.3, 22.4, 19.6, 20.6,
    ];
    let last = day + 19 * HOUR; // the hour 19:00-20:00, "20:00" in the decision
    for (k, value) in pm.iter().enumerate() {
        let hour = last - (11 - k as i64) * HOUR;
        let mut readings = vec![("PM2.5", *value)];
        if k == 11 {
            readings.extend([("O3", 136.1), ("NO2", 118.7)]);
        }
        let records = hour_of(hour, &mut seq, &readings);
        gw.publish_records(ZONE, AQ, Encoding::Json, &records)
            .await
            .unwrap();
        messages += 1;
    }
    // Daily: the next day, PM10 at 120 all day and PM2.5 at 55.7 (24-hour mean 55.7: 110).
    let next = day + DAY;
    for h in 0..24 {
        let records = hour_of(
            next + h * HOUR,
            &mut seq,
            &[("PM2.5", 55.7), ("PM10", 120.0)],
        );
        gw.publish_records(ZONE, AQ, Encoding::Json, &records)
            .await
            .unwrap();
        messages += 1;
    }
    // The day after: 17 hours of PM2.5, below the 75% coverage of a day.
    let partial = next + DAY;
    for h in 0..17 {
        let records = hour_of(partial + h * HOUR, &mut seq, &[("PM2.5", 30.0)]);
        gw.publish_records(ZONE, AQ, Encoding::Json, &records)
            .await
            .unwrap();
        messages += 1;
    }
    svc.wait_processed(messages).await;
    gw.disconnect().await.unwrap();

    let body = svc
        .ok(&format!(
            "/api/v1/aqi?station={AQ}&period=hour&from={last}&to={}",
            last + HOUR
        ))
        .await;
    let station = &body["stations"][0];
    assert_eq!(station["status"], "ok", "{body}");
    let hour = &station["values"][0];
    assert_eq!(
        hour["aqi"], 59,
        "the formula's 59.35, rounded half up: {hour}"
    );
    assert_eq!(hour["dominant"], "NO2");
    assert_eq!(hour["band"], "moderate");
    assert_eq!(hour["colour"], "#ffff00");
    let sub = |p: &str| {
        hour["sub_indices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["pollutant"] == p)
            .unwrap()
            .clone()
    };
    assert_eq!(sub("O3")["index"], 43);
    assert_eq!(sub("PM2.5")["index"], 41);
    assert_eq!(sub("PM2.5")["basis"], "now_cast");
    let nowcast = sub("PM2.5")["concentration"].as_f64().unwrap();
    assert!((nowcast - 20.3).abs() < 0.05, "NowCast {nowcast}");

    let body = svc
        .ok(&format!(
            "/api/v1/aqi?station={AQ}&period=day&from={next}&to={}",
            next + 2 * DAY
        ))
        .await;
    let days = body["stations"][0]["values"].as_array().unwrap().clone();
    assert_eq!(days.len(), 2, "{body}");
    assert_eq!(days[0]["aqi"], 110, "PM2.5 24-hour mean 55.7: {}", days[0]);
    assert_eq!(days[0]["dominant"], "PM2.5");
    assert_eq!(days[0]["band"], "poor");
    assert!(days[0]["start"]
        .as_str()
        .unwrap()
        .ends_with("T00:00:00+07:00"));
    assert_eq!(days[1]["aqi"], serde_json::Value::Null, "17 of 24 hours");
    assert!(days[1]["missing"]
        .as_str()
        .unwrap()
        .contains("PM2.5 or PM10"));

    // The current index, kept as the data arrived: the newest hour (the 17th of the last
    // day), PM2.5 at 30 all along: NowCast 30, index 60.
    let body = svc.ok(&format!("/api/v1/stations/{AQ}")).await;
    assert_eq!(body["aqi"]["aqi"], 60, "{body}");
    assert_eq!(body["aqi"]["dominant"], "PM2.5");
    assert!(
        body["aqi"]["hour_start"]
            .as_str()
            .unwrap()
            .ends_with("T16:00:00+07:00"),
        "{body}"
    );
    let metrics = svc.metrics_text().await;
    assert!(
        metrics.contains(&format!("quantrac_aqi{{station=\"{AQ}\"}} 60")),
        "{metrics}"
    );
    let other = svc.ok("/api/v1/stations/BN-VSIP-WW01").await;
    assert!(
        other.get("aqi").is_none(),
        "not an ambient station: {other}"
    );
    // A restart keeps it: warmed from the stored hourly means before any new data arrives.
    svc.stop().await;
    let svc = site.start().await;
    let body = svc.ok(&format!("/api/v1/stations/{AQ}")).await;
    assert_eq!(body["aqi"]["aqi"], 60, "after a restart: {body}");
    assert!(body["aqi"]["hour_start"]
        .as_str()
        .unwrap()
        .ends_with("T16:00:00+07:00"));

    // The same as CSV.
    let response = svc
        .http
        .get(format!(
            "{}/api/v1/aqi?station={AQ}&period=day&from={next}&to={}&format=csv",
            svc.base,
            next + 2 * DAY
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.contains("vn_aqi_day_"), "{disposition}");
    let text = response.text().await.unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("station,zone,start,end,aqi,band,colour,dominant,PM2.5_index"));
    let first = lines.next().unwrap();
    assert!(first.starts_with(&format!("{AQ},{ZONE},")), "{first}");
    assert!(
        first.contains(",110,poor,#ff7e00,PM2.5,110,55.7,"),
        "{first}"
    );
    svc.stop().await;
}

async fn bad_requests_name_the_parameter(store: StoreKind) {
    let Some(site) = Site::on(store, Broker::Embedded, "aqi-errors") else {
        return;
    };
    let svc = site.start().await;
    let cases = [
        ("/api/v1/aqi?station=NOPE", 404, "unknown_station"),
        ("/api/v1/aqi?zone=NOPE", 404, "unknown_zone"),
        ("/api/v1/aqi?station=BN-VSIP-WW01", 400, "station"),
        ("/api/v1/aqi", 400, "station"),
        (
            "/api/v1/aqi?station=BN-VSIP-AQ01&period=week",
            400,
            "period",
        ),
        ("/api/v1/aqi?station=BN-VSIP-AQ01&format=xml", 400, "format"),
        (
            "/api/v1/aqi?station=BN-VSIP-AQ01&from=2020-01-01&to=2026-01-01",
            400,
            "to",
        ),
    ];
    for (path, status, names) in cases {
        let (got, body) = svc.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.to_string().contains(names), "{path}: {body}");
    }
    // No data at all: each station says so, never an empty success.
    let body = svc.ok(&format!("/api/v1/aqi?zone={ZONE}&period=day")).await;
    assert_eq!(body["stations"][0]["status"], "insufficient_data", "{body}");
    svc.stop().await;
}

on_both_stores!(
    the_hourly_and_daily_index_follow_the_decisions_examples,
    bad_requests_name_the_parameter,
);
