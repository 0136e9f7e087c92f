//! `firmware-sim`: simulated station gateways on the command line.
//!
//! - `run`: a fleet of gateways publishing live telemetry (optionally after a backfill).
//! - `flood`: as many records as fast as possible, then a JSON throughput report.
//! - `encode`: one encoded sample record on stdout (e.g. for `mosquitto_pub -s`).
//! - `scenario`: one station plays a scenario that triggers one kind of alert rule.
//! - `seeds`: writes a generated seed set of S stations x P parameters (for loads).
//! - `load`: drives a running quantrac at a rate for a duration; prints a JSON report.
//! - `ceiling`: the broker's delivery rate of the same traffic to an idle subscriber.
//! - `connections`: one MQTT connection per station, each publishing its own station;
//!   quantrac's memory with the whole fleet connected.
//! - `open-loop`: N messages as fast as the broker takes them, then counts what quantrac
//!   stored once its count stops moving.
//!
//! Logs go to stderr (`RUST_LOG`, default `info`), so stdout carries only results.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use firmware_sim::{
    play, run, BrokerOptions, Encoding, EncodingChoice, Fleet, RunOptions, RunReport, Scenario,
    SimConfig, Simulator,
};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "firmware-sim",
    version,
    about = "Simulated quantrac station gateways"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish live telemetry of the fleet until stopped (Ctrl-C) or --duration elapses.
    Run(RunArgs),
    /// Publish records as fast as the broker acknowledges them; print a JSON report.
    Flood(FloodArgs),
    /// Write one encoded sample record of a station to stdout.
    Encode(EncodeArgs),
    /// Play a scenario that triggers one kind of alert rule: exceedance, early_warning,
    /// rate_of_change, stuck, device_fault, calibration_overrun, no_data, gateway_offline.
    Scenario(ScenarioArgs),
    /// Write a generated seed set (zones, stations, limits, rules) of S stations x P
    /// parameters, for loads.
    Seeds(SeedsArgs),
    /// Drive a running quantrac through its broker at a rate for a duration; print a JSON
    /// report (stored, throughput, publish-to-store and publish-to-alert latency, CPU, RSS).
    Load(LoadArgs),
    /// Measure the broker's delivery rate of load traffic to a subscriber that does nothing
    /// (the ceiling of quantrac's stored rate); print a JSON report.
    Ceiling(CeilingArgs),
    /// Publish N messages as fast as the broker acknowledges them (never pausing for
    /// quantrac), then wait until quantrac's stored count stops moving; print a JSON report
    /// (acknowledged, stored, drain time, whether every acknowledged reading was stored).
    OpenLoop(OpenLoopArgs),
    /// Open one MQTT connection per station (client id = station id) to quantrac's device
    /// endpoint, each publishing its own station every --interval for --duration; print a
    /// JSON report (quantrac's resident memory connected and at peak, stored).
    Connections(ConnectionsArgs),
    /// Every station sends its stored history, oldest first, as backlog arrays over a few
    /// connections at once (a fleet catching up after an outage); print a JSON report
    /// (readings stored per second, whether every reading was stored).
    Backfill(BackfillArgs),
}

#[derive(Args)]
struct BackfillArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// History per station, in records (60 days of 5-minute records: 17,280).
    #[arg(long, default_value_t = 2_000)]
    records_per_station: u64,
    /// Records per backlog message.
    #[arg(long, default_value_t = 100)]
    per_message: usize,
    /// Time between two records of a station's history.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// MQTT connections sharing the stations (client ids `<client-id>-<k>`).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// quantrac's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// API token (any role).
    #[arg(long, env = "QUANTRAC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How long to wait after the last acknowledgement for quantrac to store everything.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    settle: Duration,
}

#[derive(Args)]
struct ConnectionsArgs {
    /// The endpoint, host:port (plain MQTT, anonymous).
    #[arg(long, default_value = "127.0.0.1:1883")]
    address: String,
    /// Directory holding stations.toml and limits.csv (e.g. written by `seeds`).
    #[arg(long, default_value = "seeds")]
    seeds: PathBuf,
    /// Stations, one connection each (0 = all).
    #[arg(long, default_value_t = 0)]
    stations: usize,
    /// Readings per record.
    #[arg(long, default_value_t = 8)]
    params: usize,
    /// json, bincode or tt10.
    #[arg(long, default_value = "json")]
    encoding: Encoding,
    /// Each device publishes once per interval.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long the devices publish once all are connected.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// quantrac's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// API token (any role).
    #[arg(long, env = "QUANTRAC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How long to wait afterwards for quantrac to store everything.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    settle: Duration,
}

