//! Wiring: builds every part from a [`Config`], starts them, and stops them in order.
//!
//! Start: registry and rules, store (live state and the alert engine restored from it),
//! notifiers, API listener, the monitor (the alert engine's clock), then the ways data comes
//! in: quantrac's own device endpoint ([`crate::endpoint`]) or ingest from the configured
//! external broker ([`crate::ingest`]), and the FTP endpoint and watched directory if enabled
//! ([`crate::ftp`]). Stop ([`Running::stop`]): the file sources first (no new upload; files in
//! flight made durable and answered), then the MQTT source (it stops taking messages,
//! acknowledges and announces what became durable), then the
//! monitor (a last snapshot of rule state), then the notifiers (they send what is queued),
//! then the store (commits what is queued), then the API. Each part takes its shutdown as a
//! parameter (`CancellationToken`), so the order lives here and nowhere else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alerts::{self, Engine, EngineConfig, RuleBook};
use crate::api::{self, ApiState};
use crate::config::{Backend, BrokerAddress, Config};
use crate::endpoint::Endpoint;
use crate::ingest::{self, IngestStatus};
use crate::live::{LatestValue, Live};
use crate::monitor::Monitor;
use crate::mqtt;
use crate::notify::{self, Notifier};
use crate::pipeline::{Pipeline, SharedRegistry, SharedSequences};
use crate::quarantine::Counters;
use crate::registry::Registry;
use crate::security::sequence::Sequences;
use crate::security::SecurityDb;
use crate::shutdown::{Report, Sequence};
use crate::storage::questdb::QuestDbStore;
use crate::storage::sqlite::{SqliteConfig, SqliteStore};
use crate::storage::{self, Store};
use crate::telemetry::Timestamp;
use crate::validate::Rules;

