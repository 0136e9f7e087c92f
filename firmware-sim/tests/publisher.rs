//! The Publisher against a real broker (see `common` for which one and when tests skip).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use firmware_sim::{encode, BrokerOptions, Encoding, Publisher, Reading, Record, Status};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

mod common;
use common::{broker_address, broker_available, broker_url, subscribe, unique};

fn record(station: &str, seq: u64) -> Record {
    Record {
        station: station.into(),
        ts_ms: 1_795_662_300_000 + seq as i64 * 1000,
        seq: Some(seq),
        readings: vec![Reading {
            param: "COD".into(),
            value: 71.3,
            unit: "mg/L".into(),
            status: Status::Measuring,
        }],
    }
}

#[tokio::test]
async fn published_records_reach_a_subscriber_and_are_acknowledged() {
    if !broker_available().await {
        return;
    }
    let prefix = unique("basic");
    let mut received = subscribe(&format!("{prefix}/#")).await;
    let mut options = BrokerOptions::new(broker_url(), unique("pub"));
    options.topic_prefix = Some(prefix.clone());
    let publisher = Publisher::connect(options).await.unwrap();
    assert_eq!(publisher.topic_prefix(), Some(prefix.as_str()));

    let records = [record("DN-AMATA-WW01", 1), record("DN-AMATA-WW01", 2)];
    publisher
        .publish_records("DN-AMATA", "DN-AMATA-WW01", Encoding::Bincode, &records)
        .await
        .unwrap();
    publisher
        .publish_status("DN-AMATA", "DN-AMATA-WW01", true)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), publisher.wait_acked())
        .await
        .expect("PUBACKs did not arrive")
        .unwrap();
    assert_eq!((publisher.published(), publisher.acked()), (2, 2));

    let (topic, payload) = received.recv().await.unwrap();
    assert_eq!(
        topic,
        format!("{prefix}/quantrac/v1/DN-AMATA/DN-AMATA-WW01/telemetry/bincode")
    );
    assert_eq!(payload, encode(&records, Encoding::Bincode));
    let (topic, payload) = received.recv().await.unwrap();
    assert_eq!(
        topic,
        format!("{prefix}/quantrac/v1/DN-AMATA/DN-AMATA-WW01/status")
    );
    assert_eq!(payload, b"online");

    // Clear the retained status so the broker keeps nothing from the test.
    let status = firmware_sim::status_topic(Some(&prefix), "DN-AMATA", "DN-AMATA-WW01");
    publisher
        .publish_raw(&status, Vec::new(), true)
        .await
        .unwrap();
    publisher.disconnect().await.unwrap();
}

/// A TCP relay to the broker whose connections can all be cut at once.
async fn relay() -> (String, watch::Sender<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (cut, _) = watch::channel(0_u64);
    let cuts = cut.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut generation = cuts.subscribe();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(broker_address()).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = generation.changed() => {}
                }
            });
        }
    });
    (address, cut)
}

#[tokio::test]
async fn messages_queued_when_the_link_drops_are_sent_after_the_reconnection() {
    if !broker_available().await {
        return;
    }
    let prefix = unique("reconnect");
    let mut received = subscribe(&format!("{prefix}/#")).await;
    let (relay_address, cut) = relay().await;
    let mut options = BrokerOptions::new(format!("mqtt://{relay_address}"), unique("pub"));
    options.topic_prefix = Some(prefix.clone());
    options.inflight = 20;
    let publisher = Publisher::connect(options).await.unwrap();

    let total = 600_u64;
    for seq in 0..total {
        publisher
            .publish_records("Z", "S", Encoding::Json, &[record("S", seq)])
            .await
            .unwrap();
        if seq == total / 2 {
            cut.send_modify(|g| *g += 1);
        }
    }
    tokio::time::timeout(Duration::from_secs(30), publisher.wait_acked())
        .await
        .expect("not every message was acknowledged after the reconnection")
        .unwrap();
    assert_eq!(publisher.acked(), total);

    let mut seen = HashSet::new();
    while seen.len() < total as usize {
        let (_, payload) = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {total} messages arrived", seen.len()))
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        seen.insert(value["seq"].as_u64().unwrap());
    }
    publisher.disconnect().await.unwrap();
}

#[tokio::test]
async fn an_invalid_url_is_rejected_before_connecting() {
    let error = Publisher::connect(BrokerOptions::new("http://127.0.0.1:1883", "x"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("invalid broker url"), "{error}");
}
