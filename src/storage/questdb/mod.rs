//! The production store: QuestDB.
//!
//! # Where data lives
//! - **Readings** in QuestDB, table `storage.questdb.table` (`readings`; [`schema`]): written over ILP/HTTP by the
//!   shared writer thread ([`sink`]), read over the PostgreSQL wire protocol ([`read`]).
//! - **Alerts, quarantine (with its dead-letter store), station presence and alert rule state** in the local SQLite
//!   database of `storage.path` (the same schema as the embedded store). They are small and
//!   mutable (upserts by id, bounded deletes, increasing ids) where QuestDB is append-only;
//!   they are written in the same writer batch as the readings that caused them, after them.
//!   Several quantrac nodes therefore share readings but not alerts (a known limit).
//! - The **spool** (`storage.spool`) holds both while QuestDB is unreachable.
//!
//! # Visibility
//! A write is durable once QuestDB acknowledged the HTTP request; WAL tables become readable
//! a moment later. [`Store::flush`] waits for that too (QuestDB's `wal_tables()`), so "flush,
//! then read" sees every write.

pub mod read;
pub mod rewrites;
pub mod rollup;
pub mod schema;
pub mod sink;
pub mod sql;

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use super::faults::FaultSwitch;
use super::sqlite::{SqliteConfig, SqliteStore, StateReader};
use super::writer::{Sink, Writer};
use super::{
    AggregateQuery, AlertPage, AlertQuery, ArrivalQuery, Error, LatestRow, PresenceRow,
    QuarantinePage, QuarantineQuery, RawQuery, ReadingPage, RecordArrival, Result, RevisionPage,
    RevisionQuery, SeriesBuckets, Store, WriteItem,
};
use crate::alerts::Alert;
use crate::config::QuestDbConfig;
use crate::telemetry::Timestamp;

pub struct QuestDbStore {
    writer: Writer,
    state: StateReader,
    pool: Pool,
    /// The readings table (checked by [`crate::config::is_table_name`]).
    table: String,
    /// Its hourly rollup ([`rollup`]), `None` when `storage.questdb.hourly_rollup` is off.
    view: Option<String>,
}

fn pg_error(e: impl std::error::Error + 'static) -> Error {
    Error::Unavailable(format!(
        "QuestDB (PostgreSQL wire): {}",
        read::error_chain(&e)
    ))
}

impl QuestDbStore {
    /// Connects, creates the table if missing, and starts the writer. `local` is the SQLite
    /// state database (and the writer's settings); `retention` becomes the table's TTL when
    /// `config.ttl` is on.
    pub async fn open(
        config: &QuestDbConfig,
        local: SqliteConfig,
        retention: Duration,
        faults: Option<&FaultSwitch>,
    ) -> Result<QuestDbStore> {
        if !crate::config::is_table_name(&config.table) {
            return Err(Error::Incompatible(format!(
                "storage.questdb.table `{}` is not a plain table name",
                config.table
            )));
        }
        let pg: tokio_postgres::Config =
            config.pg.parse().map_err(|e: tokio_postgres::Error| {
                Error::Unavailable(format!("storage.questdb.pg: {}", read::error_chain(&e)))
            })?;
        let manager = Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .build()
            .map_err(pg_error)?;
        let ttl_days = if config.ttl {
            retention.as_secs().div_ceil(86_400)
        } else {
            0
        };
        {
            let client = pool.get().await.map_err(pg_error)?;
            let build = schema::check_version(&client).await?;
            tracing::info!(%build, table = %config.table, "QuestDB server");
            schema::create(&client, &config.table, ttl_days).await?;
            if config.hourly_rollup {
                schema::create_rollup(&client, &config.table, ttl_days).await?;
            }
        }
        let newest = read::latest(&*pool.get().await.map_err(pg_error)?, &config.table).await?;
        let rewrites = rewrites::Rewrites::new(
            pool.clone(),
            tokio::runtime::Handle::current(),
            config.table.clone(),
            newest,
        );
        let (state_sink, state) = SqliteStore::state_parts(&local)?;
        let mut sink: Box<dyn Sink> =
            Box::new(sink::QuestSink::new(config, state_sink)?.with_rewrites(rewrites));
        if let Some(switch) = faults {
            sink = switch.wrap(sink);
        }
        let writer = Writer::start("questdb-writer", sink, local.writer.clone())?;
        Ok(QuestDbStore {
            writer,
            state,
            pool,
            table: config.table.clone(),
            view: config
                .hourly_rollup
                .then(|| rollup::view_name(&config.table)),
        })
    }

