//! Configuration: typed structs mirroring `config/quantrac.toml`, which is embedded as the
//! built-in default and documents every key.
//!
//! Layers, lowest first: the built-in file, an optional `--config` file (only the keys it
//! changes), then `QUANTRAC_<SECTION>__<KEY>` environment variables. Every struct denies
//! unknown fields so that typos fail loudly; [`Config::validate`] then checks what types
//! cannot (URL schemes, files that must exist, sizes that must be positive).

mod broker_url;
mod load;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::FixedOffset;
use serde::{Deserialize, Deserializer};

pub use broker_url::{BrokerAddress, UrlError};
pub use load::{Error, Result, BUILTIN};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub api: ApiConfig,
    pub mqtt: MqttConfig,
    pub storage: StorageConfig,
    pub validation: ValidationConfig,
    pub quarantine: QuarantineConfig,
    pub registry: RegistryConfig,
    pub stations: StationsConfig,
    pub alerts: AlertsConfig,
    pub security: SecurityConfig,
    pub log: LogConfig,
    pub ftp: FtpConfig,
    pub ingest_dir: IngestDirConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "utc_offset")]
    pub utc_offset: FixedOffset,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub default_page_size: usize,
    pub max_page_size: usize,
    #[serde(with = "humantime_serde")]
    pub default_range: Duration,
    #[serde(with = "humantime_serde")]
    pub max_range: Duration,
    pub max_buckets: usize,
    /// Largest series x days one readings query may cover.
    pub max_query_cost: u64,
    /// Share of an hour's (a window's) expected readings its mean needs to count in reports
    /// and the air quality index.
    pub report_coverage: f64,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Alert event streams one token may hold open at once.
    pub max_streams_per_token: usize,
    /// Alert event streams open at once, all tokens together.
    pub max_streams: usize,
    pub rate_limit: RateLimitConfig,
    /// Serve HTTPS with these files instead of HTTP.
    pub tls: Option<TlsFiles>,
    /// Serve `/metrics` without a token on this address too (for Prometheus).
    pub metrics_listen: Option<SocketAddr>,
}

/// Token-bucket rate limits: `per_second` sustained, bursts up to `burst`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub per_token_per_second: u32,
    pub per_token_burst: u32,
    pub per_address_per_second: u32,
    pub per_address_burst: u32,
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Tokens and audit log; `None`: `security.db` in `storage.path`.
    pub db: Option<PathBuf>,
    pub auth_failure_burst: u32,
    #[serde(with = "humantime_serde")]
    pub auth_failure_window: Duration,
}

