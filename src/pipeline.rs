//! The pipeline: one MQTT message in, one [`WriteItem`] and its alert events out.
//!
//! topic -> decode ([`crate::telemetry`]) -> validate ([`crate::validate`]) -> fan out:
//! accepted readings, rejections and the alerts they changed go to the store in one item (so
//! a message is durably stored *or* durably rejected as a whole, with its alerts), live
//! state is updated, the alert engine evaluates the readings, rejections are counted and
//! logged. No I/O here: ingest hands the item to the store, and releases the MQTT
//! acknowledgement and announces the alert events once the store confirms it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::alerts::{Alert, AlertEvent, Engine};
use crate::live::Live;
use crate::metrics as m;
use crate::quarantine::{Counters, Reason, Rejected, Rejection};
use crate::registry::Registry;
use crate::security::sequence::Sequences;
use crate::storage::{PresenceUpdate, WriteItem};
use crate::telemetry::{self, Encoding, GatewayState, Timestamp, Topic, TopicKind};
use crate::validate::{self, CounterEvent, Rules};

/// The registry as the pipeline sees it: swapped atomically on reload.
pub type SharedRegistry = Arc<ArcSwap<Registry>>;

/// What one message produced.
#[derive(Debug, Default)]
pub struct Processed {
    /// For the store (the alerts of `events` included).
    pub item: WriteItem,
    /// For the notifiers, once `item` is durable.
    pub events: Vec<AlertEvent>,
}

impl Processed {
    /// `updates` are alerts that changed without an event; stored after the events' copies
    /// so that the newest state of each alert is written last.
    fn new(mut item: WriteItem, events: Vec<AlertEvent>, updates: Vec<Alert>) -> Processed {
        item.alerts = events
            .iter()
            .map(|e| e.alert.clone())
            .chain(updates)
            .collect();
        Processed { item, events }
    }
}

impl From<WriteItem> for Processed {
    fn from(item: WriteItem) -> Self {
        Processed {
            item,
            events: Vec::new(),
        }
    }
}

/// Everything the pipeline needs; cheap to share.
pub struct Pipeline {
    registry: SharedRegistry,
    engine: Arc<Mutex<Engine>>,
    rules: Rules,
    topic_prefix: String,
    excerpt_bytes: usize,
    live: Arc<Live>,
    counters: Arc<Counters>,
    sequences: SharedSequences,
    /// Ambient stations' current air quality index, when kept.
    air: Option<Arc<crate::aqi::live::LiveAqi>>,
}

