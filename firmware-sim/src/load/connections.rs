//! Many devices at once: one MQTT connection per station (client id = station id), each
//! publishing its own station's record every `interval`, as a fleet of real gateways does;
//! then quantrac's peak resident memory. The other loads use one publisher connection, which
//! costs quantrac one session however many stations it speaks for.
//!
//! Each device is a bare MQTT 3.1.1 client (CONNECT, PUBLISH QoS 1 and its PUBACK,
//! DISCONNECT) on its own task: ten thousand of them cost this process a few kilobytes
//! each, where a full client library per connection would cost far more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{now_ms, resolution_ms, Error, Quantrac, Traffic};
use crate::encode::{self, Encoding};
use crate::fleet::Fleet;

/// Connections being opened at once (the listen backlog is finite).
const CONNECTING: usize = 200;
/// Longest wait for one CONNACK or PUBACK.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub struct ConnectionsOptions {
    /// `host:port` of the MQTT endpoint (plain TCP, no credentials).
    pub address: String,
    pub api: String,
    pub token: Option<String>,
    /// Stations, one connection each (the first of the fleet).
    pub stations: usize,
    pub params: usize,
    pub encoding: Encoding,
    /// Every device publishes once per interval (spread evenly over it).
    pub interval: Duration,
    /// How long the devices publish once all are connected.
    pub duration: Duration,
    /// How long to wait afterwards for quantrac to store everything.
    pub settle: Duration,
}

/// The result, as JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectionsReport {
    pub connections: usize,
    /// Connections that could not be opened or were lost.
    pub connections_failed: u64,
    pub params: usize,
    pub encoding: &'static str,
    pub connect_seconds: f64,
    pub messages_acknowledged: u64,
    pub readings_acknowledged: u64,
    pub readings_stored: u64,
    /// Every acknowledged reading was stored within the settle time.
    pub complete: bool,
    pub seconds: f64,
    pub stored_per_second: f64,
    /// quantrac's resident memory once every device is connected, before publishing.
    pub quantrac_rss_connected_bytes: Option<f64>,
    /// quantrac's peak resident memory since it started.
    pub quantrac_peak_rss_bytes: Option<f64>,
}

/// A packet's remaining length, MQTT's variable-length integer.
fn remaining_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// CONNECT, MQTT 3.1.1, clean session, no keep-alive, no credentials.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 0]);
    string(&mut body, client_id);
    let mut packet = vec![0x10];
    remaining_length(&mut packet, body.len());
    packet.extend(body);
    packet
}

/// PUBLISH at QoS 1.
fn publish_packet(topic: &str, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    string(&mut body, topic);
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    let mut packet = vec![0x32];
    remaining_length(&mut packet, body.len());
    packet.extend(body);
    packet
}

async fn reply(stream: &mut TcpStream, first: u8) -> Result<[u8; 4], String> {
    let mut buf = [0u8; 4];
    tokio::time::timeout(REPLY_TIMEOUT, stream.read_exact(&mut buf))
        .await
        .map_err(|_| "no reply".to_owned())?
        .map_err(|e| e.to_string())?;
    if buf[0] != first || buf[1] != 2 {
        return Err(format!("unexpected packet {:02x} {:02x}", buf[0], buf[1]));
    }
    Ok(buf)
}

async fn open(address: &str, client_id: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(&connect_packet(client_id))
        .await
        .map_err(|e| e.to_string())?;
    let connack = reply(&mut stream, 0x20).await?;
    if connack[3] != 0 {
        return Err(format!("refused, return code {}", connack[3]));
    }
    Ok(stream)
}

