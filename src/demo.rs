//! `quantrac demo`: the whole service plus a simulated fleet of station gateways
//! (`firmware-sim`) in one process, so that a newcomer sees live data with one command.
//!
//! The fleet is the seed stations, publishing through the same broker a real deployment uses
//! (the embedded one by default), in all three encodings, after a backlog of history so that
//! charts and aggregates have data at once. Where the embedded broker's port is taken (a
//! system Mosquitto on 1883, say), the demo moves to a free port and says so.

use std::time::Duration;

use firmware_sim::run::{EncodingChoice, RunOptions};
use firmware_sim::{BrokerOptions, Fleet, SimConfig};
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::config::Config;
use crate::ingest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    App(#[from] app::Error),
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
    #[error("cannot load the simulated fleet: {0}")]
    Fleet(#[from] firmware_sim::fleet::Error),
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

/// Runs the demo until SIGINT/SIGTERM.
pub async fn run(mut config: Config, options: Options) -> Result<(), Error> {
    if config.mqtt.url.is_none() && !ingest::port_is_free(config.mqtt.embedded.listen) {
        let taken = config.mqtt.embedded.listen;
        config.mqtt.embedded.listen = ingest::free_local_addr()?;
        tracing::warn!(%taken, now = %config.mqtt.embedded.listen,
            "the embedded broker's port is taken (another MQTT broker?); using a free port instead");
        println!(
            "note: {taken} is already in use, so the embedded MQTT broker listens on {} instead",
            config.mqtt.embedded.listen
        );
    }
    let fleet = Fleet::load(&config.registry.seeds)?;
    let running = app::start(config).await?;
    let broker_url = running.broker.to_string();
    let api = format!("http://{}/api/v1", running.api_addr);
    println!();
    println!("quantrac demo is running");
    println!("  stations:   {api}/stations");
    println!("  latest:     {api}/stations/DN-AMATA-WW01/latest");
    println!("  readings:   {api}/readings?station=DN-AMATA-AQ01&param=PM2.5&bucket=1h");
    println!("  quarantine: {api}/quarantine");
    println!("  MQTT:       {broker_url} (topics quantrac/v1/...; see docs/telemetry.md)");
    println!("Press Ctrl-C to stop.");
    println!();

    let mut broker = BrokerOptions::new(broker_url, "quantrac-demo-fleet");
    if !running.config().mqtt.topic_prefix.is_empty() {
        broker.topic_prefix = Some(running.config().mqtt.topic_prefix.clone());
    }
    let sim = RunOptions {
        broker,
        seeds: running.config().registry.seeds.clone(),
        stations: options.stations,
        encoding: EncodingChoice::Mixed,
        interval: Some(options.interval),
        backfill: Some(options.backfill).filter(|b| !b.is_zero()),
        duration: None,
        sim: SimConfig {
            seed: options.seed,
            ..SimConfig::default()
        },
    };
    let stop_fleet = CancellationToken::new();
    let fleet_task = tokio::spawn(firmware_sim::run::run(sim, fleet, stop_fleet.clone()));

    let signalled = app::wait_for_stop_signal(&running).await;
    stop_fleet.cancel();
    match fleet_task.await {
        Ok(Ok(report)) => tracing::info!(
            messages = report.messages,
            readings = report.readings,
            "simulated fleet stopped"
        ),
        Ok(Err(e)) => tracing::error!(error = %e, "simulated fleet failed"),
        Err(e) => tracing::error!(error = %e, "simulated fleet task failed"),
    }
    running.stop().await;
    signalled.map_err(Error::Signals)
}