#[derive(Args)]
struct OpenLoopArgs {
    #[command(flatten)]
    traffic: TrafficArgs,
    /// quantrac's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// API token (any role).
    #[arg(long, env = "QUANTRAC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Messages to publish (one record of --params readings each).
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// The drain ends once quantrac's stored count has not moved for this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    still: Duration,
    /// At most this long after publishing ends.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    settle: Duration,
}

#[derive(Args)]
struct SeedsArgs {
    /// Directory to write zones.toml, stations.toml, limits.csv and rules.toml into.
    #[arg(long)]
    out: PathBuf,
    /// Stations.
    #[arg(long, default_value_t = 1000)]
    stations: usize,
    /// Parameters per station (at most 12).
    #[arg(long, default_value_t = 8)]
    params: usize,
    /// Expected reporting interval of every station.
    #[arg(long, default_value = "1m")]
    interval: String,
}

/// Who sends what: the broker, the seed fleet, how many of its stations and parameters,
/// and the encoding (shared by every command that publishes a fleet's records).
#[derive(Args)]
struct FleetArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Directory holding stations.toml and limits.csv (e.g. written by `seeds`).
    #[arg(long, default_value = "seeds")]
    seeds: PathBuf,
    /// Stations to send as (the first of the seed set; 0 = all).
    #[arg(long, default_value_t = 0)]
    stations: usize,
    /// Readings per record (the first parameters of each station).
    #[arg(long, default_value_t = 8)]
    params: usize,
    /// json, bincode or tt10 (backfill: json or bincode; tt10 carries one record per message).
    #[arg(long, default_value = "json")]
    encoding: Encoding,
}

#[derive(Args)]
struct TrafficArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// How long to publish.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    traffic: TrafficArgs,
    /// quantrac's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// API token (any role; `quantrac token create --role viewer --name load`).
    #[arg(long, env = "QUANTRAC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Readings per second (0 = as fast as quantrac stores them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// With --rate 0: most readings published but not yet stored before publishing pauses
    /// (the broker must be able to hold that many for quantrac).
    #[arg(long, default_value_t = 50_000)]
    max_backlog: u64,
    /// How long to wait after publishing for quantrac to store everything.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    settle: Duration,
}

#[derive(Args)]
struct CeilingArgs {
    #[command(flatten)]
    traffic: TrafficArgs,
}

#[derive(Args)]
struct ScenarioArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Which scenario.
    name: Scenario,
    /// Station id.
    #[arg(long)]
    station: String,
    /// Parameter (default: the first with an upper limit; pH for rate_of_change).
    #[arg(long)]
    param: Option<String>,
    /// Directory holding stations.toml and limits.csv.
    #[arg(long, default_value = "seeds")]
    seeds: PathBuf,
    /// Time between steps (the station's expected interval makes it realistic; seconds
    /// make it quick).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Steps of calibration for calibration_overrun, of silence for no_data.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// json, bincode or tt10.
    #[arg(long, default_value = "json")]
    encoding: Encoding,
}

#[derive(Args)]
struct BrokerArgs {
    /// Broker URL: mqtt://host:port or mqtts://host:port.
    #[arg(
        long,
        env = "FIRMWARE_SIM_BROKER",
        default_value = "mqtt://127.0.0.1:1883"
    )]
    broker: String,
    /// MQTT user name.
    #[arg(long, env = "FIRMWARE_SIM_USERNAME")]
    username: Option<String>,
    /// MQTT password.
    #[arg(long, env = "FIRMWARE_SIM_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// PEM file of the CA certificates to trust (mqtts://); default: system roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Prefix before quantrac/v1/... in every topic.
    #[arg(long)]
    topic_prefix: Option<String>,
    /// MQTT client id (default: firmware-sim-<pid>).
    #[arg(long)]
    client_id: Option<String>,
    /// QoS 1 messages in flight.
    #[arg(long, default_value_t = 100)]
    inflight: u16,
}

