//! Signed telemetry end to end, on both brokers: a station that requires signatures has its
//! signed records stored in every encoding, and unsigned, altered and replayed records
//! quarantined with their own reasons (replays after a restart too); skipped record counters
//! show up as missing records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{recent_minute, record, Broker, Site, ALL_ENCODINGS};
use firmware_sim::encode::encode_signed;
use firmware_sim::Encoding;

const ZONE: &str = "DN-AMATA";
const ST: &str = "DN-AMATA-WW01";
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// A site whose DN-AMATA-WW01 must sign with KEY_HEX.
fn signing_site(broker: Broker) -> Site {
    let mut site = Site::new(broker, "signed");
    let seeds = site.dir.path().join("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    for file in ["zones.toml", "limits.csv", "rules.toml"] {
        std::fs::copy(common::seeds().join(file), seeds.join(file)).unwrap();
    }
    let stations = std::fs::read_to_string(common::seeds().join("stations.toml")).unwrap();
    let signing =
        format!("id = \"{ST}\"\nsigning_keys = [\"{KEY_HEX}\"]\nrequire_signature = true");
    let stations = stations.replacen(&format!("id = \"{ST}\""), &signing, 1);
    std::fs::write(seeds.join("stations.toml"), stations).unwrap();
    site.seeds = Some(seeds);
    site
}

/// Changes one byte inside the first occurrence of `what` in `payload`.
fn tamper(mut payload: Vec<u8>, what: &[u8]) -> Vec<u8> {
    let at = payload
        .windows(what.len())
        .position(|w| w == what)
        .expect("the value is in the payload");
    payload[at + what.len() - 1] ^= 0x01;
    payload
}

async fn signed_records_are_checked_in_every_encoding(broker: Broker) {
    let site = signing_site(broker);
    let svc = site.start().await;
    let gw = svc.publisher().await;
    let key = firmware_sim::sign::key_from_hex(KEY_HEX).unwrap();
    let mut messages = 0;
    for (i, encoding) in ALL_ENCODINGS.into_iter().enumerate() {
        // Counters 100, 110, 120: nine records skipped twice.
        let rec = record(
            ST,
            recent_minute(10 + i as i64),
            100 + 10 * i as u64,
            &[("COD", 71.3, "mg/L")],
        );
        gw.publish_signed(ZONE, ST, encoding, std::slice::from_ref(&rec), Some(&key))
            .await
            .unwrap();
        // The same record with one byte of its value changed, under a fresh counter.
        let mut forged = rec;
        forged.seq = Some(200 + i as u64);
        let payload = encode_signed(&[forged], encoding, Some(&key));
        let value: &[u8] = match encoding {
            Encoding::Bincode => &[0x33, 0x33, 0x33, 0x33, 0x33, 0xd3, 0x51, 0x40],
            _ => b"71.3",
        };
        let topic = svc.topic(&format!("{ZONE}/{ST}/telemetry/{encoding}"));
        gw.publish_raw(&topic, tamper(payload, value), false)
            .await
            .unwrap();
        messages += 2;
    }
    // A replay of the first record, byte for byte.
    let first = record(ST, recent_minute(10), 100, &[("COD", 71.3, "mg/L")]);
    gw.publish_signed(ZONE, ST, Encoding::Json, &[first], Some(&key))
        .await
        .unwrap();
    // An unsigned record.
    let unsigned = record(ST, recent_minute(20), 300, &[("COD", 70.0, "mg/L")]);
    gw.publish_records(ZONE, ST, Encoding::Json, &[unsigned])
        .await
        .unwrap();
    messages += 2;
    gw.wait_acked().await.unwrap();
    svc.wait_processed(messages).await;

    let from = recent_minute(30);
    let stored = svc
        .ok(&format!(
            "/api/v1/readings?station={ST}&param=COD&from={from}"
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
        [71.3, 71.3, 71.3],
        "one signed record per encoding: {stored}"
    );

    let quarantine = svc.ok(&format!("/api/v1/quarantine?station={ST}")).await;
    let mut reasons: Vec<&str> = quarantine["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        [
            "bad_signature",
            "bad_signature",
            "bad_signature",
            "replayed_record",
            "unsigned_record"
        ],
        "{quarantine}"
    );

    let station = svc.ok(&format!("/api/v1/stations/{ST}")).await;
    assert_eq!(station["require_signature"], true);
    assert_eq!(station["records"]["last_seq"], 120, "{station}");
    assert_eq!(station["records"]["missing"], 18, "{station}");
    assert!(
        station.get("signing_keys").is_none(),
        "keys never leave the server"
    );

    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}

on_both_brokers!(
    signed_records_are_checked_in_every_encoding,
    a_replay_is_refused_after_a_restart_too,
);