/// How long each shutdown step may take before it is abandoned (five steps: a shutdown takes
/// at most a minute and a half, and normally well under a second).
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// How often readings older than the retention period are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    #[error(transparent)]
    Rules(#[from] alerts::rules::Error),
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error(transparent)]
    Mqtt(#[from] mqtt::Error),
    #[error(transparent)]
    Endpoint(#[from] crate::endpoint::Error),
    #[error("mqtt.url: {0}")]
    BrokerUrl(#[from] crate::config::UrlError),
    #[error("cannot build the webhook client: {0}")]
    Webhooks(#[from] reqwest::Error),
    #[error(transparent)]
    Security(#[from] crate::security::Error),
    #[error("api.tls: {0}")]
    Tls(#[from] crate::security::tls::TlsError),
    #[error(transparent)]
    Ftp(#[from] crate::ftp::Error),
    #[error(transparent)]
    Aqi(#[from] crate::aqi::table::Error),
    #[error("{path} is in use by another quantrac (one data directory, one quantrac: a second one would bypass replay protection and overwrite values); stop it, or give this one another storage.path")]
    DataDirInUse { path: String },
    #[error("cannot lock the data directory {path}: {source}")]
    DataDirLock {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen for the API on {addr}: {source}")]
    ApiListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Reload failure: the registry or the rules.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    #[error(transparent)]
    Rules(#[from] alerts::rules::Error),
    #[error(transparent)]
    Devices(#[from] mqtt::devices::Error),
}

/// A started quantrac.
pub struct Running {
    /// Where the API listens (useful when configured with port 0).
    pub api_addr: SocketAddr,
    /// Where devices publish: quantrac's own endpoint, or the configured broker.
    pub broker: BrokerAddress,
    /// Where the FTP endpoint listens, when enabled.
    pub ftp_addr: Option<SocketAddr>,
    pub registry: SharedRegistry,
    config: Config,
    store: Arc<dyn Store>,
    monitor: Arc<Monitor>,
    /// quantrac's own device endpoint (when no external broker is configured); its device
    /// list reloads with the seeds.
    endpoint: Option<Arc<Endpoint>>,
    /// The FTP endpoint and the watched directory, when enabled.
    files: Files,
    security: SecurityDb,
    ingest_status: Arc<IngestStatus>,
    ingest_stop: CancellationToken,
    /// Ingest from the external broker, if one is configured.
    ingest: Option<JoinHandle<Result<(), ingest::Error>>>,
    monitor_stop: CancellationToken,
    monitor_task: JoinHandle<()>,
    notifiers_stop: CancellationToken,
    notifier_tasks: Vec<JoinHandle<()>>,
    api_stop: CancellationToken,
    api: JoinHandle<std::io::Result<()>>,
    housekeeping: JoinHandle<()>,
    /// Held until the process ends: one quantrac per data directory.
    _data_lock: std::fs::File,
}

fn engine_config(config: &Config) -> EngineConfig {
    let a = &config.alerts;
    EngineConfig {
        lateness: a.lateness,
        backfill_after: a.backfill_after,
        reminder: Some(a.reminder).filter(|r| !r.is_zero()),
    }
}

/// Builds the notifiers: the event stream always (the device endpoint's alert subscribers
/// read it too), MQTT on the external broker and webhooks as configured.
fn start_notifiers(
    config: &Config,
    external: Option<&BrokerAddress>,
    stop: &CancellationToken,
) -> Result<(Notifier, Vec<JoinHandle<()>>), Error> {
    let a = &config.alerts;
    let offset = config.api.utc_offset;
    let mut tasks = Vec::new();
    let mqtt = if let (true, Some(broker)) = (a.publish_mqtt, external) {
        let (tx, task) = notify::mqtt::spawn(
            broker,
            &config.mqtt,
            a.mqtt_queue_capacity,
            offset,
            stop.clone(),
        )?;
        tasks.push(task);
        Some(tx)
    } else {
        None
    };
    let mut routes = Vec::new();
    if !a.webhooks.is_empty() {
        let http = notify::webhook::client(a.delivery.timeout)?;
        for hook in &a.webhooks {
            let (route, task) = notify::webhook::spawn(
                hook.clone(),
                &a.delivery,
                http.clone(),
                offset,
                stop.clone(),
            );
            routes.push(route);
            tasks.push(task);
        }
    }
    Ok((Notifier::new(a.stream_buffer, mqtt, routes, offset), tasks))
}

/// Takes an exclusive lock on `<dir>/quantrac.lock` for as long as the returned file is
/// open (the OS releases it when the process ends, however it ends).
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, Error> {
    let path = dir.join("quantrac.lock");
    let failed = |source| Error::DataDirLock {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::DataDirInUse {
            path: dir.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
    }
}

/// Extra wiring for tests and tools.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Make the store's commits fail while this switch is on (fault tests).
    pub store_faults: Option<crate::storage::faults::FaultSwitch>,
}

/// Starts everything described by `config`.
pub async fn start(config: Config) -> Result<Running, Error> {
    start_with(config, Options::default()).await
}

/// As [`start`], with extra wiring.
pub async fn start_with(config: Config, options: Options) -> Result<Running, Error> {
    // Install the recorder first, so that everything below is measured.
    let _ = crate::metrics::prometheus();
    let data_lock = lock_data_dir(&config.storage.path)?;
    let descriptors = api::streams::open_file_limit();
    if let Some(warning) = api::streams::headroom_warning(descriptors, config.api.max_streams) {
        tracing::warn!("{warning}");
    }
    let registry = Registry::load(&config.registry.seeds)?;
    let book = RuleBook::load(&config.registry.seeds)?;
    tracing::info!(seeds = %config.registry.seeds.display(), "registry loaded: {}; {} declared alert rules", registry.summary(), book.rules.len());
    let registry: SharedRegistry = Arc::new(ArcSwap::from_pointee(registry));

    let store: Arc<dyn Store> = match config.storage.backend {
        Backend::Sqlite => {
            let store = SqliteStore::open_with(
                SqliteConfig::from_config(&config.storage, &config.quarantine),
                options.store_faults.as_ref(),
            )?;
            tracing::info!(path = %config.storage.path.display(), "embedded store open");
            Arc::new(store)
        }
        Backend::Questdb => {
            let store = QuestDbStore::open(
                &config.storage.questdb,
                SqliteConfig::from_config(&config.storage, &config.quarantine),
                config.storage.retention,
                options.store_faults.as_ref(),
            )
            .await?;
            tracing::info!(ilp = %config.storage.questdb.http, state = %config.storage.path.display(), "QuestDB store open");
            Arc::new(store)
        }
    };
    let live = Live::new();
    let sequences: SharedSequences =
        Arc::new(Mutex::new(restore_live(&*store, &live, &registry).await?));
    let engine = restore_engine(&config, &*store, registry.load_full(), Arc::new(book)).await?;

    let external = match &config.mqtt.url {
        Some(url) => Some(BrokerAddress::parse(url)?),
        None => None,
    };
    let devices =
        mqtt::devices::Devices::load(&config.registry.seeds).map_err(mqtt::Error::from)?;

    let security = SecurityDb::open_checked(
        &config.security_db(),
        config.storage.integrity_check_timeout,
    )?;
    let tls = match &config.api.tls {
        Some(files) => Some(crate::security::tls::server_config(
            &files.cert,
            &files.key,
            &[b"h2", b"http/1.1"],
        )?),
        None => None,
    };
    let (listener, api_addr) = listen(config.api.listen).await?;
    let metrics_listener = match config.api.metrics_listen {
        Some(addr) => Some(listen(addr).await?),
        None => None,
    };

    let notifiers_stop = CancellationToken::new();
    let (notifier, notifier_tasks) = start_notifiers(&config, external.as_ref(), &notifiers_stop)?;
    let notifier = Arc::new(notifier);
    let monitor = Arc::new(Monitor::new(
        engine.clone(),
        store.clone(),
        notifier.clone(),
    ));
    let monitor_stop = CancellationToken::new();
    let monitor_task = tokio::spawn(monitor.clone().run(
        config.alerts.tick,
        config.alerts.snapshot_interval,
        monitor_stop.clone(),
    ));

    let counters = Counters::new();
    let ingest_status = Arc::new(IngestStatus::default());
    let air = Arc::new(crate::aqi::live::LiveAqi::new(
        Arc::new(crate::aqi::Table::load(&config.registry.seeds)?),
        config.api.report_coverage,
        i64::from(config.api.utc_offset.local_minus_utc()) * 1000,
    ));
    warm_air(&*store, &air, &live, &registry).await;
    let pipeline = Arc::new(
        Pipeline::new(
            registry.clone(),
            engine,
            Rules {
                max_future: config.validation.max_future,
                max_age: config.storage.retention,
            },
            config.mqtt.topic_prefix.clone(),
            config.quarantine.excerpt_bytes,
            live.clone(),
            counters.clone(),
            sequences.clone(),
        )
        .with_air_quality(air.clone()),
    );
    let files = start_files(&config, &pipeline, &store, &notifier, &registry, &counters).await?;
    let ingest_stop = CancellationToken::new();
    let (broker, endpoint, ingest) = match external {
        Some(address) => {
            let ingest = tokio::spawn(ingest::run(
                ingest::Settings {
                    address: address.clone(),
                    mqtt: config.mqtt.clone(),
                },
                pipeline,
                store.clone(),
                notifier,
                ingest_status.clone(),
                ingest_stop.clone(),
            ));
            (address, None, Some(ingest))
        }
        None => {
            let endpoint = Endpoint::start(
                &config.mqtt.endpoint,
                crate::endpoint::Shared {
                    pipeline,
                    store: store.clone(),
                    notifier,
                    devices: ArcSwap::from_pointee(devices),
                    security: security.clone(),
                    sessions: Default::default(),
                    settings: crate::endpoint::Settings::from_config(&config.mqtt),
                    status: ingest_status.clone(),
                    stop: CancellationToken::new(),
                },
                config.mqtt.endpoint.listen,
            )
            .await?;
            let address = BrokerAddress {
                tls: false,
                host: endpoint.listen.ip().to_string(),
                port: endpoint.listen.port(),
            };
            (address, Some(Arc::new(endpoint)), None)
        }
    };

    let api_stop = CancellationToken::new();
    let state = ApiState {
        registry: registry.clone(),
        store: store.clone(),
        live,
        counters,
        ingest: ingest_status.clone(),
        monitor: monitor.clone(),
        config: Arc::new(config.api.clone()),
        offline_after: config.stations.offline_after,
        ingest_stall_after: config.mqtt.stall_after,
        sequences,
        guard: Arc::new(api::auth::Guard::new(
            security.clone(),
            config.security.auth_failure_burst,
            config.security.auth_failure_window,
        )),
        online: Arc::default(),
        aqi: air,
        streams: api::streams::StreamLimits::new(
            config.api.max_streams_per_token,
            config.api.max_streams,
        ),
        reload: reloader(
            &config,
            &registry,
            &monitor,
            endpoint.clone(),
            files.devices.clone(),
        ),
    };
    let max_head = config.api.max_header_bytes;
    if let Some((listener, addr)) = metrics_listener {
        let router = api::metrics_router(state.clone());
        tokio::spawn(api::serve(
            listener,
            None,
            router,
            max_head,
            api_stop.clone(),
        ));
        tracing::info!(%addr, "metrics listening (no token needed)");
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let router = api::router(state);
    let api = tokio::spawn(api::serve(
        listener,
        tls,
        router,
        max_head,
        api_stop.clone(),
    ));
    tracing::info!(%api_addr, scheme, "API listening");

    let housekeeping = tokio::spawn(prune_periodically(
        store.clone(),
        config.storage.retention,
        ingest_stop.clone(),
    ));

    Ok(Running {
        api_addr,
        broker,
        ftp_addr: files.ftp.as_ref().map(|f| f.addr),
        registry,
        config,
        store,
        monitor,
        endpoint,
        files,
        security,
        ingest_status,
        ingest_stop,
        ingest,
        monitor_stop,
        monitor_task,
        notifiers_stop,
        notifier_tasks,
        api_stop,
        api,
        housekeeping,
        _data_lock: data_lock,
    })
}

/// The Circular 10 file sources: the FTP endpoint and the watched directory.
#[derive(Default)]
struct Files {
    ftp: Option<crate::ftp::FtpServer>,
    watch: Option<(CancellationToken, JoinHandle<Result<(), crate::ftp::Error>>)>,
    intake: Option<Arc<crate::ftp::Intake>>,
    /// The FTP endpoint's device list (reloaded with the seeds).
    devices: Option<crate::ftp::SharedDevices>,
}

impl Files {
    fn is_running(&self) -> bool {
        self.ftp.is_some() || self.watch.is_some()
    }

    /// No new session or file; files in flight made durable and answered.
    async fn stop(self) -> Result<(), String> {
        if let Some((stop, _)) = &self.watch {
            stop.cancel();
        }
        if let Some(ftp) = self.ftp {
            ftp.stop().await?;
        }
        if let Some(intake) = &self.intake {
            intake.close().await;
        }
        if let Some((_, task)) = self.watch {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

/// Starts the FTP endpoint and the watched directory, as configured.
async fn start_files(
    config: &Config,
    pipeline: &Arc<Pipeline>,
    store: &Arc<dyn Store>,
    notifier: &Arc<Notifier>,
    registry: &SharedRegistry,
    counters: &Arc<Counters>,
) -> Result<Files, Error> {
    if !config.ftp.enabled && !config.ingest_dir.enabled {
        return Ok(Files::default());
    }
    let devices =
        mqtt::devices::Devices::load(&config.registry.seeds).map_err(mqtt::Error::from)?;
    let devices: crate::ftp::SharedDevices = Arc::new(ArcSwap::from_pointee(devices));
    let intake = Arc::new(crate::ftp::Intake::new(
        pipeline.clone(),
        store.clone(),
        notifier.clone(),
        registry.clone(),
        devices.clone(),
        counters.clone(),
        config.mqtt.topic_prefix.clone(),
    ));
    let ftp = match config.ftp.enabled {
        true => Some(crate::ftp::server::start(&config.ftp, intake.clone()).await?),
        false => None,
    };
    let watch = config.ingest_dir.enabled.then(|| {
        let stop = CancellationToken::new();
        let task = tokio::spawn(crate::ftp::watch::run(
            config.ingest_dir.clone(),
            intake.clone(),
            stop.clone(),
        ));
        (stop, task)
    });
    Ok(Files {
        ftp,
        watch,
        intake: Some(intake),
        devices: config.ftp.enabled.then_some(devices),
    })
}

async fn listen(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), Error> {
    let failed = |source| Error::ApiListen { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local))
}

/// Re-reads the seeds: stations, limits and rules, and (on the device endpoint) the devices.
/// Everything is parsed before anything changes, so a bad file changes nothing.
fn reload(
    seeds: &std::path::Path,
    registry: &SharedRegistry,
    monitor: &Monitor,
    endpoint: Option<&Endpoint>,
    ftp_devices: Option<&crate::ftp::SharedDevices>,
) -> Result<String, ReloadError> {
    let fresh = Arc::new(Registry::load(seeds)?);
    let book = RuleBook::load(seeds)?;
    let devices = match (endpoint, ftp_devices) {
        (None, None) => None,
        _ => Some(mqtt::devices::Devices::load(seeds)?),
    };
    let mut summary = format!(
        "{}; {} declared alert rules",
        fresh.summary(),
        book.rules.len()
    );
    if let Some(devices) = devices {
        summary.push_str(&format!("; {} devices", devices.len()));
        let devices = Arc::new(devices);
        if let Some(endpoint) = endpoint {
            endpoint.reload_devices(devices.clone());
        }
        if let Some(ftp) = ftp_devices {
            ftp.store(devices);
        }
    }
    registry.store(fresh.clone());
    monitor
        .engine()
        .lock()
        .reconfigure(fresh, Arc::new(book), Timestamp::now());
    Ok(summary)
}

fn reloader(
    config: &Config,
    registry: &SharedRegistry,
    monitor: &Arc<Monitor>,
    endpoint: Option<Arc<Endpoint>>,
    ftp_devices: Option<crate::ftp::SharedDevices>,
) -> api::Reload {
    let seeds = config.registry.seeds.clone();
    let registry = registry.clone();
    let monitor = monitor.clone();
    Arc::new(move || {
        reload(
            &seeds,
            &registry,
            &monitor,
            endpoint.as_deref(),
            ftp_devices.as_ref(),
        )
        .map_err(|e| e.to_string())
    })
}

/// The alert engine with the active alerts and rule state the store kept.
async fn restore_engine(
    config: &Config,
    store: &dyn Store,
    registry: Arc<Registry>,
    book: Arc<RuleBook>,
) -> Result<Arc<Mutex<Engine>>, Error> {
    let mut engine = Engine::new(engine_config(config), registry, book, Timestamp::now());
    let active = store.active_alerts().await?;
    let states = store.rule_states().await?;
    let next_id = store.max_alert_id().await? + 1;
    let restored = active.len();
    for problem in engine.restore(active, states, next_id) {
        tracing::warn!("{problem}");
    }
    tracing::info!(active_alerts = restored, "alert engine restored");
    Ok(Arc::new(Mutex::new(engine)))
}

/// Warms live state from what the store kept, so "latest" and presence survive restarts;
/// returns the stations' record counters, so that replays are refused across restarts too.
async fn restore_live(
    store: &dyn Store,
    live: &Live,
    registry: &SharedRegistry,
) -> Result<Sequences, Error> {
    let registry = registry.load();
    let mut latest = store.latest().await?;
    latest.sort_by(|a, b| a.station.cmp(&b.station));
    let mut windows = Vec::new();
    for row in store.presence().await? {
        let station: Arc<str> = row.station.as_str().into();
        if let Some(window) = row.record_window {
            windows.push((station.clone(), window));
        }
        live.restore(station, row.last_seen, row.gateway, []);
    }
    tracing::info!(stations = windows.len(), "record counters restored");
    for group in latest.chunk_by(|a, b| a.station == b.station) {
        let station: Arc<str> = match registry.station(&group[0].station) {
            Some(s) => s.id.clone(),
            None => group[0].station.as_str().into(),
        };
        let values = group.iter().map(|row| LatestValue {
            param: row.param.as_str().into(),
            ts: row.ts,
            value: row.value,
            status: row.status,
        });
        live.restore(station, None, None, values);
    }
    Ok(Sequences::restore(windows))
}

/// Warms each ambient station's current air quality index from the store: its valid readings
/// of the 12 hours up to its newest one (as live state knows it, restored just before).
/// A store that cannot answer leaves the index to fill as data arrives (logged, not fatal).
async fn warm_air(
    store: &dyn Store,
    air: &crate::aqi::live::LiveAqi,
    live: &Live,
    registry: &SharedRegistry,
) {
    const HOUR: i64 = 3_600_000;
    let registry = registry.load();
    let mut warmed = 0;
    for station in registry.stations() {
        if station.kind != crate::registry::StationKind::Ambient {
            continue;
        }
        let pollutants: Vec<(crate::aqi::Pollutant, String)> = station
            .parameters
            .iter()
            .filter_map(|p| {
                crate::aqi::Pollutant::of_param(&p.name).map(|q| (q, p.name.to_string()))
            })
            .collect();
        let newest = live.station(&station.id).and_then(|l| {
            l.latest
                .iter()
                .filter(|v| pollutants.iter().any(|(_, name)| *name == *v.param))
                .map(|v| v.ts.as_millis())
                .max()
        });
        let (Some(newest), false) = (newest, pollutants.is_empty()) else {
            continue;
        };
        let shifted = newest + air.offset_ms();
        let end = shifted - shifted.rem_euclid(HOUR) - air.offset_ms() + HOUR;
        let mut readings = Vec::new();
        for (pollutant, name) in &pollutants {
            let mut query = crate::storage::RawQuery {
                station: station.id.to_string(),
                params: vec![name.clone()],
                from: Timestamp::from_millis(end - 12 * HOUR),
                to: Timestamp::from_millis(end),
                after: None,
                limit: 10_000,
                status: Some(crate::telemetry::Status::Measuring),
            };
            loop {
                match store.readings(query.clone()).await {
                    Ok(page) => {
                        readings.extend(
                            page.readings
                                .iter()
                                .map(|r| (*pollutant, r.ts.as_millis(), r.value)),
                        );
                        match (page.has_more, page.readings.last()) {
                            (true, Some(last)) => query.after = Some((last.ts, last.param.clone())),
                            _ => break,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(station = %station.id, error = %e, "cannot warm the air quality index; it fills as data arrives");
                        break;
                    }
                }
            }
        }
        if let Some(current) = air.restore(&registry, &station.id, &readings) {
            metrics::gauge!(crate::metrics::AQI, crate::metrics::LABEL_STATION => station.id.to_string())
                .set(f64::from(current.index.aqi));
            warmed += 1;
        }
    }
    tracing::info!(stations = warmed, "air quality index restored");
}

async fn prune_periodically(store: Arc<dyn Store>, retention: Duration, stop: CancellationToken) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {
                let cutoff = Timestamp::now().saturating_sub(retention);
                match store.prune(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "readings older than the retention period deleted"),
                    Err(e) => tracing::warn!(error = %e, "retention pruning failed"),
                }
            }
        }
    }
}

impl Running {
    /// Ingest progress: messages fully handled since start.
    pub fn processed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ingest_status.processed()
    }

    /// Resolves once `n` messages have been fully handled (durable and acknowledged).
    pub async fn wait_processed(&self, n: u64) {
        let mut rx = self.processed();
        // The sender lives in `self`, so this only ends when the count is reached.
        let _ = rx.wait_for(|&done| done >= n).await;
    }

    /// Ingest's connection state and counters.
    pub fn ingest(&self) -> &IngestStatus {
        &self.ingest_status
    }

    /// Whether ingest is connected and subscribed.
    pub fn is_ready(&self) -> bool {
        self.ingest_status.is_ready()
    }

    /// Resolves once quantrac takes data: ingest connected and subscribed, or the device
    /// endpoint listening.
    pub async fn wait_ready(&self) {
        let mut rx = self.ingest_status.readiness();
        let _ = rx.wait_for(|&ready| ready).await;
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Re-reads the seed files (registry, alert rules, devices) and swaps them in (SIGHUP).
    /// On any error, what is in use stays.
    pub fn reload_registry(&self) -> Result<String, ReloadError> {
        reload(
            &self.config.registry.seeds,
            &self.registry,
            &self.monitor,
            self.endpoint.as_deref(),
            self.files.devices.as_ref(),
        )
    }

    /// Tokens and the audit log.
    pub fn security(&self) -> &SecurityDb {
        &self.security
    }

    /// The monitor: the alert engine, acknowledgements, notifications.
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.monitor
    }

    /// Ordered shutdown, each step bounded in time: the device endpoint or ingest (stop
    /// taking messages, acknowledge what is durable), the monitor (last snapshot of alert rule state), the
    /// notifiers (send what is queued), the store (commit or spool what is queued), the API.
    pub async fn stop(self) -> Report {
        let mut s = Sequence::new(STEP_TIMEOUT);
        if self.files.is_running() {
            s.step(
                "files",
                "stopping the FTP endpoint and the watched directory (files in flight made durable)",
                self.files.stop(),
            )
            .await;
        }
        let ingest_stop = self.ingest_stop.clone();
        match (&self.endpoint, self.ingest) {
            (Some(endpoint), _) => {
                s.step(
                    "endpoint",
                    "closing the device endpoint (acknowledging what is durable)",
                    async {
                        ingest_stop.cancel();
                        endpoint.stop().await;
                        self.housekeeping.await.map_err(|e| e.to_string())
                    },
                )
                .await;
            }
            (None, ingest) => {
                s.step(
                    "ingest",
                    "stopping ingest (draining received messages)",
                    async {
                        ingest_stop.cancel();
                        let _ = self.housekeeping.await;
                        match ingest {
                            None => Ok(()),
                            Some(ingest) => match ingest.await {
                                Ok(Ok(())) => Ok(()),
                                Ok(Err(e)) => Err(e.to_string()),
                                Err(e) => Err(e.to_string()),
                            },
                        }
                    },
                )
                .await;
            }
        }
        s.step("monitor", "saving the alert engine's state", async {
            self.monitor_stop.cancel();
            self.monitor_task.await.map_err(|e| e.to_string())
        })
        .await;
        s.step("notifiers", "sending queued notifications", async {
            self.monitor.notifier().close();
            self.notifiers_stop.cancel();
            for task in self.notifier_tasks {
                task.await.map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .await;
        s.step("store", "closing the store", async {
            self.store.close().await.map_err(|e| e.to_string())
        })
        .await;
        s.step("api", "stopping the API", async {
            self.api_stop.cancel();
            match self.api.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        s.finish()
    }
}

/// Runs until SIGINT or SIGTERM (reloading the registry on SIGHUP), then stops in order.
pub async fn run_until_signalled(running: Running) -> std::io::Result<Report> {
    wait_for_stop_signal(&running).await?;
    Ok(running.stop().await)
}

#[cfg(unix)]
pub async fn wait_for_stop_signal(running: &Running) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => return r,
            _ = term.recv() => return Ok(()),
            _ = hup.recv() => {
                let outcome = running.reload_registry();
                let (action, detail) = match &outcome {
                    Ok(summary) => {
                        tracing::info!("registry reloaded: {summary}");
                        (crate::security::Action::RegistryReloaded, summary.clone())
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "registry reload failed; keeping the previous one");
                        (crate::security::Action::RegistryReloadFailed, e.to_string())
                    }
                };
                let entry = crate::security::NewEntry {
                    actor: "signal (SIGHUP)".into(),
                    action,
                    target: "registry".into(),
                    detail,
                    address: None,
                };
                let db = running.security.clone();
                match tokio::task::spawn_blocking(move || db.audit(&entry)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot write the audit log"),
                    Err(e) => tracing::error!(error = %e, "cannot write the audit log"),
                }
            }
        }
    }
}

#[cfg(not(unix))]
pub async fn wait_for_stop_signal(_: &Running) -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
