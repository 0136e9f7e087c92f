//! Reading and checking a configuration.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;

use super::{BrokerAddress, Config};

/// The built-in default configuration (`config/quantrac.toml`).
pub const BUILTIN: &str = include_str!("../../config/quantrac.toml");

/// Prefix of the environment variables that override keys.
const ENV_PREFIX: &str = "QUANTRAC_";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    /// Syntax, type or unknown-key error; figment's message names the key and its source
    /// (file or environment variable).
    #[error("{0}")]
    Parse(Box<figment::Error>),
    #[error("invalid configuration: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<figment::Error> for Error {
    fn from(e: figment::Error) -> Self {
        Error::Parse(Box::new(e))
    }
}

impl Config {
    /// Loads the built-in defaults, then `file` if given, then `QUANTRAC_*__*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut figment = Figment::from(Toml::string(BUILTIN));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Error::Missing(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only variables with a level separator are configuration: QUANTRAC_TEST_* and
        // the like belong to other tools.
        let env = Env::prefixed(ENV_PREFIX)
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        let config: Config = figment.merge(env).extract()?;
        config.validate()?;
        Ok(config)
    }

    /// The built-in defaults alone, ignoring the environment (for tests and tools).
    pub fn builtin() -> Config {
        match Figment::from(Toml::string(BUILTIN)).extract::<Config>() {
            Ok(config) => config,
            // The embedded file is part of the program and checked by a unit test.
            Err(e) => panic!("the built-in configuration is invalid: {e}"),
        }
    }

    /// Checks what the types cannot express.
    pub fn validate(&self) -> Result<()> {
        let invalid = |key, problem: &str| {
            Err(Error::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        if let Some(url) = &self.mqtt.url {
            if let Err(problem) = BrokerAddress::parse(url) {
                return invalid("mqtt.url", &problem.to_string());
            }
        }
        if let Some(ca) = &self.mqtt.ca_file {
            if !ca.is_file() {
                return invalid("mqtt.ca_file", &format!("{} is not a file", ca.display()));
            }
        }
        if !super::is_table_name(&self.storage.questdb.table) {
            return invalid(
                "storage.questdb.table",
                "must be 1-127 letters, digits or '_', starting with a letter",
            );
        }
        if self.mqtt.client_id.is_empty() {
            return invalid(
                "mqtt.client_id",
                "must not be empty (the session is persistent)",
            );
        }
        let prefix = &self.mqtt.topic_prefix;
        if prefix.ends_with('/') || prefix.contains(['+', '#']) {
            return invalid(
                "mqtt.topic_prefix",
                "must not end with '/' or contain MQTT wildcards",
            );
        }
        if self.mqtt.reconnect_min.is_zero() || self.mqtt.reconnect_min > self.mqtt.reconnect_max {
            return invalid(
                "mqtt.reconnect_min",
                "must be positive and not above mqtt.reconnect_max",
            );
        }
        if self.mqtt.keep_alive.as_secs() < 5 {
            return invalid("mqtt.keep_alive", "must be at least 5s");
        }
        let positive = [
            ("api.max_body_bytes", self.api.max_body_bytes),
            ("api.default_page_size", self.api.default_page_size),
            ("api.max_buckets", self.api.max_buckets),
            ("api.max_streams_per_token", self.api.max_streams_per_token),
            ("api.max_streams", self.api.max_streams),
            ("mqtt.max_packet_size", self.mqtt.max_packet_size),
            ("mqtt.queue_capacity", self.mqtt.queue_capacity),
            (
                "mqtt.endpoint.max_connections",
                self.mqtt.endpoint.max_connections,
            ),
            (
                "mqtt.endpoint.receive_maximum",
                usize::from(self.mqtt.endpoint.receive_maximum),
            ),
            ("storage.queue_capacity", self.storage.queue_capacity),
            ("storage.queue_max_mb", self.storage.queue_max_mb),
            ("storage.batch_max_rows", self.storage.batch_max_rows),
            ("storage.checkpoint_mb", self.storage.checkpoint_mb),
            ("quarantine.capacity", self.quarantine.capacity),
            (
                "stations.offline_after",
                self.stations.offline_after as usize,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return invalid(key, "must be positive");
        }
        if self.quarantine.dead_letter_max_bytes == 0 {
            return invalid("quarantine.dead_letter_max_bytes", "must be positive");
        }
        if self.api.max_page_size < self.api.default_page_size {
            return invalid(
                "api.max_page_size",
                "must not be below api.default_page_size",
            );
        }
        if self.api.default_range.is_zero() || self.api.default_range > self.api.max_range {
            return invalid(
                "api.default_range",
                "must be positive and not above api.max_range",
            );
        }
        let r = &self.api.rate_limit;
        if [
            r.per_token_per_second,
            r.per_token_burst,
            r.per_address_per_second,
            r.per_address_burst,
        ]
        .contains(&0)
        {
            return invalid("api.rate_limit", "every rate and burst must be positive");
        }
        if r.per_token_per_second > 1_000_000 || r.per_address_per_second > 1_000_000 {
            return invalid(
                "api.rate_limit",
                "a rate may not exceed 1,000,000 per second",
            );
        }
        if self.api.max_streams_per_token > self.api.max_streams {
            return invalid(
                "api.max_streams_per_token",
                "must not be above api.max_streams",
            );
        }
        if self.api.max_header_bytes < 8192 {
            return invalid("api.max_header_bytes", "must be at least 8192");
        }
        if self.api.max_query_cost == 0 {
            return invalid("api.max_query_cost", "must be positive");
        }
        if !(self.api.report_coverage > 0.0 && self.api.report_coverage <= 1.0) {
            return invalid("api.report_coverage", "must be in (0, 1]");
        }
        let endpoint = &self.mqtt.endpoint;
        if endpoint.tls_listen.is_some() != endpoint.tls.is_some() {
            return invalid(
                "mqtt.endpoint.tls_listen",
                "needs [mqtt.endpoint.tls] (cert and key), and the reverse",
            );
        }
        if let Some(tls) = &endpoint.tls {
            for (key, file) in [
                ("mqtt.endpoint.tls.cert", &tls.cert),
                ("mqtt.endpoint.tls.key", &tls.key),
            ] {
                if !file.is_file() {
                    return invalid(key, &format!("{} is not a file", file.display()));
                }
            }
        }
        if let Some(tls) = &self.api.tls {
            for (key, file) in [("api.tls.cert", &tls.cert), ("api.tls.key", &tls.key)] {
                if !file.is_file() {
                    return invalid(key, &format!("{} is not a file", file.display()));
                }
            }
        }
        let ftp = &self.ftp;
        if let Some(tls) = &ftp.tls {
            for (key, file) in [("ftp.tls.cert", &tls.cert), ("ftp.tls.key", &tls.key)] {
                if !file.is_file() {
                    return invalid(key, &format!("{} is not a file", file.display()));
                }
            }
        }
        if ftp.require_tls && ftp.tls.is_none() {
            return invalid("ftp.require_tls", "needs [ftp.tls] (a certificate and key)");
        }
        if ftp.passive_port_first > ftp.passive_port_last || ftp.passive_port_first == 0 {
            return invalid(
                "ftp.passive_port_first",
                "must be positive and at most ftp.passive_port_last",
            );
        }
        if let Some(address) = &ftp.passive_address {
            let v6 = address.parse::<std::net::Ipv6Addr>().is_ok();
            if address.trim().is_empty() || v6 || crate::text::has_unsafe(address) {
                return invalid(
                    "ftp.passive_address",
                    "must be an IPv4 address or a DNS name (PASV announces IPv4 only)",
                );
            }
        }
        if ftp.failed_logins_max > 0 && ftp.failed_logins_block.is_zero() {
            return invalid("ftp.failed_logins_block", "must be positive");
        }
        if ftp.max_file_bytes == 0 || self.ingest_dir.max_file_bytes == 0 {
            return invalid("ftp.max_file_bytes", "max_file_bytes must be positive");
        }
        if ftp.max_connections == 0 {
            return invalid("ftp.max_connections", "must be positive");
        }
        if self.ingest_dir.poll_interval.is_zero() {
            return invalid("ingest_dir.poll_interval", "must be positive");
        }
        if self.security.auth_failure_burst == 0 || self.security.auth_failure_window.is_zero() {
            return invalid(
                "security.auth_failure_burst",
                "the burst and its window must be positive",
            );
        }
        if self.api.request_timeout.is_zero() {
            return invalid("api.request_timeout", "must be positive");
        }
        let a = &self.alerts;
        for (key, value) in [
            ("alerts.tick", a.tick),
            ("alerts.snapshot_interval", a.snapshot_interval),
            ("alerts.delivery.timeout", a.delivery.timeout),
            ("alerts.delivery.backoff_min", a.delivery.backoff_min),
        ] {
            if value.is_zero() {
                return invalid(key, "must be positive");
            }
        }
        if a.delivery.backoff_min > a.delivery.backoff_max {
            return invalid(
                "alerts.delivery.backoff_min",
                "must not be above alerts.delivery.backoff_max",
            );
        }
        if a.delivery.max_attempts == 0
            || a.delivery.queue_capacity == 0
            || a.mqtt_queue_capacity == 0
            || a.stream_buffer == 0
        {
            return invalid(
                "alerts",
                "queue capacities, stream_buffer and delivery.max_attempts must be positive",
            );
        }
        for hook in &a.webhooks {
            let ok = hook
                .url
                .parse::<axum::http::Uri>()
                .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")));
            if !ok {
                return invalid(
                    "alerts.webhooks",
                    &format!("`{}` is not an http(s) URL", hook.url),
                );
            }
        }
        if self.storage.retention.as_secs() < 3600 {
            return invalid("storage.retention", "must be at least 1h");
        }
        Ok(())
    }
}

#[cfg(test)]
// figment's Jail returns its large error type by design.
#[allow(clippy::unwrap_used, clippy::result_large_err)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn the_built_in_file_is_a_complete_valid_configuration() {
        let c = Config::builtin();
        c.validate().unwrap();
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:8080");
        assert!(
            c.mqtt.url.is_none(),
            "the default is quantrac's own device endpoint"
        );
        assert_eq!(c.mqtt.endpoint.listen.port(), 1883);
    }

    #[test]
    fn a_partial_file_overrides_only_its_keys_and_env_wins_over_it() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "q.toml",
                "[api]\nlisten = \"127.0.0.1:9000\"\n[storage]\npath = \"/tmp/q\"\n",
            )?;
            jail.set_env("QUANTRAC_API__LISTEN", "127.0.0.1:9090");
            jail.set_env("QUANTRAC_MQTT__URL", "mqtt://127.0.0.1:1883");
            jail.set_env("QUANTRAC_MQTT__ENDPOINT__RECEIVE_MAXIMUM", "8");
            jail.set_env("QUANTRAC_TEST_QUESTDB_URL", "ignored: not a config key");
            let c = Config::load(Some(Path::new("q.toml"))).unwrap();
            assert_eq!(c.api.listen.port(), 9090);
            assert_eq!(c.storage.path, PathBuf::from("/tmp/q"));
            assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://127.0.0.1:1883"));
            assert_eq!(c.mqtt.endpoint.receive_maximum, 8);
            assert_eq!(c.quarantine.capacity, 10000, "untouched keys keep defaults");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key_in_files_and_in_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("q.toml", "[api]\nlistn = \"127.0.0.1:9000\"\n")?;
            let err = Config::load(Some(Path::new("q.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("listn"), "{err}");

            jail.clear_env();
            jail.set_env("QUANTRAC_STORAGE__PAHT", "/x");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("paht") || err.contains("PAHT"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn semantic_problems_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("QUANTRAC_MQTT__URL", "http://broker:1883");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("mqtt.url"), "{err}");
            jail.set_env("QUANTRAC_MQTT__URL", "mqtt://127.0.0.1:1883");
            jail.set_env("QUANTRAC_QUARANTINE__CAPACITY", "0");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("quarantine.capacity"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn an_ipv6_passive_address_and_an_unknown_block_kind_are_refused_naming_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("QUANTRAC_FTP__PASSIVE_ADDRESS", "::1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("ftp.passive_address"), "{err}");
            jail.set_env("QUANTRAC_FTP__PASSIVE_ADDRESS", "ftp.example.org");
            assert!(Config::load(None).is_ok());
            jail.set_env("QUANTRAC_FTP__FAILED_LOGINS_BLOCK_BY", "everyone");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.to_lowercase().contains("failed_logins_block_by"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn every_key_of_the_built_in_file_is_documented_in_the_reference() {
        fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(t) => keys(&key, t, out),
                    _ => out.push(key),
                }
            }
        }
        let reference = include_str!("../../docs/configuration.md");
        let mut all = Vec::new();
        keys("", &BUILTIN.parse::<toml::Table>().unwrap(), &mut all);
        assert!(all.len() > 30);
        for key in all {
            assert!(
                reference.contains(&format!("`{key}`")),
                "docs/configuration.md misses `{key}`"
            );
        }
    }

    #[test]
    fn rate_limits_must_make_a_quota() {
        let mut c = Config::builtin();
        c.api.rate_limit.per_token_per_second = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("api.rate_limit"));
        c.api.rate_limit.per_token_per_second = 2_000_000_000;
        assert!(c.validate().unwrap_err().to_string().contains("1,000,000"));
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Config::load(Some(Path::new("/nonexistent/q.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/q.toml"));
    }

    #[test]
    fn a_bad_duration_is_a_parse_error() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[validation]\nmax_future = \"soon\"").unwrap();
        let err = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(err.contains("max_future"), "{err}");
    }
}