async fn a_replay_is_refused_after_a_restart_too(broker: Broker) {
    let site = signing_site(broker);
    let key = firmware_sim::sign::key_from_hex(KEY_HEX).unwrap();
    let first = record(ST, recent_minute(10), 500, &[("COD", 71.3, "mg/L")]);
    {
        let svc = site.start().await;
        let gw = svc.publisher().await;
        gw.publish_signed(
            ZONE,
            ST,
            Encoding::Json,
            std::slice::from_ref(&first),
            Some(&key),
        )
        .await
        .unwrap();
        gw.wait_acked().await.unwrap();
        svc.wait_processed(1).await;
        gw.disconnect().await.unwrap();
        svc.stop().await;
    }
    let svc = site.start().await;
    let station = svc.ok(&format!("/api/v1/stations/{ST}")).await;
    assert_eq!(station["records"]["last_seq"], 500, "restored: {station}");
    let gw = svc.publisher().await;
    // The first record again, byte for byte, then the station's next one.
    gw.publish_signed(ZONE, ST, Encoding::Json, &[first], Some(&key))
        .await
        .unwrap();
    let next = record(ST, recent_minute(9), 501, &[("COD", 72.0, "mg/L")]);
    gw.publish_signed(ZONE, ST, Encoding::Json, &[next], Some(&key))
        .await
        .unwrap();
    gw.wait_acked().await.unwrap();
    svc.wait_processed(2).await;

    let quarantine = svc.ok(&format!("/api/v1/quarantine?station={ST}")).await;
    let reasons: Vec<&str> = quarantine["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["replayed_record"], "{quarantine}");
    let station = svc.ok(&format!("/api/v1/stations/{ST}")).await;
    assert_eq!(station["records"]["last_seq"], 501, "{station}");
    assert_eq!(station["records"]["missing"], 0, "{station}");

    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}

/// Quarantine reasons of ST, oldest first.
async fn quarantine_reasons(svc: &common::Service) -> Vec<String> {
    let quarantine = svc.ok(&format!("/api/v1/quarantine?station={ST}")).await;
    quarantine["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect()
}

/// A signed station's logger is replaced and counts from 1 again: its records are refused
/// (they cannot be told from replays) until an admin resets the station's record counter,
/// which is audited and survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_resets_a_stations_record_counter_and_a_restart_does_not_bring_it_back() {
    let site = signing_site(Broker::Embedded);
    let key = firmware_sim::sign::key_from_hex(KEY_HEX).unwrap();
    let reset_path = format!("/api/v1/stations/{ST}/record-counter/reset");
    {
        let svc = site.start().await;
        let gw = svc.publisher().await;
        let old = record(ST, recent_minute(20), 5000, &[("COD", 71.3, "mg/L")]);
        let new_logger = record(ST, recent_minute(19), 1, &[("COD", 70.0, "mg/L")]);
        for r in [old, new_logger] {
            gw.publish_signed(ZONE, ST, Encoding::Json, &[r], Some(&key))
                .await
                .unwrap();
        }
        gw.wait_acked().await.unwrap();
        svc.wait_processed(2).await;
        assert_eq!(quarantine_reasons(&svc).await, ["replayed_record"]);

        let viewer = svc.client_with_role(quantrac::security::Role::Inspector);
        let refused = viewer
            .post(format!("{}{reset_path}", svc.base))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403);
        let unknown = svc
            .http
            .post(format!(
                "{}/api/v1/stations/NOPE/record-counter/reset",
                svc.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);

        let reset = svc
            .http
            .post(format!("{}{reset_path}", svc.base))
            .send()
            .await
            .unwrap();
        assert_eq!(reset.status(), 200);
        let body: serde_json::Value = reset.json().await.unwrap();
        assert_eq!(body["station"], ST, "{body}");
        assert_eq!(body["previous"]["last_seq"], 5000, "{body}");
        let station = svc.ok(&format!("/api/v1/stations/{ST}")).await;
        assert!(station["records"].is_null(), "{station}");

        let audit = svc.ok("/api/v1/audit").await;
        let entry = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "record_counter_reset")
            .unwrap_or_else(|| panic!("no reset in the audit log: {audit}"))
            .clone();
        assert_eq!(entry["target"], ST);
        assert!(
            entry["actor"].as_str().unwrap().contains("test harness"),
            "{entry}"
        );
        assert!(
            entry["detail"].as_str().unwrap().contains("5000"),
            "{entry}"
        );

        // The same through the command line (the window is gone by now).
        let base = svc.base.clone();
        let token = svc.token.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_quantrac"))
                .args(["station", "reset-counter", ST, "--url", &base])
                .env("QUANTRAC_TOKEN", token)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("it had no window"), "{stdout}");
        gw.disconnect().await.unwrap();
        svc.stop().await;
    }
    // Restarted straight after the reset: the old window does not come back.
    let svc = site.start().await;
    let station = svc.ok(&format!("/api/v1/stations/{ST}")).await;
    assert!(station["records"].is_null(), "restored: {station}");
    let gw = svc.publisher().await;
    let next = record(ST, recent_minute(18), 2, &[("COD", 69.0, "mg/L")]);
    gw.publish_signed(ZONE, ST, Encoding::Json, &[next], Some(&key))
        .await
        .unwrap();
    gw.wait_acked().await.unwrap();
    svc.wait_processed(1).await;
    assert_eq!(quarantine_reasons(&svc).await, ["replayed_record"]);
    let station = svc.ok(&format!("/api/v1/stations/{ST}")).await;
    assert_eq!(station["records"]["last_seq"], 2, "{station}");
    gw.disconnect().await.unwrap();
    svc.stop().await;
    site.finish().await;
}
