//! The other side of the wire, for measuring: a plain subscriber that hands every message it
//! receives to a callback, with its arrival time. QoS 1 messages are acknowledged at once by
//! rumqttc, so the subscriber costs the broker as little as a subscriber can.

use std::time::Instant;

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use tokio::task::JoinHandle;

use super::{BrokerOptions, Error, Result, CONNECT_TIMEOUT, REQUEST_CAPACITY};

/// A running subscription; dropping it stops the subscriber.
#[derive(Debug)]
pub struct Subscription {
    task: JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscription {
    /// Connects as `options.client_id`, subscribes to `filter` (taken as is: no prefix is
    /// added) and resolves once the broker has acknowledged the subscription. `on_message`
    /// runs on the event-loop task and must be quick.
    pub async fn open(
        options: &BrokerOptions,
        filter: &str,
        qos: QoS,
        mut on_message: impl FnMut(Publish, Instant) + Send + 'static,
    ) -> Result<Subscription> {
        let (client, mut eventloop) = AsyncClient::new(options.mqtt_options()?, REQUEST_CAPACITY);
        client.subscribe(filter, qos).await?;
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            // The client must live as long as its event loop.
            let _client = client;
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        on_message(publish, Instant::now());
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "subscriber connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
            }
        });
        match tokio::time::timeout(CONNECT_TIMEOUT, subscribed).await {
            Ok(Ok(())) => Ok(Subscription { task }),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Unreachable {
                timeout: CONNECT_TIMEOUT,
                last_error: "no SUBACK".to_owned(),
            }),
        }
    }
}
