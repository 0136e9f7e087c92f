//! `quantrac demo`: the whole service plus a simulated fleet of station gateways
//! (`firmware-sim`) in one process, so that a newcomer sees live data with one command.
//!
//! The fleet is the seed stations, publishing through the same broker a real deployment uses
//! (quantrac's own endpoint by default), in all three encodings, after a backlog of history so that
//! charts and aggregates have data at once. Where the endpoint's port is taken (a
//! system Mosquitto on 1883, say), the demo moves to a free port and says so.

use std::net::SocketAddr;
use std::time::Duration;

use firmware_sim::run::{EncodingChoice, RunOptions, RunReport};
use firmware_sim::{BrokerOptions, Fleet, SimConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::config::Config;
use crate::mqtt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    App(#[from] app::Error),
    #[error(transparent)]
    Mqtt(#[from] mqtt::Error),
    #[error("cannot load the simulated fleet: {0}")]
    Fleet(#[from] firmware_sim::fleet::Error),
    #[error("cannot create the demo's admin token: {0}")]
    Token(#[from] crate::security::Error),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seed stations to simulate (0 = all).
    pub stations: usize,
    /// Reporting interval of every simulated station.
    pub interval: Duration,
    /// History published first, as backlog flushes.
    pub backfill: Duration,
    /// Simulation seed.
    pub seed: u64,
}

/// A running demo: the service and its simulated fleet.
pub struct Demo {
    pub running: app::Running,
    /// `(configured, used)` when the MQTT endpoint had to move off a taken port.
    pub broker_moved: Option<(SocketAddr, SocketAddr)>,
    stop_fleet: CancellationToken,
    fleet: JoinHandle<Result<RunReport, firmware_sim::run::Error>>,
}

/// Starts the service and the simulated fleet.
pub async fn start(mut config: Config, options: Options) -> Result<Demo, Error> {
    let mut broker_moved = None;
    if config.mqtt.url.is_none() && !mqtt::port_is_free(config.mqtt.endpoint.listen) {
        let taken = config.mqtt.endpoint.listen;
        config.mqtt.endpoint.listen = mqtt::free_local_addr()?;
        tracing::warn!(%taken, now = %config.mqtt.endpoint.listen,
            "the MQTT endpoint's port is taken (another MQTT broker?); using a free port instead");
        broker_moved = Some((taken, config.mqtt.endpoint.listen));
    }
    // The simulated fleet connects without credentials: the demo's endpoint allows it, and
    // says so (a deployment gives each gateway its own in devices.toml).
    config.mqtt.endpoint.allow_anonymous = true;
    // The Circular 10 FTP endpoint too, on a free loopback port unless configured.
    if !config.ftp.enabled {
        config.ftp.enabled = true;
        config.ftp.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    }
    let fleet = Fleet::load(&config.registry.seeds)?;
    let running = app::start(config).await?;
    running.wait_ready().await;

    let mut broker = BrokerOptions::new(running.broker.to_string(), "quantrac-demo-fleet");
    if !running.config().mqtt.topic_prefix.is_empty() {
        broker.topic_prefix = Some(running.config().mqtt.topic_prefix.clone());
    }
    let (backfill, counters) = since_last_run(&*running.store(), options.backfill).await;
    let sim = RunOptions {
        broker,
        seeds: running.config().registry.seeds.clone(),
        stations: options.stations,
        encoding: EncodingChoice::Mixed,
        interval: Some(options.interval),
        backfill: Some(backfill).filter(|b| !b.is_zero()),
        duration: None,
        sim: SimConfig {
            seed: options.seed,
            ..SimConfig::default()
        },
        counters,
    };
    let stop_fleet = CancellationToken::new();
    let fleet = tokio::spawn(firmware_sim::run::run(sim, fleet, stop_fleet.clone()));
    Ok(Demo {
        running,
        broker_moved,
        stop_fleet,
        fleet,
    })
}

/// Where the fleet takes up after an earlier demo on the same data directory: the history it
/// publishes first (`wanted`, or only the time since the store's newest arrival) and each
/// station's next record counter (one above the highest the store kept). A gateway never
/// sends acknowledged records again, and keeps its counter across restarts; were the fleet
/// not to, quantrac would refuse its history as replays and count a jump as missing records.
async fn since_last_run(
    store: &dyn crate::storage::Store,
    wanted: Duration,
) -> (Duration, std::collections::HashMap<String, u64>) {
    let rows = match store.presence().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read presence: full backfill, counters afresh");
            Vec::new()
        }
    };
    let counters = rows
        .iter()
        .filter_map(|p| Some((p.station.clone(), p.record_window?.highest.checked_add(1)?)))
        .collect();
    let Some(newest) = rows.iter().filter_map(|p| p.last_seen).max() else {
        return (wanted, counters);
    };
    let since = crate::telemetry::Timestamp::now().as_millis() - newest.as_millis();
    let since = Duration::from_millis(u64::try_from(since).unwrap_or(0));
    if since < wanted {
        tracing::info!(backfill = ?since, "the store holds an earlier demo's data: backfilling only the time since");
    }
    (since.min(wanted), counters)
}

impl Demo {
    /// Stops the fleet (it says `offline` for each station), then the service, in order.
    pub async fn stop(self) {
        self.stop_fleet.cancel();
        match self.fleet.await {
            Ok(Ok(report)) => tracing::info!(
                messages = report.messages,
                readings = report.readings,
                "simulated fleet stopped"
            ),
            Ok(Err(e)) => tracing::error!(error = %e, "simulated fleet failed"),
            Err(e) => tracing::error!(error = %e, "simulated fleet task failed"),
        }
        self.running.stop().await;
    }
}

/// Runs the demo until SIGINT/SIGTERM, telling the user where to look.
pub async fn run(config: Config, options: Options) -> Result<(), Error> {
    let demo = start(config, options).await?;
    let scheme = if demo.running.config().api.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let api = format!("{scheme}://{}/api/v1", demo.running.api_addr);
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown user".into());
    let (token, info) = demo.running.security().create_token(
        "demo admin",
        crate::security::Role::Admin,
        &format!("demo ({user})"),
        None,
    )?;
    println!();
    if let Some((taken, used)) = demo.broker_moved {
        println!("note: {taken} is already in use, so quantrac's MQTT endpoint listens on {used} instead");
    }
    println!("quantrac demo is running");
    println!(
        "  API token (admin, generated for this run; revoke with `quantrac token revoke {}`):",
        info.id
    );
    println!("              {token}");
    println!("  try:        curl -H \"Authorization: Bearer {token}\" {api}/stations");
    println!("  stations:   {api}/stations");
    println!("  latest:     {api}/stations/DN-AMATA-WW01/latest");
    println!("  readings:   {api}/readings?station=DN-AMATA-AQ01&param=PM2.5&bucket=1h");
    println!("  quarantine: {api}/quarantine");
    println!(
        "  MQTT:       {} (topics quantrac/v1/...; see docs/telemetry.md)",
        demo.running.broker
    );
    if let Some(ftp) = demo.running.ftp_addr {
        println!(
            "  FTP:        ftp://{ftp}/ (Circular 10 files, logins from devices.toml: `quantrac device add`; see docs/telemetry.md)"
        );
    }
    println!("Press Ctrl-C to stop.");
    println!();
    let signalled = app::wait_for_stop_signal(&demo.running).await;
    demo.stop().await;
    signalled.map_err(Error::Signals)
}
