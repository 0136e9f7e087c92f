//! Shared harness of the integration tests: a real quantrac (in process) on a real broker,
//! fed by `firmware-sim` as a device would, checked through the HTTP API.
//!
//! Each service gets its own data directory, API port, MQTT client id and topic prefix, so
//! tests run in parallel on one shared Mosquitto without seeing each other's messages.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod processes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use firmware_sim::{BrokerOptions, Encoding, Publisher, Reading, Record, Status};
use quantrac::app::{self, Running};
use quantrac::config::{Config, SyncMode};
use quantrac::security::Role;
use serde_json::Value;

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// quantrac's own MQTT device endpoint (no broker in between).
    Embedded,
    /// The Mosquitto at 127.0.0.1:1883 (or `QUANTRAC_TEST_MOSQUITTO_URL`).
    Mosquitto,
}

pub fn mosquitto_url() -> String {
    std::env::var("QUANTRAC_TEST_MOSQUITTO_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

/// Fails loudly (never skips) when Mosquitto is not there.
pub fn require_mosquitto() {
    let url = mosquitto_url();
    let addr = url.trim_start_matches("mqtt://");
    if std::net::TcpStream::connect(addr).is_err() {
        panic!(
            "these tests need a Mosquitto broker at {url}, and none answers. Run `.ci/run` \
             (it starts or installs one), or `mosquitto -d -c /etc/mosquitto/mosquitto.conf`, \
             or point QUANTRAC_TEST_MOSQUITTO_URL at a broker."
        );
    }
}

pub fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

/// A name unique to this process and call: for topic prefixes and client ids.
pub fn unique(label: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        label
    )
}

/// Which store a test's service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded SQLite store (always available).
    Sqlite,
    /// The QuestDB at `QUANTRAC_TEST_QUESTDB_URL`, in a table of the test's own.
    QuestDb,
}

/// The QuestDB the tests may use, with a table unique to this run and `label`; `None`
/// (saying so on stderr) when `QUANTRAC_TEST_QUESTDB_URL` is not set.
pub fn questdb(label: &str) -> Option<quantrac::config::QuestDbConfig> {
    let Ok(http) = std::env::var("QUANTRAC_TEST_QUESTDB_URL") else {
        eprintln!(
            "SKIPPED on QuestDB ({label}): set QUANTRAC_TEST_QUESTDB_URL (and \
             QUANTRAC_TEST_QUESTDB_PG) to run it against a QuestDB server"
        );
        return None;
    };
    let mut config = Config::builtin().storage.questdb;
    config.http = http;
    if let Ok(pg) = std::env::var("QUANTRAC_TEST_QUESTDB_PG") {
        config.pg = pg;
    }
    config.table = questdb_table(label);
    Some(config)
}

/// A QuestDB table name unique to this run and call (`qtest_` + time, process, counter,
/// label), so that runs and parallel tests never share readings.
pub fn questdb_table(label: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let label: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("qtest_{secs}_{}", unique(&label).replace('-', "_"))
}

/// Where a test's service keeps its data, and the names that isolate it.
pub struct Site {
    /// The QuestDB (and table) of this site, when it runs on QuestDB.
    pub questdb: Option<quantrac::config::QuestDbConfig>,
    pub broker: Broker,
    pub dir: tempfile::TempDir,
    pub prefix: String,
    /// An external broker's URL, for tests that run their own (restarts).
    pub external_url: Option<String>,
    /// Where the device endpoint listens: the same across restarts of the site's quantrac,
    /// so that gateways reconnect to it.
    pub endpoint: std::net::SocketAddr,
    /// Seeds of its own (fast stations), if not the shipped ones.
    pub seeds: Option<PathBuf>,
}

impl Site {
    pub fn new(broker: Broker, label: &str) -> Site {
        if broker == Broker::Mosquitto {
            require_mosquitto();
        }
        Site {
            questdb: None,
            broker,
            dir: tempfile::tempdir().unwrap(),
            prefix: unique(label),
            external_url: None,
            endpoint: quantrac::mqtt::free_local_addr().unwrap(),
            seeds: None,
        }
    }

    /// A site on `store`; `None` (skipped, said on stderr) for QuestDB when no server is
    /// configured.
    pub fn on(store: StoreKind, broker: Broker, label: &str) -> Option<Site> {
        Site::new(broker, label).with_store(store, label)
    }