    /// An aggregate, and whether the hourly rollup answered it (`rollup = false`: raw rows
    /// only, whatever the configuration). For tests and benchmarks; the API calls
    /// [`Store::aggregate`].
    pub async fn aggregate_from(
        &self,
        query: AggregateQuery,
        rollup: bool,
    ) -> Result<(Vec<SeriesBuckets>, read::Source)> {
        let view = self.view.as_deref().filter(|_| rollup);
        read::aggregate(&*self.client().await?, &self.table, view, &query).await
    }

    /// Whether the hourly rollup has caught up with every write QuestDB applied (`false`
    /// when it is off).
    pub async fn rollup_fresh(&self) -> Result<bool> {
        match &self.view {
            Some(view) => Ok(read::freshness(&*self.client().await?, view)
                .await?
                .usable()),
            None => Ok(false),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pg_error)
    }

    /// Bytes waiting in the spool (QuestDB was unreachable).
    pub fn spool_bytes(&self) -> u64 {
        self.writer.spool_bytes()
    }
}

#[async_trait]
impl Store for QuestDbStore {
    async fn write(&self, item: WriteItem) -> Result<()> {
        self.writer.write(item).await
    }

    async fn flush(&self) -> Result<()> {
        self.writer.flush().await?;
        if self.writer.spool_bytes() > 0 {
            // Spooled, not yet in QuestDB: durable, visible once replayed.
            return Ok(());
        }
        read::wait_applied(&*self.client().await?, &self.table).await
    }

    async fn readings(&self, query: RawQuery) -> Result<ReadingPage> {
        read::readings(&*self.client().await?, &self.table, &query).await
    }

    async fn arrivals(&self, query: ArrivalQuery) -> Result<Vec<RecordArrival>> {
        read::arrivals(&*self.client().await?, &self.table, &query).await
    }

    async fn aggregate(&self, query: AggregateQuery) -> Result<Vec<SeriesBuckets>> {
        let view = self.view.as_deref();
        let (series, _) =
            read::aggregate(&*self.client().await?, &self.table, view, &query).await?;
        Ok(series)
    }

    async fn latest(&self) -> Result<Vec<LatestRow>> {
        read::latest(&*self.client().await?, &self.table).await
    }

    async fn presence(&self) -> Result<Vec<PresenceRow>> {
        self.state.presence().await
    }

    async fn revisions(&self, query: RevisionQuery) -> Result<RevisionPage> {
        self.state.revisions(query).await
    }

    async fn quarantine(&self, query: QuarantineQuery) -> Result<QuarantinePage> {
        self.state.quarantine(query).await
    }

    async fn dead_letter(&self, id: u64) -> Result<crate::quarantine::DeadLetter> {
        self.state.dead_letter(id).await
    }

    async fn alerts(&self, query: AlertQuery) -> Result<AlertPage> {
        self.state.alerts(query).await
    }

    async fn alert(&self, id: u64) -> Result<Option<Alert>> {
        self.state.alert(id).await
    }

    async fn active_alerts(&self) -> Result<Vec<Alert>> {
        self.state.active_alerts().await
    }

    async fn max_alert_id(&self) -> Result<u64> {
        self.state.max_alert_id().await
    }

    async fn rule_states(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.state.rule_states().await
    }

    async fn prune(&self, cutoff: Timestamp) -> Result<u64> {
        read::drop_before(&*self.client().await?, &self.table, cutoff).await?;
        // QuestDB reports dropped partitions, not rows.
        Ok(0)
    }

    async fn ping(&self) -> Result<()> {
        if self.writer.is_closed() {
            return Err(Error::Closed);
        }
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(pg_error)
    }

    fn write_failure(&self) -> Option<String> {
        self.writer.write_failure()
    }

    async fn close(&self) -> Result<()> {
        self.writer.close().await
    }
}
