//! Helpers shared by the broker tests: the development broker is the Mosquitto of the
//! development machine and CI (`127.0.0.1:1883`, or `FIRMWARE_SIM_TEST_BROKER=host:port`).
//! Each test uses its own topic prefix, so runs do not see each other. Without a broker the
//! tests fail and say how to start one: they never skip silently.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// A received message: topic and payload.
pub type Message = (String, Vec<u8>);

pub fn broker_address() -> String {
    std::env::var("FIRMWARE_SIM_TEST_BROKER").unwrap_or_else(|_| "127.0.0.1:1883".to_owned())
}

pub fn broker_url() -> String {
    format!("mqtt://{}", broker_address())
}

/// Checks that the broker listens, and fails the test with instructions when it does not.
pub async fn broker_available() -> bool {
    let reachable = TcpStream::connect(broker_address()).await.is_ok();
    assert!(
        reachable,
        "no MQTT broker at {}: run .ci/run (it starts or installs Mosquitto), or \
         `mosquitto -d -c /etc/mosquitto/mosquitto.conf`, or set FIRMWARE_SIM_TEST_BROKER",
        broker_address()
    );
    reachable
}

/// A name no other test run uses (topic prefixes, client ids).
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("fs-test-{name}-{}-{nanos}", std::process::id())
}

/// A second client subscribed to `filter` (QoS 1), ready when this returns.
pub async fn subscribe(filter: &str) -> mpsc::UnboundedReceiver<Message> {
    let (host, port) = broker_address()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.parse().unwrap()))
        .unwrap();
    let mut options = MqttOptions::new(unique("sub"), host, port);
    options.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, mut subscribed) = watch::channel(false);
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    subscribed_tx.send_replace(true);
                }
                Event::Incoming(Packet::Publish(p)) => {
                    // The test may have finished with the receiver; keep acknowledging.
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), subscribed.wait_for(|s| *s))
        .await
        .expect("no SUBACK")
        .unwrap();
    rx
}

/// Everything received until nothing arrives for `quiet`.
pub async fn drain(rx: &mut mpsc::UnboundedReceiver<Message>, quiet: Duration) -> Vec<Message> {
    let mut all = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(quiet, rx.recv()).await {
        all.push(message);
    }
    all
}