/// Runs the fleet of connections and measures quantrac.
pub async fn connections(
    options: ConnectionsOptions,
    fleet: &Fleet,
) -> Result<ConnectionsReport, Error> {
    let chosen: Vec<_> = fleet
        .stations
        .iter()
        .take(options.stations.max(1))
        .collect();
    if chosen.is_empty() {
        return Err(Error::NoStation);
    }
    let quantrac = Quantrac::new(&options.api, options.token.as_deref())?;
    let metric = |name: &'static str| {
        let quantrac = quantrac.clone();
        async move { quantrac.metric(name).await }
    };
    let before = metric("quantrac_store_readings_total")
        .await?
        .unwrap_or(0.0);

    // Connect every device first.
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(CONNECTING));
    let mut connecting = JoinSet::new();
    for (k, station) in chosen.iter().enumerate() {
        let (address, id, permits) = (options.address.clone(), station.id.clone(), permits.clone());
        connecting.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (k, open(&address, &id).await)
        });
    }
    let mut streams: Vec<Option<TcpStream>> = (0..chosen.len()).map(|_| None).collect();
    let failed = Arc::new(AtomicU64::new(0));
    while let Some(joined) = connecting.join_next().await {
        match joined {
            Ok((k, Ok(stream))) => streams[k] = Some(stream),
            Ok((_, Err(e))) => {
                tracing::warn!(error = %e, "a device could not connect");
                failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let connected_rss = metric("quantrac_process_resident_bytes").await?;

    // Then every connected device publishes its station, spread evenly over the interval.
    let acked = Arc::new(AtomicU64::new(0));
    let publishing = Instant::now();
    let until = publishing + options.duration;
    let n = chosen.len();
    let mut devices = JoinSet::new();
    for (k, stream) in streams.into_iter().enumerate() {
        let Some(mut stream) = stream else { continue };
        let station = chosen[k].clone();
        let (acked, failed) = (acked.clone(), failed.clone());
        let (params, encoding, interval) = (options.params, options.encoding, options.interval);
        let offset = interval.mul_f64(k as f64 / n as f64);
        devices.spawn(async move {
            let mut traffic = Traffic::new(vec![&station], params, resolution_ms(encoding))
                .numbered_from(u64::try_from(now_ms()).unwrap_or(0));
            let topic = encode::telemetry_topic(None, &station.zone, &station.id, encoding);
            let mut next = publishing + offset;
            let mut id = 0u16;
            while next < until {
                tokio::time::sleep_until(next.into()).await;
                next += interval;
                let Some((_, record)) = traffic.next_record(now_ms()) else { break };
                id = id.wrapping_add(1).max(1);
                let packet = publish_packet(&topic, id, &encode::encode(&[record], encoding));
                let sent = async {
                    stream.write_all(&packet).await.map_err(|e| e.to_string())?;
                    reply(&mut stream, 0x40).await
                };
                match sent.await {
                    Ok(_) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(station = %station.id, error = %e, "a device lost its connection");
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            let _ = stream.write_all(&[0xE0, 0]).await;
        });
    }
    while devices.join_next().await.is_some() {}

    let messages = acked.load(Ordering::Relaxed);
    let params = options
        .params
        .min(chosen.iter().map(|s| s.parameters.len()).min().unwrap_or(0)) as u64;
    let readings_acknowledged = messages * params;
    let target = before + readings_acknowledged as f64;
    let deadline = Instant::now() + options.settle;
    let mut stored = before;
    while stored < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(now) = metric("quantrac_store_readings_total").await? {
            stored = now;
        }
    }
    let seconds = publishing.elapsed().as_secs_f64();
    let readings_stored = (stored - before).max(0.0) as u64;
    Ok(ConnectionsReport {
        connections: n,
        connections_failed: failed.load(Ordering::Relaxed),
        params: params as usize,
        encoding: options.encoding.as_str(),
        connect_seconds,
        messages_acknowledged: messages,
        readings_acknowledged,
        readings_stored,
        complete: readings_stored >= readings_acknowledged,
        seconds,
        stored_per_second: readings_stored as f64 / seconds.max(1e-9),
        quantrac_rss_connected_bytes: connected_rss,
        quantrac_peak_rss_bytes: metric("quantrac_process_peak_resident_bytes").await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_carry_their_remaining_length_as_mqtt_encodes_it() {
        let connect = connect_packet("S1");
        assert_eq!(
            connect,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 2, b'S', b'1']
        );
        let publish = publish_packet("t", 7, &[9; 200]);
        // 3 (topic) + 2 (id) + 200 = 205 = 0x4d + 1 * 128.
        assert_eq!(&publish[..7], &[0x32, 0xcd, 0x01, 0, 1, b't', 0]);
        assert_eq!(publish.len(), 3 + 205);
    }
}
