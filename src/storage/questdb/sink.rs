//! The QuestDB write path, on the shared writer thread: readings over ILP/HTTP (the client
//! is synchronous, so it lives on that thread), the rest into the local SQLite state
//! database.
//!
//! Facts that shape it: the Rust client never flushes by itself (we flush each batch,
//! splitting at `max_request_bytes`); one HTTP request for one table is atomic; a 4xx is
//! final and a 5xx or timeout is retried by the client, so a request may be applied twice,
//! which the table's `DEDUP UPSERT KEYS(ts, station, param)` absorbs; rows carry the
//! reading's own time as designated timestamp (never the server's), so deduplication
//! matches.

use questdb::ingress::{
    Buffer, ColumnName, ProtocolVersion, Sender, SenderBuilder, TableName, TimestampMicros,
};

use super::rewrites::Rewrites;
use crate::config::QuestDbConfig;
use crate::storage::sqlite::SqliteSink;
use crate::storage::writer::Sink;
use crate::storage::{Error, Result, WriteItem};
use crate::telemetry::Timestamp;

fn ilp_error(e: questdb::Error) -> Error {
    Error::Unavailable(format!("QuestDB: {e}"))
}

/// Builds the ILP/HTTP sender. Protocol version 2 is set explicitly, so that creating the
/// sender does not need QuestDB up: left unset, `build` asks the server's `/settings` to
/// negotiate it. Errors surface at flush instead, where the spool takes over. V2 needs
/// QuestDB 9.0 or later; it sends doubles in binary and `TimestampMicros` with a `t` suffix,
/// so values and designated timestamps arrive exactly.
pub fn sender(config: &QuestDbConfig) -> Result<Sender> {
    let uri: axum::http::Uri = config.http.parse().map_err(|_| {
        Error::Unavailable(format!(
            "storage.questdb.http `{}` is not a URL",
            config.http
        ))
    })?;
    let (protocol, tls) = match uri.scheme_str() {
        Some("http") => (questdb::ingress::Protocol::Http, false),
        Some("https") => (questdb::ingress::Protocol::Https, true),
        _ => {
            return Err(Error::Unavailable(format!(
                "storage.questdb.http `{}` must be an http:// or https:// address",
                config.http
            )))
        }
    };
    let host = uri.host().unwrap_or("127.0.0.1").to_owned();
    let port = uri.port_u16().unwrap_or(9000);
    let mut b = SenderBuilder::new(protocol, host, port)
        .protocol_version(ProtocolVersion::V2)
        .map_err(ilp_error)?
        .request_timeout(config.request_timeout)
        .map_err(ilp_error)?
        .retry_timeout(config.request_timeout)
        .map_err(ilp_error)?;
    // Each credential that is set goes to the client, which accepts username and password
    // (basic) or a token (bearer, Enterprise) and refuses any other mix at `build`: a
    // username without its password is a configuration error, not anonymous access.
    // An empty value counts as unset (`token = ""` in a configuration file).
    let set = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    if let Some(user) = set(&config.username) {
        b = b.username(&user).map_err(ilp_error)?;
    }
    if let Some(password) = set(&config.password) {
        b = b.password(&password).map_err(ilp_error)?;
    }
    if let Some(token) = set(&config.token) {
        b = b.token(&token).map_err(ilp_error)?;
    }
    if let (true, Some(ca)) = (tls, &config.ca_file) {
        b = b.tls_roots(ca.clone()).map_err(ilp_error)?;
    }
    b.build().map_err(ilp_error)
}

pub struct QuestSink {
    config: QuestDbConfig,
    /// Finds the stored versions a batch replaces (kept as revisions).
    rewrites: Option<Rewrites>,
    /// `None` after the client said the connection must be rebuilt.
    sender: Option<Sender>,
    buffer: Buffer,
    state: SqliteSink,
}

impl QuestSink {
    pub fn new(config: &QuestDbConfig, state: SqliteSink) -> Result<QuestSink> {
        let sender = sender(config)?;
        let buffer = sender.new_buffer();
        Ok(QuestSink {
            config: config.clone(),
            rewrites: None,
            sender: Some(sender),
            buffer,
            state,
        })
    }

    /// Keeps the earlier versions of readings that batches replace.
    pub fn with_rewrites(mut self, rewrites: Rewrites) -> QuestSink {
        self.rewrites = Some(rewrites);
        self
    }

    fn send_readings(&mut self, items: &[WriteItem]) -> Result<usize> {
        let sender = match self.sender.take() {
            Some(s) => s,
            None => sender(&self.config)?,
        };
        let mut sender = sender;
        let sent = self.fill_and_flush(&mut sender, items);
        if !sender.must_close() {
            self.sender = Some(sender);
        }
        sent.map_err(ilp_error)
    }

    fn fill_and_flush(
        &mut self,
        sender: &mut Sender,
        items: &[WriteItem],
    ) -> questdb::Result<usize> {
        let max_request_bytes = self.config.max_request_bytes;
        self.buffer.clear();
        // Names checked once per batch, not once per row.
        let table = TableName::new(self.config.table.as_str())?;
        let [station, zone, param, status, value, arrived] =
            ["station", "zone", "param", "status", "value", "arrived"].map(ColumnName::new);
        let (station, zone, param, status, value, arrived) =
            (station?, zone?, param?, status?, value?, arrived?);
        let mut rows = 0;
        for item in items {
            // When the message arrived (its presence update says): the connectivity report's
            // timeliness. DEDUP UPSERT replaces a whole row, so on QuestDB a re-sent reading
            // takes its last arrival (the embedded store keeps the first).
            let received = item
                .presence
                .as_ref()
                .and_then(|p| p.last_seen)
                .map(|at| TimestampMicros::new(at.as_millis() * 1000));
            for r in &item.readings {
                self.buffer
                    .table(table)?
                    .symbol(station, &*r.station)?
                    .symbol(zone, &*r.zone)?
                    .symbol(param, &*r.param)?
                    .symbol(status, r.status.code())?
                    .column_f64(value, r.value)?
                    .column_ts_opt(arrived, received)?
                    .at(TimestampMicros::new(r.ts.as_millis() * 1000))?;
                rows += 1;
                if self.buffer.len() >= max_request_bytes {
                    sender.flush(&mut self.buffer)?;
                }
            }
        }
        if !self.buffer.is_empty() {
            sender.flush(&mut self.buffer)?;
        }
        Ok(rows)
    }
}

impl Sink for QuestSink {
    fn commit(&mut self, items: &[WriteItem]) -> Result<usize> {
        // The versions this batch replaces are kept before QuestDB overwrites them: a crash
        // in between can at worst keep a revision twice, never lose one.
        if let Some(rewrites) = &self.rewrites {
            let replaced = rewrites.find(items, Timestamp::now())?;
            self.state.keep_revisions(&replaced)?;
        }
        // Readings next: if QuestDB refuses, the whole batch (state included) is spooled and
        // replayed later, and replaying rows QuestDB already has changes nothing.
        let rows = self.send_readings(items)?;
        self.state.commit(items)?;
        if let Some(rewrites) = &mut self.rewrites {
            rewrites.stored(items);
        }
        Ok(rows)
    }

    fn prune(&mut self, _cutoff: Timestamp) -> Result<u64> {
        // QuestDB drops old partitions itself (TTL); see QuestDbStore::prune for on-demand.
        Ok(0)
    }

    fn close(&mut self) {
        self.state.close();
    }
}