impl BrokerArgs {
    fn options(self) -> BrokerOptions {
        let client_id = self
            .client_id
            .unwrap_or_else(|| format!("firmware-sim-{}", std::process::id()));
        let mut options = BrokerOptions::new(self.broker, client_id);
        options.username = self.username;
        options.password = self.password;
        options.ca_file = self.ca_file;
        options.topic_prefix = self.topic_prefix;
        options.inflight = self.inflight;
        options
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Directory holding stations.toml and limits.csv.
    #[arg(long, default_value = "seeds")]
    seeds: PathBuf,
    /// Number of stations to simulate, the first of the seed file (0 = all).
    #[arg(long, default_value_t = 0)]
    stations: usize,
    /// json, bincode, tt10 or mixed (each station its own).
    #[arg(long, default_value = "json")]
    encoding: EncodingChoice,
    /// Seed of the signal model.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Reporting interval of every station (default: each station's expected_interval).
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    /// Publish this much history first (e.g. 24h).
    #[arg(long, value_parser = humantime::parse_duration)]
    backfill: Option<Duration>,
    /// Stop after this long (e.g. 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// No pollution episodes above the limits.
    #[arg(long)]
    no_episodes: bool,
    /// No calibration windows (status 01).
    #[arg(long)]
    no_calibrations: bool,
    /// No device faults (status 02).
    #[arg(long)]
    no_faults: bool,
    /// No link dropouts with backlog flushes.
    #[arg(long)]
    no_dropouts: bool,
    /// No duplicate sends.
    #[arg(long)]
    no_duplicates: bool,
}

#[derive(Args)]
struct FloodArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Directory holding stations.toml and limits.csv.
    #[arg(long, default_value = "seeds")]
    seeds: PathBuf,
    /// Records to send, round-robin over the stations.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// json, bincode or tt10.
    #[arg(long, default_value = "json")]
    encoding: Encoding,
    /// Records per message.
    #[arg(long, default_value_t = 1)]
    per_message: usize,
    /// Timestamp of each station's first record, RFC 3339 (default: so that the last
    /// records are stamped about now).
    #[arg(long)]
    start: Option<String>,
}

#[derive(Args)]
struct EncodeArgs {
    /// Station id.
    #[arg(long)]
    station: String,
    /// json, bincode or tt10.
    #[arg(long, default_value = "json")]
    encoding: Encoding,
    /// Directory holding stations.toml and limits.csv.
    #[arg(long, default_value = "seeds")]
    seeds: PathBuf,
    /// Seed of the signal model.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Measurement time, RFC 3339 with an offset (default: now, aligned on the station's
    /// interval).
    #[arg(long)]
    at: Option<String>,
    /// Sign the record with this HMAC key (hex); default: the station's first
    /// `signing_keys` entry in the seeds, if any.
    #[arg(long, value_name = "HEX")]
    key: Option<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Encode(args) => return encode_command(args),
        Command::Seeds(args) => return seeds_command(&args),
        command => command,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        match command {
            Command::Run(args) => run_command(args).await,
            Command::Flood(args) => flood_command(args).await,
            Command::Scenario(args) => scenario_command(args).await,
            Command::Load(args) => load_command(args).await,
            Command::Ceiling(args) => ceiling_command(args).await,
            Command::OpenLoop(args) => open_loop_command(args).await,
            Command::Connections(args) => connections_command(args).await,
            Command::Backfill(args) => backfill_command(args).await,
            Command::Encode(_) | Command::Seeds(_) => Ok(()),
        }
    })
}

async fn backfill_command(args: BackfillArgs) -> anyhow::Result<()> {
    let fleet = load_fleet(&args.fleet.seeds)?;
    if args.fleet.encoding == Encoding::Tt10 {
        bail!("--encoding tt10 carries one record per message; use json or bincode");
    }
    let options = firmware_sim::load::BackfillOptions {
        broker: args.fleet.broker.options(),
        api: args.api,
        token: args.token,
        stations: stations_or_all(args.fleet.stations, &fleet),
        params: args.fleet.params,
        encoding: args.fleet.encoding,
        records_per_station: args.records_per_station,
        per_message: args.per_message,
        interval: args.interval,
        connections: args.connections,
        settle: args.settle,
    };
    let report = firmware_sim::load::backfill(options, &fleet)
        .await
        .context("backfill failed")?;
    print_stored(
        &report,
        report.readings_stored,
        report.readings_published,
        "",
    )
}

