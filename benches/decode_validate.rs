//! Decode, validate, and both, per reading, for each encoding.
//!
//! Payloads are produced by `firmware-sim` (as a device would) for the station
//! DN-AMATA-WW01: one record of six readings (a live message) and a backlog of twelve such
//! records (a flush). Throughput is reported per reading. `pipeline` adds what the ingest path
//! does around them (topic parsing, live state, counters, alert rule evaluation).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use firmware_sim::{encode, Encoding, Fleet, SimConfig, Simulator};
use quantrac::live::Live;
use quantrac::pipeline::Pipeline;
use quantrac::quarantine::Counters;
use quantrac::registry::Registry;
use quantrac::security::sequence::Sequences;
use quantrac::telemetry::{self, Timestamp, Topic};
use quantrac::validate::{self, Rules};

const STATION: &str = "DN-AMATA-WW01";

fn encoding_of(e: Encoding) -> telemetry::Encoding {
    match e {
        Encoding::Json => telemetry::Encoding::Json,
        Encoding::Bincode => telemetry::Encoding::Bincode,
        Encoding::Tt10 => telemetry::Encoding::Tt10,
    }
}

fn bench(c: &mut Criterion) {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let registry = Registry::load(&seeds).expect("seeds load");
    let fleet = Fleet::load(&seeds).expect("fleet loads");
    let sim = Simulator::new(&fleet, 0, SimConfig::quiet(7));
    let index = (0..sim.len())
        .find(|&i| sim.station(i).id == STATION)
        .expect("station simulated");
    let now = Timestamp::now().as_millis();
    let rules = Rules {
        max_future: Duration::from_secs(300),
        max_age: Duration::from_secs(86_400 * 1830),
    };
    // The same message is processed again and again: without a record counter (`seq`) it is
    // not refused as a replay after the first time.
    let unnumbered = |mut r: firmware_sim::Record| {
        r.seq = None;
        r
    };
    let live_records = vec![unnumbered(sim.sample(index, now - now % 300_000))];
    let backlog: Vec<_> = (1..=12)
        .map(|i| unnumbered(sim.sample(index, now - now % 300_000 - i * 300_000)))
        .collect();
    // The same message again and again: the engine sees readings it already evaluated, so
    // `pipeline` here measures the ingest path around the rules; `alerts_evaluate` measures
    // the rules themselves.
    let engine = quantrac::alerts::Engine::new(
        quantrac::alerts::EngineConfig {
            lateness: Duration::from_secs(30),
            backfill_after: Duration::from_secs(900),
            reminder: None,
        },
        Arc::new(Registry::load(&seeds).expect("seeds load")),
        Arc::new(quantrac::alerts::RuleBook::load(&seeds).expect("rules load")),
        Timestamp::from_millis(now),
    );
    let pipeline = Pipeline::new(
        Arc::new(ArcSwap::from_pointee(
            Registry::load(&seeds).expect("seeds load"),
        )),
        Arc::new(parking_lot::Mutex::new(engine)),
        rules,
        String::new(),
        256,
        Live::new(),
        Counters::new(),
        Arc::default(),
    );

    for (label, records) in [("live", &live_records), ("backlog12", &backlog)] {
        let readings: usize = records.iter().map(|r| r.readings.len()).sum();
        let mut group = c.benchmark_group(format!("decode_validate/{label}"));
        group.throughput(Throughput::Elements(readings as u64));
        for enc in [Encoding::Json, Encoding::Bincode, Encoding::Tt10] {
            let payload = encode(records, enc);
            let topic_text = format!(
                "quantrac/v1/DN-AMATA/{STATION}/telemetry/{}",
                encoding_of(enc)
            );
            let topic = Topic::parse("", &topic_text).expect("topic parses");
            let at = Timestamp::from_millis(now);
            group.bench_with_input(
                BenchmarkId::new("decode", enc.as_str()),
                &payload,
                |b, payload| b.iter(|| telemetry::decode(encoding_of(enc), payload, STATION)),
            );
            let decoded = telemetry::decode(encoding_of(enc), &payload, STATION);
            group.bench_function(BenchmarkId::new("validate", enc.as_str()), |b| {
                b.iter(|| {
                    validate::validate(
                        &registry,
                        &rules,
                        &topic,
                        &decoded,
                        at,
                        &mut Sequences::new(),
                    )
                })
            });
            group.bench_with_input(
                BenchmarkId::new("decode+validate", enc.as_str()),
                &payload,
                |b, payload| {
                    b.iter(|| {
                        let decoded = telemetry::decode(encoding_of(enc), payload, STATION);
                        let outcome = validate::validate(
                            &registry,
                            &rules,
                            &topic,
                            &decoded,
                            at,
                            &mut Sequences::new(),
                        );
                        assert_eq!(outcome.accepted.len(), readings);
                        outcome
                    })
                },
            );
            group.bench_with_input(
                BenchmarkId::new("pipeline", enc.as_str()),
                &payload,
                |b, payload| b.iter(|| pipeline.process(&topic_text, payload, at)),
            );
        }
        group.finish();
    }
    signatures(c, &live_records[0]);
}

/// What a signed station costs: checking one record's HMAC-SHA256 (the canonical form
/// written into a reused buffer), and the record counter's window.
fn signatures(c: &mut Criterion, record: &firmware_sim::Record) {
    use quantrac::security::signature;
    let key: Arc<[u8]> = Arc::from(&b"0123456789abcdef0123456789abcdef"[..]);
    let mut numbered = record.clone();
    numbered.seq = Some(1);
    let payload = firmware_sim::encode::encode_signed(&[numbered], Encoding::Bincode, Some(&key));
    let decoded = telemetry::decode(telemetry::Encoding::Bincode, &payload, STATION);
    let signed = &decoded.records[0];
    let readings = signed.readings.len() as u64;
    let mut group = c.benchmark_group("security");
    group.throughput(Throughput::Elements(readings));
    let keys = [key];
    let mut scratch = Vec::new();
    group.bench_function("verify_signature", |b| {
        b.iter(|| {
            let verdict = signature::check(&keys, true, signed, &mut scratch);
            assert_eq!(verdict, Ok(true));
        })
    });
    let station: Arc<str> = Arc::from(STATION);
    let mut sequences = Sequences::new();
    let mut seq = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("record_counter", |b| {
        b.iter(|| {
            seq += 1;
            sequences.check(&station, seq)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