    /// This site on `store` (see [`Site::on`]).
    pub fn with_store(mut self, store: StoreKind, label: &str) -> Option<Site> {
        if store == StoreKind::QuestDb {
            self.questdb = Some(questdb(label)?);
        }
        Some(self)
    }

    /// A site whose stations report every second (the shipped seeds otherwise), with the
    /// alert clock at 100 ms: time-based alert rules play out in seconds.
    pub fn fast(broker: Broker, label: &str) -> Site {
        let mut site = Site::new(broker, label);
        let seeds = site.dir.path().join("seeds");
        std::fs::create_dir_all(&seeds).unwrap();
        for file in ["zones.toml", "limits.csv", "rules.toml"] {
            std::fs::copy(self::seeds().join(file), seeds.join(file)).unwrap();
        }
        let stations = std::fs::read_to_string(self::seeds().join("stations.toml")).unwrap();
        std::fs::write(
            seeds.join("stations.toml"),
            stations.replace("expected_interval = \"5m\"", "expected_interval = \"1s\""),
        )
        .unwrap();
        site.seeds = Some(seeds);
        site
    }

    /// A site whose broker address outlives quantrac restarts: Mosquitto, or the device
    /// endpoint on a port kept for the site (gateways keep what quantrac did not
    /// acknowledge and send it again when it is back).
    pub fn with_lasting_broker(broker: Broker, label: &str) -> Site {
        Site::new(broker, label)
    }

    pub fn config(&self) -> Config {
        let mut c = Config::builtin();
        c.api.listen = "127.0.0.1:0".parse().unwrap();
        c.storage.path = self.dir.path().join("data");
        c.storage.sync = SyncMode::Normal;
        c.registry.seeds = self.seeds.clone().unwrap_or_else(seeds);
        c.alerts.tick = Duration::from_millis(100);
        c.alerts.lateness = Duration::from_secs(2);
        c.alerts.backfill_after = Duration::from_secs(3600);
        c.mqtt.topic_prefix = self.prefix.clone();
        c.mqtt.client_id = format!("quantrac-{}", self.prefix);
        c.mqtt.reconnect_min = Duration::from_millis(100);
        c.mqtt.reconnect_max = Duration::from_secs(1);
        if let Some(questdb) = &self.questdb {
            c.storage.backend = quantrac::config::Backend::Questdb;
            c.storage.questdb = questdb.clone();
        }
        match (self.broker, &self.external_url) {
            (_, Some(url)) => c.mqtt.url = Some(url.clone()),
            (Broker::Mosquitto, None) => c.mqtt.url = Some(mosquitto_url()),
            (Broker::Embedded, None) => {
                c.mqtt.endpoint.listen = self.endpoint;
                // The test gateways connect without credentials (tests/security.rs checks
                // the refusals).
                c.mqtt.endpoint.allow_anonymous = true;
            }
        }
        c
    }

    pub async fn start(&self) -> Service {
        Service::start(self.config()).await
    }

    /// Ends quantrac's persistent session on a shared broker (a clean-session connect with
    /// the same client id), so that test runs leave no sessions behind on Mosquitto.
    pub async fn finish(self) {
        if self.broker == Broker::Mosquitto {
            let client_id = self.config().mqtt.client_id;
            let options = BrokerOptions::new(mosquitto_url(), client_id);
            if let Ok(p) = Publisher::connect(options).await {
                let _ = p.disconnect().await;
            }
        }
    }
}

/// A running quantrac and an HTTP client for its API.
pub struct Service {
    pub running: Running,
    pub base: String,
    /// Sends an admin token with every request.
    pub http: reqwest::Client,
    /// That admin token.
    pub token: String,
}

/// An HTTP client that sends `token` as its bearer token.
pub fn authorized(token: &str) -> reqwest::Client {
    authorized_builder(token).build().unwrap()
}

/// A client builder whose requests carry `token` (add TLS roots and the like to it).
pub fn authorized_builder(token: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {token}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().default_headers(headers)
}

