//! The compliance report through the whole service: readings published to the device
//! endpoint, the report read back from `GET /api/v1/reports/compliance` as JSON and CSV; and
//! the report, the alerts raised and the raw readings telling the same story.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{record, Broker, Site, StoreKind};
use firmware_sim::{Encoding, Fleet, Record, Scenario, Status};
use quantrac::security::Role;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
const VIETNAM: i64 = 7 * HOUR;
const MIN5: i64 = 300_000;

/// Local midnight (Vietnam) `days` days ago, in epoch milliseconds.
fn local_midnight(days_ago: i64) -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    let local = now + VIETNAM;
    local - local.rem_euclid(DAY) - VIETNAM - days_ago * DAY
}

/// A limit row of a parameter's report.
fn limit<'v>(report: &'v serde_json::Value, param: &str, averaging: &str) -> &'v serde_json::Value {
    report["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["param"] == param)
        .unwrap_or_else(|| panic!("{param} in {report}"))["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["averaging"] == averaging)
        .unwrap_or_else(|| panic!("{param} {averaging} in {report}"))
}

/// DN-AMATA-WW01 (QCVN 40:2011 column B x 0.9: COD at most 135 mg/L) reports every 5
/// minutes for a whole local day: COD 60, except 160 from 10:00 to 10:25 (6 readings) and
/// 140 at 15:00; calibrating 12:00-12:55; a device fault at 18:00-18:10.
async fn a_day_of_readings_is_judged_against_every_limit_row(store: StoreKind) {
    let Some(site) = Site::on(store, Broker::Embedded, "compliance") else {
        return;
    };
    let svc = site.start().await;
    let gw = svc.publisher().await;
    let day = local_midnight(2);
    let records: Vec<Record> = (0..288)
        .map(|k| {
            let (value, status) = match k {
                120..=125 => (160.0, Status::Measuring),
                180 => (140.0, Status::Measuring),
                144..=155 => (60.0, Status::Calibrating),
                216..=218 => (60.0, Status::DeviceError),
                _ => (60.0, Status::Measuring),
            };
            let mut r = record(
                "DN-AMATA-WW01",
                day + k * MIN5,
                k as u64 + 1,
                &[("COD", value, "mg/L")],
            );
            r.readings[0].status = status;
            r
        })
        .collect();
    for chunk in records.chunks(96) {
        gw.publish_records("DN-AMATA", "DN-AMATA-WW01", Encoding::Json, chunk)
            .await
            .unwrap();
    }
    svc.wait_processed(3).await;
    gw.disconnect().await.unwrap();

    let path = format!(
        "/api/v1/reports/compliance?station=DN-AMATA-WW01&period=day&from={day}&to={}",
        day + DAY
    );
    let body = svc.ok(&path).await;
    let period = &body["stations"][0]["periods"][0];
    assert_eq!(period["verdict"], "exceeded", "{body}");
    let cod = period["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["param"] == "COD")
        .unwrap();
    assert_eq!(cod["expected"], 288);
    assert_eq!(cod["valid"], 273);
    assert_eq!(cod["excluded"]["calibrating"], 12);
    assert_eq!(cod["excluded"]["device_fault"], 3);
    assert_eq!(cod["max"], 160.0);
    let inst = limit(period, "COD", "inst");
    assert_eq!(inst["upper"], 135.0, "150 x the station's factor 0.9");
    assert_eq!(inst["factor"], 0.9);
    assert_eq!(inst["certainty"], "S");
    assert_eq!(inst["judged"], 273);
    assert_eq!(inst["exceeded"], 7);
    assert_eq!(inst["verdict"], "exceeded");
    let longest = &inst["longest_exceedance"];
    assert_eq!(longest["count"], 6);
    assert_eq!(longest["minutes"], 30.0);
    assert!(
        longest["start"]
            .as_str()
            .unwrap()
            .ends_with("T10:00:00+07:00"),
        "{longest}"
    );
    // Parameters the station did not send: no data, no verdict but insufficient data.
    let nh4 = period["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["param"] == "NH4")
        .unwrap();
    assert_eq!(nh4["verdict"], "insufficient_data");
    assert_eq!(nh4["valid"], 0);

    // The same as CSV: one row per parameter and limit row.
    let response = svc
        .http
        .get(format!("{}{path}&format=csv", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("compliance_day_"));
    let text = response.text().await.unwrap();
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("station,zone,period_start,period_end,period_verdict"),
        "{header}"
    );
    let row = text
        .lines()
        .find(|l| l.contains(",COD,") && l.contains(",inst,"))
        .unwrap();
    assert!(row.contains(",exceeded,0,COD,mg/L,288,273,12,3,"), "{row}");
    assert!(row.ends_with(",30,exceeded"), "{row}");

    // Viewers may not read reports; errors name what is wrong.
    let viewer = svc.client_with_role(Role::Viewer);
    let status = viewer
        .get(format!("{}{path}", svc.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);
    for (query, code, names) in [
        ("station=NOPE", 404, "unknown_station"),
        ("zone=NOPE", 404, "unknown_zone"),
        ("station=DN-AMATA-WW01&period=week", 400, "period"),
        (
            "station=DN-AMATA-WW01&from=2020-01-01&to=2026-01-01",
            400,
            "to",
        ),
    ] {
        let (got, body) = svc
            .get(&format!("/api/v1/reports/compliance?{query}"))
            .await;
        assert_eq!(got, code, "{query}: {body}");
        assert!(body.to_string().contains(names), "{query}: {body}");
    }
    svc.stop().await;
}

/// An exceedance and a device fault played by firmware-sim's scenarios: the alerts raised,
/// the raw readings and the compliance report agree on what happened.
async fn the_report_the_alerts_and_the_raw_readings_tell_the_same_story(store: StoreKind) {
    let Some(site) = Site::on(store, Broker::Embedded, "agree") else {
        return;
    };
    let svc = site.start().await;
    let gw = svc.publisher().await;
    let fleet = Fleet::load(svc.running.config().registry.seeds.as_path()).unwrap();
    let station = fleet.station("DN-AMATA-WW01").unwrap();
    let start = chrono::Utc::now().timestamp_millis();
    let mut messages = 0;
    for (scenario, param) in [
        (Scenario::Exceedance, "COD"),
        (Scenario::DeviceFault, "NH4"),
    ] {
        let param = station.parameters.iter().find(|p| p.name == param).unwrap();
        let steps = scenario.steps(param, 0);
        let report = firmware_sim::play(
            &gw,
            station,
            param,
            Encoding::Json,
            &steps,
            Duration::from_millis(20),
        )
        .await
        .unwrap();
        messages += report.messages;
    }
    svc.wait_processed(messages).await;
    gw.disconnect().await.unwrap();
    let end = chrono::Utc::now().timestamp_millis() + 1;

    let alerts = svc.ok("/api/v1/alerts?station=DN-AMATA-WW01").await["alerts"]
        .as_array()
        .unwrap()
        .clone();
    let exceedance = alerts
        .iter()
        .find(|a| a["rule"] == "limit-inst" && a["param"] == "COD")
        .unwrap();
    let fault = alerts
        .iter()
        .find(|a| a["rule"] == "device-fault" && a["param"] == "NH4");
    assert!(fault.is_some(), "{alerts:?}");
    let threshold = exceedance["threshold"].as_f64().unwrap();

    let raw = svc
        .ok(&format!(
            "/api/v1/readings?station=DN-AMATA-WW01&param=COD&from={start}&to={end}&limit=1000"
        ))
        .await;
    let above: Vec<f64> = raw["readings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "00")
        .map(|r| r["value"].as_f64().unwrap())
        .filter(|v| *v > threshold)
        .collect();

    let body = svc
        .ok(&format!(
            "/api/v1/reports/compliance?station=DN-AMATA-WW01&period=day&from={start}&to={end}"
        ))
        .await;
    let period = &body["stations"][0]["periods"][0];
    let inst = limit(period, "COD", "inst");
    assert_eq!(
        inst["upper"].as_f64().unwrap(),
        threshold,
        "the alert's threshold is the report's limit"
    );
    assert_eq!(
        inst["exceeded"].as_u64().unwrap(),
        above.len() as u64,
        "report and raw readings"
    );
    assert_eq!(
        exceedance["count"].as_u64().unwrap(),
        above.len() as u64,
        "alert and raw readings"
    );
    let peak = above.iter().copied().fold(f64::MIN, f64::max);
    assert_eq!(inst["longest_exceedance"]["peak"].as_f64().unwrap(), peak);
    assert_eq!(
        exceedance["peak_value"].as_f64().unwrap(),
        peak,
        "{exceedance}"
    );
    assert_eq!(
        inst["longest_exceedance"]["count"].as_u64().unwrap(),
        above.len() as u64
    );
    let nh4 = period["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["param"] == "NH4")
        .unwrap();
    assert_eq!(
        nh4["excluded"]["device_fault"], 3,
        "the fault the alert was raised for"
    );
    svc.stop().await;
}

/// DN-AMATA-WW01 sends a past day with an hour missing (everything arrives days late),
/// and three records of today as they are measured (on time).
async fn connectivity_counts_records_expected_received_and_on_time_per_station_zone_and_center(
    store: StoreKind,
) {
    let Some(site) = Site::on(store, Broker::Embedded, "connectivity") else {
        return;
    };
    let svc = site.start().await;
    let gw = svc.publisher().await;
    let day = local_midnight(2);
    let past: Vec<Record> = (0..288)
        .filter(|k| !(120..132).contains(k))
        .map(|k| {
            record(
                "DN-AMATA-WW01",
                day + k * MIN5,
                k as u64 + 1,
                &[("COD", 60.0, "mg/L")],
            )
        })
        .collect();
    for chunk in past.chunks(100) {
        gw.publish_records("DN-AMATA", "DN-AMATA-WW01", Encoding::Json, chunk)
            .await
            .unwrap();
    }
    let now = chrono::Utc::now().timestamp_millis();
    for (k, ago) in [120_000, 60_000, 0].into_iter().enumerate() {
        let r = record(
            "DN-AMATA-WW01",
            now - ago,
            1000 + k as u64,
            &[("COD", 60.0, "mg/L")],
        );
        gw.publish_records("DN-AMATA", "DN-AMATA-WW01", Encoding::Json, &[r])
            .await
            .unwrap();
    }
    svc.wait_processed(6).await;
    gw.disconnect().await.unwrap();

    let body = svc
        .ok(&format!(
            "/api/v1/reports/connectivity?zone=DN-AMATA&period=day&from={day}&to={}",
            day + DAY
        ))
        .await;
    let station = body["stations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["station"] == "DN-AMATA-WW01")
        .unwrap();
    let p = &station["periods"][0];
    assert_eq!(
        (p["expected"].as_u64(), p["received"].as_u64()),
        (Some(288), Some(276)),
        "{p}"
    );
    assert_eq!(p["on_time"], 0, "sent two days late");
    assert_eq!(p["late"], 276);
    assert_eq!(p["gaps"], 1);
    assert_eq!(p["longest_gap"]["missing"], 12);
    assert!(
        p["longest_gap"]["start"]
            .as_str()
            .unwrap()
            .ends_with("T10:00:00+07:00"),
        "{p}"
    );
    assert_eq!(p["complete"], false);
    let zone = &body["zones"][0];
    assert_eq!(zone["zone"], "DN-AMATA");
    assert_eq!(zone["periods"][0]["stations_complete"], 0);
    let stations_in_zone = body["stations"].as_array().unwrap().len() as u64;
    assert_eq!(
        zone["periods"][0]["stations"].as_u64(),
        Some(stations_in_zone)
    );
    assert_eq!(body["center"]["periods"][0]["received"], 276);

    // Today, the whole center: the three records sent as measured are on time. (From ten
    // minutes ago: one period, or two when local midnight falls in between.)
    let body = svc
        .ok(&format!(
            "/api/v1/reports/connectivity?period=day&from={}",
            now - 600_000
        ))
        .await;
    let periods = body["stations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["station"] == "DN-AMATA-WW01")
        .unwrap()["periods"]
        .as_array()
        .unwrap()
        .clone();
    let sum = |field: &str| {
        periods
            .iter()
            .map(|p| p[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((sum("received"), sum("on_time")), (3, 3), "{periods:?}");
    assert_eq!(body["center"]["periods"][0]["late"], 0);
    let registered = svc.ok("/api/v1/stations").await["stations"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        body["center"]["periods"][0]["stations"].as_u64(),
        Some(registered as u64)
    );

    // CSV: the center, the zones, then the stations.
    let response = svc
        .http
        .get(format!(
            "{}/api/v1/reports/connectivity?zone=DN-AMATA&period=day&from={day}&to={}&format=csv",
            svc.base,
            day + DAY
        ))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let mut lines = text.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("level,id,zone,period_start"));
    assert!(lines.next().unwrap().starts_with("center,,"));
    let row = text
        .lines()
        .find(|l| l.starts_with("station,DN-AMATA-WW01,"))
        .unwrap();
    assert!(row.contains(",288,276,"), "{row}");
    svc.stop().await;
}

on_both_stores!(
    connectivity_counts_records_expected_received_and_on_time_per_station_zone_and_center,
    a_day_of_readings_is_judged_against_every_limit_row,
    the_report_the_alerts_and_the_raw_readings_tell_the_same_story,
);
