//! Publishes alert events on `[prefix/]quantrac/v1/alerts/{zone}/{station}` (JSON, QoS 1,
//! not retained), on a connection of its own (`<client_id>-alerts`, clean session) so that
//! publishing never competes with ingest's event loop.

use std::sync::Arc;
use std::time::Duration;

use chrono::FixedOffset;
use rumqttc::{AsyncClient, ConnectionError, Event, Outgoing, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alerts::AlertEvent;
use crate::config::{BrokerAddress, MqttConfig};
use crate::metrics as m;
use crate::mqtt::{self, Session};
use crate::telemetry::topic;

/// Starts the publisher; returns its queue and its task (ends after `stop`, once the queue
/// is drained and the connection closed).
pub fn spawn(
    address: &BrokerAddress,
    config: &MqttConfig,
    capacity: usize,
    offset: FixedOffset,
    stop: CancellationToken,
) -> Result<(mpsc::Sender<Arc<AlertEvent>>, JoinHandle<()>), mqtt::Error> {
    let client_id = format!("{}-alerts", config.client_id);
    let options = mqtt::options(address, config, &client_id, Session::Clean)?;
    let (client, mut eventloop) = AsyncClient::new(options, capacity.min(10_000));
    let (tx, mut rx) = mpsc::channel::<Arc<AlertEvent>>(capacity);
    let prefix = config.topic_prefix.clone();
    let backoff_max = config.reconnect_max;
    let poller = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            match eventloop.poll().await {
                // Our own DISCONNECT went out: the publisher is done.
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(ConnectionError::RequestsDone) => {
                    break
                }
                Ok(_) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, "alert publisher: MQTT connection lost");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(backoff_max);
                }
            }
        }
    });
    let task = tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                e = rx.recv() => e,
                () = stop.cancelled() => {
                    // Publish what is queued, then stop.
                    rx.close();
                    rx.recv().await
                }
            };
            let Some(event) = event else { break };
            let a = &event.alert;
            let topic = topic::alert_topic(&prefix, &a.zone, &a.station);
            let payload = super::json::event(&event, &offset).to_string();
            if let Err(e) = client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
            {
                metrics::counter!(m::NOTIFICATIONS_DROPPED_TOTAL, m::LABEL_SINK => "mqtt")
                    .increment(1);
                tracing::warn!(error = %e, alert = a.id, "cannot publish an alert event");
            }
        }
        // DISCONNECT goes after the queued publishes; give the event loop a moment to send
        // them (a broker that is down gets nothing more anyway).
        let _ = client.disconnect().await;
        drop(client);
        let mut poller = poller;
        tokio::select! {
            _ = &mut poller => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                poller.abort();
                tracing::warn!("alert publisher: the broker did not take the last events in time");
            }
        }
    });
    Ok((tx, task))
}