impl Service {
    pub async fn start(config: Config) -> Service {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,quantrac=info")
            .with_test_writer()
            .try_init();
        let running = app::start(config).await.expect("quantrac starts");
        tokio::time::timeout(Duration::from_secs(20), running.wait_ready())
            .await
            .expect("quantrac connects and subscribes within 20 s");
        let base = format!("http://{}", running.api_addr);
        let (token, _) = running
            .security()
            .create_token("test harness", Role::Admin, "test", None)
            .expect("an admin token for the tests");
        Service {
            running,
            base,
            http: authorized(&token),
            token,
        }
    }

    /// A client whose requests carry a new token with `role`.
    pub fn client_with_role(&self, role: Role) -> reqwest::Client {
        let (token, _) = self
            .running
            .security()
            .create_token(&format!("test {role}"), role, "test", None)
            .unwrap();
        authorized(&token)
    }

    pub fn broker_url(&self) -> String {
        self.running.broker.to_string()
    }

    /// A device publishing to this service's broker under its topic prefix.
    pub async fn publisher(&self) -> Publisher {
        let mut options = BrokerOptions::new(self.broker_url(), unique("gw"));
        let prefix = &self.running.config().mqtt.topic_prefix;
        options.topic_prefix = Some(prefix.clone()).filter(|p| !p.is_empty());
        Publisher::connect(options)
            .await
            .expect("the gateway connects")
    }

    /// The full topic for `suffix` (`{zone}/{station}/...`) under this service's prefix.
    pub fn topic(&self, suffix: &str) -> String {
        let prefix = &self.running.config().mqtt.topic_prefix;
        if prefix.is_empty() {
            format!("quantrac/v1/{suffix}")
        } else {
            format!("{prefix}/quantrac/v1/{suffix}")
        }
    }

    /// Waits (on the service's progress signal, bounded) until `n` messages are durable and
    /// acknowledged, then until the store shows them to queries.
    pub async fn wait_processed(&self, n: u64) {
        let done =
            tokio::time::timeout(Duration::from_secs(30), self.running.wait_processed(n)).await;
        if done.is_err() {
            let got = *self.running.processed().borrow();
            panic!("only {got} of {n} messages were processed within 30 s");
        }
        // Durable is not yet visible on QuestDB (its WAL is applied a moment later, longer
        // on a busy machine): wait for that too, so that the next query sees the messages.
        self.running.store().flush().await.expect("store flush");
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .expect("the API answers");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("the API answers")
            .text()
            .await
            .unwrap()
    }

    /// GET that must answer 200.
    pub async fn ok(&self, path_and_query: &str) -> Value {
        let (status, body) = self.get(path_and_query).await;
        assert_eq!(
            status, 200,
            "GET {path_and_query} answered {status}: {body}"
        );
        body
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// A record of `station` at `ts_ms` with the given `(param, value, unit)` readings.
pub fn record(station: &str, ts_ms: i64, seq: u64, readings: &[(&str, f64, &str)]) -> Record {
    Record {
        station: station.to_owned(),
        ts_ms,
        seq: Some(seq),
        readings: readings
            .iter()
            .map(|&(param, value, unit)| Reading {
                param: param.to_owned(),
                value,
                unit: unit.to_owned(),
                status: Status::Measuring,
            })
            .collect(),
    }
}

/// A whole-minute time a little in the past, different per call, so tests do not collide.
pub fn recent_minute(minutes_ago: i64) -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    now - now % 60_000 - minutes_ago * 60_000
}

pub const ALL_ENCODINGS: [Encoding; 3] = [Encoding::Json, Encoding::Bincode, Encoding::Tt10];

/// URL-encodes a query value (times with `+` offsets).
pub fn q(value: &str) -> String {
    value.replace('+', "%2B").replace(':', "%3A")
}

/// Epoch milliseconds as a query value.
pub fn ms(value: i64) -> String {
    value.to_string()
}

/// Expands a scenario `async fn name(broker: Broker)` into one test per broker.
#[macro_export]
macro_rules! on_both_brokers {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::Broker::Embedded).await
                }
            )*
        }
        mod mosquitto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::Broker::Mosquitto).await
                }
            )*
        }
    };
}

/// Expands a scenario `async fn name(store: StoreKind)` into one test per store: `sqlite::name`
/// and `questdb::name` (which says it is skipped when no QuestDB is configured).
#[macro_export]
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::StoreKind::Sqlite).await
                }
            )*
        }
        mod questdb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::StoreKind::QuestDb).await
                }
            )*
        }
    };
}