impl Config {
    /// Where the tokens and the audit log are kept.
    pub fn security_db(&self) -> PathBuf {
        self.security
            .db
            .clone()
            .unwrap_or_else(|| self.storage.path.join("security.db"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// External broker URL; `None` serves devices on quantrac's own endpoint.
    pub url: Option<String>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub topic_prefix: String,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    pub max_packet_size: usize,
    pub queue_capacity: usize,
    /// Ingest that holds messages and settles none for this long is stalled: not ready.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
    pub endpoint: EndpointConfig,
}

/// quantrac's own MQTT device endpoint (`[mqtt.endpoint]`, used when `mqtt.url` is unset).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub listen: SocketAddr,
    pub max_connections: usize,
    /// Messages one connection may have waiting for durability (MQTT 5 Receive Maximum).
    pub receive_maximum: u16,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub drain_limit: Duration,
    /// Accept clients without credentials (the demo); otherwise devices and tokens only.
    pub allow_anonymous: bool,
    /// An mqtts listener too.
    pub tls_listen: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
}

/// The Circular 10 file-transfer endpoint ([`crate::ftp`]): data loggers upload their `.txt`
/// files over FTP or explicit FTPS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Passive-mode data ports, an inclusive range.
    pub passive_port_first: u16,
    pub passive_port_last: u16,
    /// The address PASV replies announce (behind NAT: the public one), an IPv4 address or a
    /// DNS name resolved at each PASV; unset: the local address of the control connection.
    pub passive_address: Option<String>,
    /// Wrong passwords within `failed_logins_block` after which logins of that key
    /// (`failed_logins_block_by`) are refused for `failed_logins_block`; 0: never.
    pub failed_logins_max: u32,
    #[serde(with = "humantime_serde")]
    pub failed_logins_block: Duration,
    pub failed_logins_block_by: crate::ftp::lockout::BlockBy,
    /// Explicit FTPS (`AUTH TLS`) with these files.
    pub tls: Option<TlsFiles>,
    /// Refuse logins and transfers that did not switch to TLS first (needs `tls`).
    pub require_tls: bool,
    /// Largest accepted file; a larger one is refused (552) and quarantined.
    pub max_file_bytes: usize,
    /// Sessions open at once; more wait in the listen backlog (backpressure).
    pub max_connections: usize,
    /// A session idle this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

/// The watched directory ([`crate::ftp::watch`]): Circular 10 files dropped into a
/// directory by another FTP server are ingested and moved to `done/` or `rejected/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestDirConfig {
    pub enabled: bool,
    pub path: PathBuf,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A file is taken once its size and modification time have not changed for this long.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// Largest accepted file; a larger one is moved to `rejected/`.
    pub max_file_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Questdb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: Backend,
    pub path: PathBuf,
    pub sync: SyncMode,
    pub queue_capacity: usize,
    /// Memory the queued writes may hold, in MiB (readings and kept payloads).
    pub queue_max_mb: usize,
    pub batch_max_rows: usize,
    #[serde(with = "humantime_serde")]
    pub batch_max_delay: Duration,
    pub cache_mb: usize,
    pub checkpoint_mb: usize,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Longest start-up `PRAGMA quick_check` of each SQLite file; zero skips the check.
    #[serde(with = "humantime_serde")]
    pub integrity_check_timeout: Duration,
    pub spool: SpoolConfig,
    pub questdb: QuestDbConfig,
}

/// Whether `name` may be used as the QuestDB readings table: 1-127 ASCII letters, digits or
/// `_`, starting with a letter. Table names cannot be bind parameters, so this is what makes
/// writing one into SQL safe.
pub fn is_table_name(name: &str) -> bool {
    name.len() <= 127
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The QuestDB backend (`storage.backend = "questdb"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestDbConfig {
    /// ILP over HTTP: `http://host:9000` or `https://host:9000`.
    pub http: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// PEM roots for https (system roots otherwise).
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL wire protocol, for the schema and every query.
    pub pg: String,
    /// The readings table: letters, digits and `_`, starting with a letter (it is written
    /// into SQL, so it is checked at load).
    pub table: String,
    pub pool_size: usize,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    pub max_request_bytes: usize,
    /// Drop partitions older than `storage.retention` (QuestDB TTL).
    pub ttl: bool,
    /// Keep a materialized view of hourly aggregates (`<table>_hourly`) and answer
    /// aggregates of whole hours from it (`storage::questdb::rollup`).
    pub hourly_rollup: bool,
}

/// The local spool that holds writes while the store is unreachable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    pub enabled: bool,
    /// Empty: `<storage.path>/spool`.
    pub path: PathBuf,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineConfig {
    /// Entries kept (one per rejected message).
    pub capacity: usize,
    /// Bytes of a rejected payload shown in its entry.
    pub excerpt_bytes: usize,
    /// Bytes of whole rejected payloads kept (the dead-letter store).
    pub dead_letter_max_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub seeds: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationsConfig {
    pub offline_after: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(with = "humantime_serde")]
    pub lateness: Duration,
    #[serde(with = "humantime_serde")]
    pub backfill_after: Duration,
    /// Zero: no reminders.
    #[serde(with = "humantime_serde")]
    pub reminder: Duration,
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    pub publish_mqtt: bool,
    pub mqtt_queue_capacity: usize,
    pub stream_buffer: usize,
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// How webhooks are delivered (shared by all of them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    pub queue_capacity: usize,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

/// One webhook: where alert events are POSTed, and which.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Zones whose alerts go here; empty: every zone.
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default = "info")]
    pub min_severity: crate::alerts::Severity,
    /// Also send events raised by backlog data (normally only recorded).
    #[serde(default)]
    pub include_backfilled: bool,
}

fn info() -> crate::alerts::Severity {
    crate::alerts::Severity::Info
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

fn utc_offset<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<FixedOffset, D::Error> {
    let text = String::deserialize(d)?;
    text.parse::<FixedOffset>().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not a UTC offset like +07:00 or -03:30"
        ))
    })
}