async fn open_loop_command(args: OpenLoopArgs) -> anyhow::Result<()> {
    let fleet = load_fleet(&args.traffic.fleet.seeds)?;
    let options = firmware_sim::load::OpenLoopOptions {
        broker: args.traffic.fleet.broker.options(),
        api: args.api,
        token: args.token,
        stations: stations_or_all(args.traffic.fleet.stations, &fleet),
        params: args.traffic.fleet.params,
        encoding: args.traffic.fleet.encoding,
        messages: args.messages,
        still: args.still,
        settle: args.settle,
    };
    let report = firmware_sim::load::open_loop(options, &fleet)
        .await
        .context("open loop failed")?;
    print_stored(
        &report,
        report.readings_stored,
        report.readings_acknowledged,
        "acknowledged ",
    )
}

async fn connections_command(args: ConnectionsArgs) -> anyhow::Result<()> {
    let fleet = load_fleet(&args.seeds)?;
    let options = firmware_sim::load::ConnectionsOptions {
        address: args.address,
        api: args.api,
        token: args.token,
        stations: stations_or_all(args.stations, &fleet),
        params: args.params,
        encoding: args.encoding,
        interval: args.interval,
        duration: args.duration,
        settle: args.settle,
    };
    let report = firmware_sim::load::connections(options, &fleet)
        .await
        .context("connections failed")?;
    println!("{}", serde_json::to_string(&report)?);
    if !report.complete || report.connections_failed > 0 {
        bail!(
            "{} connections failed; quantrac stored {} of {} acknowledged readings",
            report.connections_failed,
            report.readings_stored,
            report.readings_acknowledged
        );
    }
    Ok(())
}

fn load_fleet(seeds: &std::path::Path) -> anyhow::Result<Fleet> {
    Fleet::load(seeds).with_context(|| format!("cannot load the fleet from {}", seeds.display()))
}

async fn run_command(args: RunArgs) -> anyhow::Result<()> {
    let fleet = load_fleet(&args.seeds)?;
    let options = RunOptions {
        broker: args.broker.options(),
        seeds: args.seeds,
        stations: args.stations,
        encoding: args.encoding,
        interval: args.interval,
        backfill: args.backfill,
        duration: args.duration,
        sim: SimConfig {
            seed: args.seed,
            episodes: !args.no_episodes,
            calibrations: !args.no_calibrations,
            faults: !args.no_faults,
            dropouts: !args.no_dropouts,
            duplicates: !args.no_duplicates,
        },
        counters: Default::default(),
    };
    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_signal(cancel.clone()));
    let report = run(options, fleet, cancel)
        .await
        .context("simulation failed")?;
    print_report(&report)
}

async fn flood_command(args: FloodArgs) -> anyhow::Result<()> {
    let fleet = load_fleet(&args.seeds)?;
    let start_ms = match &args.start {
        Some(text) => parse_time(text)?,
        None => {
            let per_station = args.records.div_ceil(fleet.stations.len().max(1) as u64);
            chrono::Utc::now().timestamp_millis() - i64::try_from(per_station)? * 1000
        }
    };
    let report = firmware_sim::flood(
        args.broker.options(),
        &fleet,
        args.encoding,
        args.records,
        args.per_message,
        start_ms,
    )
    .await
    .context("flood failed")?;
    print_report(&report)
}

async fn scenario_command(args: ScenarioArgs) -> anyhow::Result<()> {
    let fleet = load_fleet(&args.seeds)?;
    let Some(station) = fleet.station(&args.station) else {
        bail!("no station {} in {}", args.station, args.seeds.display());
    };
    let param = match &args.param {
        Some(name) => station.parameters.iter().find(|p| &p.name == name),
        None => args.name.default_param(station),
    };
    let Some(param) = param else {
        bail!("station {} has no such parameter", station.id);
    };
    let steps = args.name.steps(param, args.steps);
    tracing::info!(scenario = %args.name, station = %station.id, param = %param.name, steps = steps.len(), "playing");
    let publisher = firmware_sim::Publisher::connect(args.broker.options()).await?;
    let report = play(
        &publisher,
        station,
        param,
        args.encoding,
        &steps,
        args.interval,
    )
    .await
    .context("scenario failed")?;
    publisher.disconnect().await?;
    print_report(&report)
}

