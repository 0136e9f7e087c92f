//! quantrac: the backend of a central environmental monitoring center.
//!
//! Station gateways at industrial-zone outfalls, stacks and ambient air stations publish
//! telemetry over MQTT (to quantrac's own device endpoint, or through an external broker), and
//! station data loggers upload Circular 10 files over FTP; quantrac validates it, stores it,
//! and serves it to inspectors and
//! analysts over an HTTP API. `../docs/` holds the contracts (`telemetry.md` for devices,
//! `api.md` for clients, `alerts.md` for alert rules, `configuration.md` for operators).
//!
//! # Map
//! Data flows one way, top to bottom; a module only uses modules below it.
//!
//! | module | job |
//! |---|---|
//! | [`app`] | wiring: builds every part from the config, starts them, stops them in order |
//! | [`demo`] | `quantrac demo`: the service plus a simulated fleet in one process |
//! | [`api`] | HTTP API (axum): stations, readings, alerts, quarantine, health |
//! | [`endpoint`] | quantrac's own MQTT device endpoint: PUBACK only once durable |
//! | [`ingest`] | quantrac's subscription to an external broker (rumqttc) with end-to-end acks |
//! | [`ftp`] | Circular 10 files: the FTP/FTPS upload endpoint and the watched directory |
//! | [`handoff`] | one message to the store, durable before its source answers; alerts announced then |
//! | [`monitor`] | the alert engine's clock, snapshots, acknowledgements; events durable before announced |
//! | [`notify`] | alert notifications: MQTT alert topic, event stream, webhooks |
//! | [`pipeline`] | one message in: decode, validate, evaluate alerts, fan out to store and live state |
//! | [`alerts`] | pure alert rules and engine: exceedances, early warnings, no data, faults, lifecycle |
//! | [`aqi`] | VN_AQI: breakpoints (data), pure NowCast, hourly and daily indices; each ambient station's current index |
//! | [`coverage`] | the coverage rule every time average shares |
//! | [`validate`] | pure validation rules: accepted, or rejected with one reason |
//! | [`reports`] | pure reports: compliance with the limits over local days and months |
//! | [`storage`] | the `Store` trait, its embedded SQLite backend and its test suite |
//! | [`mqtt`] | MQTT client options (TLS) and the device list (credentials, topic ACLs) |
//! | [`live`] | in-memory "now": latest values and presence per station |
//! | [`quarantine`] | rejection reasons, one entry per rejected message, fair eviction, counters |
//! | [`ack`] | durability confirmations from the store back to ingest |
//! | [`security`] | API tokens and roles, the audit log, telemetry signatures, TLS |
//! | [`registry`] | zones, stations, parameters and limit profiles from `seeds/` |
//! | [`telemetry`] | domain types and the three wire encodings (JSON, bincode, tt10) |
//! | [`config`] | typed configuration, built-in defaults, environment overrides |
//! | [`metrics`] | metric names |
//! | [`logging`] | `tracing` setup: human or JSON lines on stderr, never blocking the pipeline |
//! | [`log_limit`] | rate limits for log lines that repeat (a full disk fails many times a second) |
//! | [`shutdown`] | ordered, bounded shutdown steps and their report |
//! | [`text`] | untrusted text made safe for log lines and terminals |
//!
//! # Guarantees
//! A message's MQTT acknowledgement (an FTP upload's 226) is released only after every
//! reading in it is durably stored or durably rejected ([`endpoint`], [`ingest`], [`ftp`],
//! [`ack`], [`storage`]): with the device endpoint there is no broker memory in between that
//! a crash could lose. Readings are identified by `(station, param, ts)` and stored once;
//! every bounded queue applies backpressure instead of dropping.

pub mod ack;
pub mod alerts;
pub mod api;
pub mod app;
pub mod aqi;
pub mod config;
pub mod coverage;
pub mod demo;
pub mod endpoint;
pub mod ftp;
pub mod handoff;
pub mod ingest;
pub mod live;
pub mod log_limit;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod mqtt;
pub mod notify;
pub mod pipeline;
pub mod quarantine;
pub mod registry;
pub mod reports;
pub mod security;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod text;
pub mod validate;
