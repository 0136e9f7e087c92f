//! The `quantrac` command: `serve`, `demo`, `check-config`, `token`, `device`, `station`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use quantrac::config::Config;
use quantrac::registry::Registry;
use quantrac::security::{Role, SecurityDb};

#[derive(Parser)]
#[command(
    name = "quantrac",
    version,
    about = "Real-time environmental monitoring backend for industrial zones"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (MQTT ingest, store, HTTP API) until SIGINT/SIGTERM; SIGHUP reloads
    /// the registry.
    Serve {
        /// Configuration file (only the keys it changes; the rest are built-in defaults).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Run the service with a simulated fleet of station gateways in the same process.
    Demo {
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// How many seed stations to simulate (0 = all).
        #[arg(long, default_value_t = 0)]
        stations: usize,
        /// How often each simulated station reports (real stations: every 5 minutes).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// History to publish first as backlog flushes, so charts have data at once.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        backfill: Duration,
        /// Seed of the simulation (same seed, same data).
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Validate a configuration and the seeds it points to; exit non-zero on any error.
    CheckConfig {
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Manage API tokens (kept in the security database of the configuration).
    Token {
        #[arg(long, value_name = "PATH", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Make credentials for a gateway on the device endpoint: prints a new password (once)
    /// and the `[[device]]` entry to add to devices.toml in the seeds directory.
    Device {
        #[command(subcommand)]
        action: DeviceAction,
    },
    /// Act on a station through the running service's API (the service owns the station's
    /// state). Needs an admin token in the environment variable QUANTRAC_TOKEN.
    Station {
        /// The API's base URL (default: http://<api.listen> of the configuration).
        #[arg(long, global = true)]
        url: Option<String>,
        #[arg(long, value_name = "PATH", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: StationAction,
    },
}

#[derive(Subcommand)]
enum StationAction {
    /// Start a station's record counter again (its logger was replaced and counts from 1):
    /// its next record starts a new window. Audited.
    ResetCounter {
        /// The station id.
        id: String,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token and print it (it is shown this once; only its hash is kept).
    Create {
        /// viewer, analyst, inspector or admin.
        #[arg(long)]
        role: Role,
        /// Who or what the token is for (shown in lists and the audit log).
        #[arg(long)]
        name: String,
        /// How long it works, e.g. 90d or 12h (default: until revoked).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by its id (the 12 hex characters after `qt_`); it stops working at once.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum DeviceAction {
    /// New credentials for a gateway publishing for `--station` (repeat for several).
    Add {
        #[arg(long)]
        username: String,
        #[arg(long = "station", required = true)]
        stations: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Device {
            action: DeviceAction::Add { username, stations },
        } => device_add(&username, &stations),
        Command::Token { config, action } => token(config.as_deref(), action),
        Command::Station {
            url,
            config,
            action: StationAction::ResetCounter { id },
        } => runtime()?.block_on(reset_counter(url, config.as_deref(), &id)),
        Command::CheckConfig { config } => check_config(config.as_deref()),
        Command::Serve { config } => {
            let config = load(config.as_deref())?;
            let _logs = quantrac::logging::init(&config.log)?;
            runtime()?.block_on(serve(config))
        }
        Command::Demo {
            config,
            stations,
            interval,
            backfill,
            seed,
        } => {
            let config = load(config.as_deref())?;
            let _logs = quantrac::logging::init(&config.log)?;
            let options = quantrac::demo::Options {
                stations,
                interval,
                backfill,
                seed,
            };
            runtime()?.block_on(async move {
                quantrac::demo::run(config, options)
                    .await
                    .context("demo failed")
            })
        }
    }
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(path).context("cannot load the configuration")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("quantrac")
        .build()
        .context("cannot start the async runtime")
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = quantrac::app::start(config)
        .await
        .context("quantrac could not start")?;
    let report = quantrac::app::run_until_signalled(running)
        .await
        .context("cannot listen for signals")?;
    if report.all_done() {
        Ok(())
    } else {
        anyhow::bail!("shutdown incomplete: {:?}", report.steps)
    }
}

fn check_config(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load(path)?;
    let registry = Registry::load(&config.registry.seeds).with_context(|| {
        format!(
            "the configuration is valid but the seeds in {} are not",
            config.registry.seeds.display()
        )
    })?;
    let rules = quantrac::alerts::RuleBook::load(&config.registry.seeds).with_context(|| {
        format!(
            "the configuration is valid but the alert rules in {} are not",
            config.registry.seeds.display()
        )
    })?;
    let devices = quantrac::mqtt::devices::Devices::load(&config.registry.seeds)?;
    if let Some((device, station)) = devices.unknown_station(|s| registry.station(s).is_some()) {
        anyhow::bail!(
            "devices.toml: device `{device}` is given station `{station}`, which is not in the registry"
        );
    }
    let broker = config.mqtt.url.clone().unwrap_or_else(|| {
        let e = &config.mqtt.endpoint;
        format!(
            "device endpoint on {}{}; {} devices{}",
            e.listen,
            e.tls_listen
                .map_or(String::new(), |t| format!(" and mqtts on {t}")),
            devices.len(),
            if e.allow_anonymous {
                ", anonymous allowed"
            } else {
                ""
            }
        )
    });
    println!(
        "configuration OK ({})",
        path.map_or("built-in defaults".into(), |p| p.display().to_string())
    );
    println!("  api:      http://{}/api/v1", config.api.listen);
    println!("  broker:   {broker}");
    println!(
        "  storage:  {:?} in {}",
        config.storage.backend,
        config.storage.path.display()
    );
    println!("  registry: {}", registry.summary());
    println!(
        "  alerts:   {} declared rules, {} webhooks",
        rules.rules.len(),
        config.alerts.webhooks.len()
    );
    Ok(())
}

fn device_add(username: &str, stations: &[String]) -> anyhow::Result<()> {
    let password = base64_password()?;
    let hash = quantrac::mqtt::devices::hash_password(&password)?;
    let list: Vec<String> = stations.iter().map(|s| format!("\"{s}\"")).collect();
    let entry = format!(
        "[[device]]\nusername = \"{username}\"\npassword_hash = \"{hash}\"\nstations = [{}]\n",
        list.join(", ")
    );
    // Check it the way the broker will read it.
    quantrac::mqtt::devices::Devices::parse(&entry).map_err(|e| anyhow::anyhow!(e))?;
    eprintln!("password for `{username}` (give it to the gateway; it is not shown again):");
    eprintln!("{password}");
    eprintln!("add to devices.toml in the seeds directory, then reload quantrac (kill -HUP, or POST /api/v1/registry/reload):");
    println!("{entry}");
    Ok(())
}

/// 24 random bytes as a URL-safe password.
fn base64_password() -> anyhow::Result<String> {
    use base64::Engine as _;
    let bytes = quantrac::security::token::random::<24>()?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn token(config: Option<&Path>, action: TokenAction) -> anyhow::Result<()> {
    let config = load(config)?;
    let path = config.security_db();
    let db = SecurityDb::open(&path)
        .with_context(|| format!("cannot open the security database {}", path.display()))?;
    let actor = format!(
        "cli ({})",
        std::env::var("USER").unwrap_or_else(|_| "unknown user".into())
    );
    match action {
        TokenAction::Create {
            role,
            name,
            expires_in,
        } => {
            let expires_at =
                expires_in.map(|d| quantrac::telemetry::Timestamp::now().saturating_add(d));
            let (text, info) = db.create_token_until(&name, role, expires_at, &actor, None)?;
            let until = info.expires_at.map_or_else(
                || "no expiry".to_owned(),
                |at| format!("expires {}", at.to_rfc3339(&config.api.utc_offset)),
            );
            eprintln!(
                "created {} token {} `{}` ({until}); keep it secret, it is not shown again:",
                info.role, info.id, info.name
            );
            println!("{text}");
        }
        TokenAction::List => {
            let offset = config.api.utc_offset;
            let time = |at: Option<quantrac::telemetry::Timestamp>| {
                at.map_or_else(|| "-".into(), |at| at.to_rfc3339(&offset))
            };
            println!(
                "{:<12}  {:<9}  {:<25}  {:<25}  {:<25}  {:<25}  name",
                "id", "role", "created", "expires", "last used", "revoked"
            );
            for t in db.tokens()? {
                println!(
                    "{:<12}  {:<9}  {:<25}  {:<25}  {:<25}  {:<25}  {}",
                    t.id,
                    t.role.as_str(),
                    t.created_at.to_rfc3339(&offset),
                    time(t.expires_at),
                    time(t.last_used_at),
                    time(t.revoked_at),
                    // Names are checked since; older ones may hold control characters.
                    quantrac::text::escape(&t.name)
                );
            }
        }
        TokenAction::Revoke { id } => {
            let info = db.revoke_token(&id, &actor, None)?;
            println!(
                "revoked {} token {} `{}`",
                info.role,
                info.id,
                quantrac::text::escape(&info.name)
            );
        }
    }
    Ok(())
}

/// `quantrac station reset-counter`: `POST /api/v1/stations/{id}/record-counter/reset`.
async fn reset_counter(url: Option<String>, config: Option<&Path>, id: &str) -> anyhow::Result<()> {
    let base = match url {
        Some(url) => url,
        None => format!("http://{}", load(config)?.api.listen),
    };
    let token = std::env::var("QUANTRAC_TOKEN")
        .context("QUANTRAC_TOKEN must hold an admin token (quantrac token create --role admin)")?;
    // Station ids are letters, digits, `-`, `_` and `.`: nothing to escape in a path.
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        anyhow::bail!("`{}` is not a station id", quantrac::text::escape(id));
    }
    let endpoint = format!(
        "{}/api/v1/stations/{id}/record-counter/reset",
        base.trim_end_matches('/')
    );
    let response = reqwest::Client::new()
        .post(&endpoint)
        .bearer_auth(token.trim())
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        anyhow::bail!("{status}: {}", quantrac::text::escape(message));
    }
    let previous = match &body["previous"] {
        serde_json::Value::Null => "it had no window".to_owned(),
        p => format!(
            "it was at seq {} with {} missing records",
            p["last_seq"], p["missing"]
        ),
    };
    println!(
        "record counter of {} reset ({previous}); its next record starts a new window",
        quantrac::text::escape(id)
    );
    Ok(())
}