fn seeds_command(args: &SeedsArgs) -> anyhow::Result<()> {
    if args.params == 0 || args.params > firmware_sim::fleet::generate::MAX_PARAMS {
        bail!(
            "--params must be from 1 to {}",
            firmware_sim::fleet::generate::MAX_PARAMS
        );
    }
    firmware_sim::fleet::generate::write(&args.out, args.stations, args.params, &args.interval)
        .with_context(|| format!("cannot write seeds into {}", args.out.display()))?;
    eprintln!(
        "wrote {} stations x {} parameters into {}",
        args.stations,
        args.params,
        args.out.display()
    );
    Ok(())
}

async fn load_command(args: LoadArgs) -> anyhow::Result<()> {
    let fleet = load_fleet(&args.traffic.fleet.seeds)?;
    let options = firmware_sim::load::LoadOptions {
        broker: args.traffic.fleet.broker.options(),
        api: args.api,
        token: args.token,
        stations: stations_or_all(args.traffic.fleet.stations, &fleet),
        params: args.traffic.fleet.params,
        rate: args.rate,
        max_backlog: args.max_backlog,
        duration: args.traffic.duration,
        encoding: args.traffic.fleet.encoding,
        settle: args.settle,
    };
    let report = firmware_sim::load::load(options, &fleet)
        .await
        .context("load failed")?;
    print_stored(
        &report,
        report.readings_stored,
        report.readings_published,
        "",
    )
}

async fn ceiling_command(args: CeilingArgs) -> anyhow::Result<()> {
    let fleet = load_fleet(&args.traffic.fleet.seeds)?;
    let report = firmware_sim::load::ceiling(
        args.traffic.fleet.broker.options(),
        &fleet,
        stations_or_all(args.traffic.fleet.stations, &fleet),
        args.traffic.fleet.params,
        args.traffic.fleet.encoding,
        args.traffic.duration,
    )
    .await
    .context("ceiling measurement failed")?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Prints `report` as JSON, then fails unless quantrac stored all `expected` readings.
fn print_stored(
    report: &impl serde::Serialize,
    stored: u64,
    expected: u64,
    kind: &str,
) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    if stored < expected {
        bail!("quantrac stored {stored} of {expected} {kind}readings");
    }
    Ok(())
}

fn stations_or_all(stations: usize, fleet: &Fleet) -> usize {
    if stations == 0 {
        fleet.stations.len()
    } else {
        stations
    }
}

fn encode_command(args: EncodeArgs) -> anyhow::Result<()> {
    let fleet = load_fleet(&args.seeds)?;
    let Some(index) = fleet.stations.iter().position(|s| s.id == args.station) else {
        bail!("no station {} in {}", args.station, args.seeds.display());
    };
    let interval = i64::try_from(fleet.stations[index].expected_interval.as_millis())?.max(1);
    let ts_ms = match &args.at {
        Some(text) => parse_time(text)?,
        None => {
            let now = chrono::Utc::now().timestamp_millis();
            now - now.rem_euclid(interval)
        }
    };
    // Simulate up to the station so that its index is the fleet's.
    let sim = Simulator::new(
        &fleet,
        index + 1,
        SimConfig {
            seed: args.seed,
            ..SimConfig::default()
        },
    );
    let mut record = sim.sample(index, ts_ms);
    // Numbered like the live records: the index of the interval since the epoch.
    record.seq = u64::try_from(ts_ms.div_euclid(interval)).ok();
    let mut stdout = std::io::stdout().lock();
    let key = match &args.key {
        Some(text) => Some(
            firmware_sim::sign::key_from_hex(text)
                .ok_or_else(|| anyhow::anyhow!("--key must be hex"))?,
        ),
        None => fleet.stations[index].signing_key.clone(),
    };
    stdout.write_all(&firmware_sim::encode::encode_signed(
        &[record],
        args.encoding,
        key.as_deref(),
    ))?;
    stdout.flush()?;
    Ok(())
}

fn parse_time(text: &str) -> anyhow::Result<i64> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("`{text}` is not an RFC 3339 time with an offset"))?;
    Ok(time.timestamp_millis())
}

fn print_report(report: &RunReport) -> anyhow::Result<()> {
    let json = serde_json::json!({
        "records": report.records,
        "readings": report.readings,
        "messages": report.messages,
        "elapsed_s": report.elapsed.as_secs_f64(),
        "records_per_s": report.records_per_s(),
    });
    println!("{json}");
    Ok(())
}

/// Cancels on Ctrl-C or SIGTERM.
async fn cancel_on_signal(cancel: CancellationToken) {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    cancel.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stop requested");
    cancel.cancel();
}