/// Record counters per station, shared with the API (which reports missing records).
pub type SharedSequences = Arc<Mutex<Sequences>>;

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        registry: SharedRegistry,
        engine: Arc<Mutex<Engine>>,
        rules: Rules,
        topic_prefix: String,
        excerpt_bytes: usize,
        live: Arc<Live>,
        counters: Arc<Counters>,
        sequences: SharedSequences,
    ) -> Pipeline {
        Pipeline {
            registry,
            engine,
            rules,
            topic_prefix,
            excerpt_bytes,
            live,
            counters,
            sequences,
            air: None,
        }
    }

    /// Keeps each ambient station's current air quality index as its data arrives.
    pub fn with_air_quality(mut self, air: Arc<crate::aqi::live::LiveAqi>) -> Pipeline {
        self.air = Some(air);
        self
    }

    /// Bytes of a rejected payload kept as its excerpt (`quarantine.excerpt_bytes`).
    pub fn excerpt_bytes(&self) -> usize {
        self.excerpt_bytes
    }

    /// Processes one message that arrived at `now`.
    pub fn process(&self, topic: &str, payload: &[u8], now: Timestamp) -> Processed {
        let parsed = match Topic::parse(&self.topic_prefix, topic) {
            Ok(t) => t,
            Err(e) => {
                return self.reject(
                    topic,
                    None,
                    payload,
                    now,
                    single(Reason::UnknownTopic, None, e.to_string()),
                );
            }
        };
        match parsed.kind {
            TopicKind::Status => self.status(topic, &parsed, payload, now),
            TopicKind::Telemetry(encoding) => {
                self.telemetry(topic, &parsed, encoding, payload, now)
            }
        }
    }

    fn telemetry(
        &self,
        topic: &str,
        parsed: &Topic<'_>,
        encoding: Encoding,
        payload: &[u8],
        now: Timestamp,
    ) -> Processed {
        metrics::counter!(m::MESSAGES_TOTAL, m::LABEL_ENCODING => encoding.as_str()).increment(1);
        let registry = self.registry.load();
        let decoded = telemetry::decode(encoding, payload, parsed.station);
        let outcome = {
            let mut sequences = self.sequences.lock();
            validate::validate(
                &registry,
                &self.rules,
                parsed,
                &decoded,
                now,
                &mut sequences,
            )
        };
        if outcome.missing_records > 0 {
            metrics::counter!(m::RECORDS_MISSING_TOTAL).increment(outcome.missing_records);
            tracing::debug!(
                station = parsed.station,
                missing = outcome.missing_records,
                "records skipped by the station's counter (lost, or still to come)"
            );
        }
        for event in &outcome.counter_events {
            metrics::counter!(m::RECORD_COUNTER_EVENTS_TOTAL, "event" => event.code()).increment(1);
            match event {
                CounterEvent::Resent => {}
                CounterEvent::Jump { seq, highest } => tracing::warn!(station = parsed.station, seq, highest,
                    "record counter jumped implausibly far ahead: not counted as missing records"),
                CounterEvent::Reset { seq, highest } => tracing::info!(station = parsed.station, seq, highest,
                    "record counter started again (a new or updated logger): its window starts again"),
            }
        }
        metrics::counter!(m::READINGS_ACCEPTED_TOTAL, m::LABEL_ENCODING => encoding.as_str())
            .increment(outcome.accepted.len() as u64);
        self.live.observe(&outcome.accepted, now);
        if let Some(air) = &self.air {
            if let Some((station, current)) = air.observe(&registry, &outcome.accepted) {
                metrics::gauge!(m::AQI, m::LABEL_STATION => station.to_string())
                    .set(f64::from(current.index.aqi));
            }
        }
        let mut events = Vec::new();
        let mut updates = Vec::new();
        if !outcome.accepted.is_empty() {
            let mut engine = self.engine.lock();
            engine.evaluate(&outcome.accepted, now, &mut events);
            updates = engine.take_updates();
        }
        let presence = outcome.accepted.first().map(|r| PresenceUpdate {
            station: r.station.clone(),
            last_seen: Some(now),
            gateway: None,
        });
        let rejected = (!outcome.rejected.is_empty()).then(|| {
            // The quarantine's share is the registry station's: names outside the registry
            // (which anyone on an open broker can spray) all share the "no station" one.
            let station = registry.station(parsed.station).map(|s| &*s.id);
            self.rejected(
                topic,
                Some(encoding),
                station,
                payload,
                now,
                outcome.rejected,
            )
        });
        let item = WriteItem {
            readings: outcome.accepted,
            rejected,
            presence,
            record_window: outcome.counter,
            ..WriteItem::default()
        };
        Processed::new(item, events, updates)
    }

    fn status(&self, topic: &str, parsed: &Topic<'_>, payload: &[u8], now: Timestamp) -> Processed {
        metrics::counter!(m::MESSAGES_TOTAL, m::LABEL_ENCODING => "status").increment(1);
        if payload.is_empty() {
            // An empty retained message clears the retained status; nothing to record.
            return Processed::default();
        }
        let registry = self.registry.load();
        let Some(station) = registry.station(parsed.station) else {
            let detail = format!("station `{}` is not in the registry", parsed.station);
            return self.reject(
                topic,
                None,
                payload,
                now,
                single(Reason::UnknownStation, Some(parsed.station), detail),
            );
        };
        if *station.zone != *parsed.zone {
            let detail = format!(
                "station `{}` belongs to zone `{}`, not to the topic's zone `{}`",
                station.id, station.zone, parsed.zone
            );
            return self.reject(
                topic,
                None,
                payload,
                now,
                single(Reason::TopicMismatch, Some(parsed.station), detail),
            );
        }
        let Some(state) = GatewayState::parse(payload) else {
            let detail = "a status payload must be `online` or `offline`".to_owned();
            return self.reject(
                topic,
                None,
                payload,
                now,
                single(Reason::MalformedPayload, Some(parsed.station), detail),
            );
        };
        self.live.set_gateway(station.id.clone(), state, now);
        let mut events = Vec::new();
        let updates = {
            let mut engine = self.engine.lock();
            engine.gateway(&station.id, state, now, &mut events);
            engine.take_updates()
        };
        let item = WriteItem {
            presence: Some(PresenceUpdate {
                station: station.id.clone(),
                last_seen: None,
                gateway: Some((state, now)),
            }),
            ..WriteItem::default()
        };
        Processed::new(item, events, updates)
    }

    fn reject(
        &self,
        topic: &str,
        encoding: Option<Encoding>,
        payload: &[u8],
        now: Timestamp,
        rejection: Rejection,
    ) -> Processed {
        let station = rejection
            .station
            .clone()
            .filter(|s| self.registry.load().station(s).is_some());
        let rejected = self.rejected(
            topic,
            encoding,
            station.as_deref(),
            payload,
            now,
            vec![rejection],
        );
        Processed::from(WriteItem {
            rejected: Some(rejected),
            ..WriteItem::default()
        })
    }

    /// Counts, logs and packages the rejections of one message into one quarantine entry
    /// (`station`: the registry station of the topic it came on, if it is one).
    fn rejected(
        &self,
        topic: &str,
        encoding: Option<Encoding>,
        station: Option<&str>,
        payload: &[u8],
        now: Timestamp,
        rejections: Vec<Rejection>,
    ) -> Rejected {
        for r in &rejections {
            self.counters.count(r.reason);
        }
        if let Some(first) = rejections.first() {
            tracing::warn!(
                topic,
                rejected = rejections.len(),
                reason = first.reason.code(),
                detail = %first.detail,
                "rejected input quarantined"
            );
        }
        Rejected::new(
            now,
            topic,
            encoding,
            station.map(str::to_owned),
            payload,
            self.excerpt_bytes,
            rejections,
        )
    }
}

