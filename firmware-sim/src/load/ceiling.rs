//! The broker's ceiling: how fast it delivers the load's messages to one subscriber that
//! does nothing with them. quantrac subscribes the same way (QoS 1) and must also decode,
//! validate, store and evaluate, so its stored rate cannot exceed this.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use serde::Serialize;
use tokio::sync::watch;

use super::traffic::Traffic;
use super::{now_ms, Error};
use crate::encode::Encoding;
use crate::fleet::Fleet;
use crate::publish::{BrokerOptions, Publisher, Subscription};

/// The ceiling, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingReport {
    /// Stations and readings per message of the traffic.
    pub stations: usize,
    pub params: usize,
    pub encoding: &'static str,
    /// Messages published and received by the subscriber.
    pub messages: u64,
    /// Readings in those messages.
    pub readings: u64,
    /// From the first publish to the last message received.
    pub seconds: f64,
    /// Readings delivered per second.
    pub readings_per_second: f64,
}

/// Publishes load traffic as fast as the broker acknowledges it for `duration`, and times
/// its delivery to a subscriber on the telemetry topics.
pub async fn ceiling(
    broker: BrokerOptions,
    fleet: &Fleet,
    stations: usize,
    params: usize,
    encoding: Encoding,
    duration: Duration,
) -> Result<CeilingReport, Error> {
    let mut sink = broker.clone();
    sink.client_id = format!("{}-sink", broker.client_id);
    let filter = match &broker.topic_prefix {
        Some(prefix) => format!("{prefix}/quantrac/v1/+/+/telemetry/+"),
        None => "quantrac/v1/+/+/telemetry/+".to_owned(),
    };
    let (received_tx, mut received) = watch::channel((0u64, Instant::now()));
    let received_tx = Arc::new(received_tx);
    let _subscription = Subscription::open(&sink, &filter, QoS::AtLeastOnce, move |_, at| {
        received_tx.send_modify(|(n, last)| {
            *n += 1;
            *last = at;
        });
    })
    .await?;

    let mut traffic = Traffic::new(
        fleet.stations.iter().take(stations.max(1)).collect(),
        params,
        super::resolution_ms(encoding),
    );
    let publisher = Publisher::connect(broker).await?;
    let started = Instant::now();
    let mut messages = 0u64;
    while started.elapsed() < duration {
        let Some((station, record)) = traffic.next_record(now_ms()) else {
            return Err(Error::NoStation);
        };
        publisher
            .publish_records(&station.zone, &station.id, encoding, &[record])
            .await?;
        messages += 1;
    }
    publisher.disconnect().await?;
    let all = tokio::time::timeout(
        Duration::from_secs(60),
        received.wait_for(|(n, _)| *n >= messages),
    )
    .await
    .map(|state| state.map(|s| s.1));
    let Ok(Ok(last)) = all else {
        let got = received.borrow().0;
        return Err(Error::Api(format!(
            "the subscriber received {got} of {messages} messages"
        )));
    };
    let seconds = last.duration_since(started).as_secs_f64();
    let readings = messages * traffic.params() as u64;
    Ok(CeilingReport {
        stations: stations.max(1).min(fleet.stations.len()),
        params: traffic.params(),
        encoding: encoding.as_str(),
        messages,
        readings,
        seconds,
        readings_per_second: readings as f64 / seconds,
    })
}