fn single(reason: Reason, station: Option<&str>, detail: String) -> Rejection {
    Rejection {
        reason,
        station: station.map(str::to_owned),
        param: None,
        ts: None,
        value: None,
        detail,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::quarantine;

    const NOW: Timestamp = Timestamp::from_millis(1_795_662_300_000);

    fn pipeline() -> (Pipeline, Arc<Live>, Arc<Counters>) {
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        let registry = Registry::load(&seeds).unwrap();
        let engine = Engine::new(
            crate::alerts::EngineConfig {
                lateness: Duration::from_secs(30),
                backfill_after: Duration::from_secs(900),
                reminder: None,
            },
            Arc::new(Registry::load(&seeds).unwrap()),
            Arc::new(crate::alerts::RuleBook::load(&seeds).unwrap()),
            NOW,
        );
        let live = Live::new();
        let counters = Counters::new();
        let rules = Rules {
            max_future: Duration::from_secs(300),
            max_age: Duration::from_secs(86_400 * 365),
        };
        let p = Pipeline::new(
            Arc::new(ArcSwap::from_pointee(registry)),
            Arc::new(Mutex::new(engine)),
            rules,
            String::new(),
            64,
            live.clone(),
            counters.clone(),
            Arc::new(Mutex::new(Sequences::new())),
        );
        (p, live, counters)
    }

    const TOPIC: &str = "quantrac/v1/DN-AMATA/DN-AMATA-WW01/telemetry/json";

    #[test]
    fn a_mixed_message_yields_stored_readings_and_quarantined_ones_in_one_item() {
        let (p, live, counters) = pipeline();
        let payload = br#"{"station":"DN-AMATA-WW01","ts":"2026-11-26T10:05:00+07:00","seq":1,
            "readings":[{"param":"COD","value":71.3,"unit":"mg/L","status":"00"},
                        {"param":"COD2","value":1,"unit":"mg/L","status":"00"}]}"#;
        let item = p.process(TOPIC, payload, NOW).item;
        assert_eq!(item.readings.len(), 1);
        let rejected = item.rejected.unwrap();
        assert_eq!(rejected.samples[0].reason, Reason::UnknownParameter);
        assert_eq!(rejected.station.as_deref(), Some("DN-AMATA-WW01"));
        assert_eq!(
            rejected.payload.as_deref(),
            Some(&payload[..]),
            "kept whole"
        );
        assert_eq!(rejected.encoding, Some(Encoding::Json));
        assert!(rejected.excerpt.ends_with('…'), "payload cut to 64 bytes");
        assert_eq!(counters.get(Reason::UnknownParameter), 1);
        assert_eq!(item.presence.unwrap().last_seen, Some(NOW));
        assert_eq!(live.station("DN-AMATA-WW01").unwrap().latest.len(), 1);
    }

    #[test]
    fn a_backlog_with_one_bad_element_stores_the_valid_records_and_quarantines_that_element() {
        let (p, _, counters) = pipeline();
        let record = |seq: u64, ts: &str| {
            format!(
                r#"{{"station":"DN-AMATA-WW01","ts":"{ts}","seq":{seq},
                   "readings":[{{"param":"COD","value":71.3,"unit":"mg/L","status":"00"}}]}}"#
            )
        };
        let payload = format!(
            "[{}, {{\"junk\":1}}, {}]",
            record(1, "2026-11-26T10:00:00+07:00"),
            record(2, "2026-11-26T10:05:00+07:00")
        );
        let item = p.process(TOPIC, payload.as_bytes(), NOW).item;
        let times: Vec<i64> = item.readings.iter().map(|r| r.ts.as_millis()).collect();
        assert_eq!(times, [1_795_662_000_000, 1_795_662_300_000]);
        let rejected = item.rejected.unwrap();
        assert_eq!(rejected.counts, [(Reason::MalformedPayload, 1)]);
        assert!(
            rejected.samples[0]
                .detail
                .starts_with("element 1: missing field"),
            "{:?}",
            rejected.samples[0]
        );
        assert_eq!(rejected.payload.as_deref(), Some(payload.as_bytes()));
        assert_eq!(counters.get(Reason::MalformedPayload), 1);
    }

    #[test]
    fn a_tt10_payload_of_100000_bad_lines_is_one_entry_with_every_rejection_counted() {
        let (p, _, counters) = pipeline();
        let topic = "quantrac/v1/DN-AMATA/DN-AMATA-WW01/telemetry/tt10";
        let mut payload = String::new();
        for i in 0..100_000 {
            // Out of range: COD is 0..2000 mg/L. Two carry the wrong unit.
            let unit = if i % 50_000 == 1 { "g/L" } else { "mg/L" };
            payload.push_str(&format!("COD\t{}\t{unit}\t20261126100500\t00\n", 5000 + i));
        }
        let item = p.process(topic, payload.as_bytes(), NOW).item;
        assert!(item.readings.is_empty());
        let rejected = item.rejected.unwrap();
        assert_eq!(
            rejected.counts,
            [(Reason::UnitMismatch, 2), (Reason::OutOfRange, 99_998)]
        );
        assert_eq!(rejected.total(), 100_000);
        assert_eq!(rejected.samples.len(), quarantine::SAMPLES);
        assert_eq!(rejected.payload.map(|p| p.len()), Some(payload.len()));
        assert_eq!(
            counters.get(Reason::OutOfRange),
            99_998,
            "every one counted"
        );
    }

    #[test]
    fn a_status_message_updates_presence_without_readings() {
        let (p, live, _) = pipeline();
        let processed = p.process("quantrac/v1/DN-AMATA/DN-AMATA-WW01/status", b"offline", NOW);
        let events: Vec<String> = processed
            .events
            .iter()
            .map(|e| e.alert.rule.to_string())
            .collect();
        assert_eq!(events, ["gateway-offline"], "the alert engine saw it");
        assert_eq!(
            processed.item.alerts.len(),
            1,
            "and the alert is stored with it"
        );
        let item = processed.item;
        assert!(item.readings.is_empty() && item.rejected.is_none());
        assert_eq!(
            item.presence.unwrap().gateway,
            Some((GatewayState::Offline, NOW))
        );
        let station = live.station("DN-AMATA-WW01").unwrap();
        assert_eq!(station.gateway, Some((GatewayState::Offline, NOW)));
    }

    #[test]
    fn bad_status_messages_and_foreign_topics_are_quarantined_with_their_reason() {
        let (p, _, counters) = pipeline();
        let cases = [
            (
                "quantrac/v1/DN-AMATA/DN-AMATA-WW01/status",
                &b"maybe"[..],
                Reason::MalformedPayload,
            ),
            (
                "quantrac/v1/DN-AMATA/NOPE/status",
                b"online",
                Reason::UnknownStation,
            ),
            (
                "quantrac/v1/BN-VSIP/DN-AMATA-WW01/status",
                b"online",
                Reason::TopicMismatch,
            ),
            (
                "quantrac/v1/DN-AMATA/DN-AMATA-WW01/telemetry/xml",
                b"<x/>",
                Reason::UnknownTopic,
            ),
        ];
        for (topic, payload, reason) in cases {
            let item = p.process(topic, payload, NOW).item;
            let rejected = item.rejected.unwrap();
            assert_eq!(rejected.samples[0].reason, reason, "{topic}");
            assert_eq!(rejected.topic, topic);
        }
        assert_eq!(counters.get(Reason::MalformedPayload), 1);
        assert_eq!(counters.get(Reason::UnknownTopic), 1);
    }

    #[test]
    fn made_up_station_names_count_against_the_no_station_share_of_the_quarantine() {
        let (p, _, _) = pipeline();
        let sprayed = [
            (
                "quantrac/v1/DN-AMATA/MADE-UP-1/telemetry/json",
                &b"{oops"[..],
            ),
            ("quantrac/v1/DN-AMATA/MADE-UP-2/status", b"online"),
            ("quantrac/v1/DN-AMATA/DN-AMATA-WW01/telemetry/xml", b"<x/>"),
        ];
        for (topic, payload) in sprayed {
            let rejected = p.process(topic, payload, NOW).item.rejected.unwrap();
            assert_eq!(rejected.station, None, "{topic}");
        }
        let rejected = p.process(TOPIC, b"{oops", NOW).item.rejected.unwrap();
        assert_eq!(rejected.station.as_deref(), Some("DN-AMATA-WW01"));
    }

    #[test]
    fn an_empty_status_payload_clears_nothing_and_rejects_nothing() {
        let (p, _, _) = pipeline();
        let item = p
            .process("quantrac/v1/DN-AMATA/DN-AMATA-WW01/status", b"", NOW)
            .item;
        assert!(item.rejected.is_none() && item.presence.is_none());
    }
}
