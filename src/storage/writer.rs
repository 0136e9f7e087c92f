//! The writer thread every backend shares: group commit, failure handling and the spool.
//!
//! A backend provides a [`Sink`] (a blocking "commit these items" on its own connection); the
//! writer runs it on a dedicated thread and owns the policy:
//!
//! - **Group commit.** The thread blocks for the first command, then takes whatever else is
//!   queued (up to `batch_max_rows` readings, waiting at most `batch_max_delay` for more) and
//!   commits it in one go. Light load: each message commits at once. Heavy load: batches grow.
//! - **Order.** Commands are handled in queue order; flush, prune and close end a batch, so
//!   they are answered only once everything queued before them is durable.
//! - **Durability.** An item's `Durable` is confirmed only once the sink committed it, or the
//!   spool holds it on disk.
//! - **Store unreachable.** A failed commit goes to the [`Spool`](super::spool) (if enabled):
//!   confirmed from there, and every later write is appended behind it until replay (tried
//!   with backoff, in order) has caught up. Without a spool, the batch is retried with backoff
//!   until it succeeds.
//! - **Backpressure.** The command queue is bounded twice: in commands (`queue_capacity`)
//!   and in the memory its writes hold (`queue_max_bytes`: readings and kept payloads, so
//!   that a flood of large backlog messages from many devices is held at the devices, not in
//!   memory). A full queue makes `write` wait. When the spool is full, the writer stops
//!   taking commands until replay makes room, and the broker keeps the data.
//! - **Health.** The writer knows whether the store takes commits: from the first failed
//!   commit to the next one that succeeds, [`Writer::write_failure`] says why (`/readyz`
//!   reports the store unwritable, `quantrac_store_writable` is 0). Errors that repeat while
//!   it lasts are logged at most once a minute ([`crate::log_limit`]); all are counted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::spool::{self, Spool};
use super::{Error, Result, WriteItem};
use crate::log_limit::LogLimit;
use crate::metrics as m;
use crate::telemetry::Timestamp;

/// A backend's write path, run on the writer thread.
pub trait Sink: Send + 'static {
    /// Durably commits `items`; returns the number of readings. An error means nothing of it
    /// may be assumed stored (a partial commit is harmless: every write is an upsert).
    fn commit(&mut self, items: &[WriteItem]) -> Result<usize>;

    /// Deletes readings older than `cutoff`.
    fn prune(&mut self, cutoff: Timestamp) -> Result<u64>;

    /// Called once as the writer stops.
    fn close(&mut self) {}
}

/// Bytes of rejected payloads (kept whole for the dead-letter store) one batch gathers at
/// most: a batch of rejected messages without readings stays well within one spool record.
pub const BATCH_MAX_PAYLOAD_BYTES: usize = 32 * 1024 * 1024;

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub queue_capacity: usize,
    /// Memory the queued writes may hold, in bytes (see [`weight`]); at least one write is
    /// always let in, however large.
    pub queue_max_bytes: usize,
    pub batch_max_rows: usize,
    /// How long to wait for more items before committing a batch (0: commit at once).
    pub batch_max_delay: Duration,
    /// Spool directory and size bound; `None`: retry in place instead.
    pub spool: Option<(PathBuf, u64)>,
}

// Writes are nearly every command: boxing them would cost an allocation per message to
// save a few hundred bytes per queue slot.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// A write and its weight in [`Room`] units, given back when the writer takes it.
    Write(WriteItem, u32),
    Flush(oneshot::Sender<()>),
    Prune(Timestamp, oneshot::Sender<Result<u64>>),
    Close(oneshot::Sender<()>),
}

/// Whether the store takes commits, shared by the writer thread and its readers.
#[derive(Debug, Default)]
struct Health {
    /// Why the last commit failed, until one succeeds.
    failure: parking_lot::Mutex<Option<String>>,
}

/// Repeated failures while the store cannot be written are logged at most this often.
const REPEAT_LOG: Duration = Duration::from_secs(60);
static COMMIT_FAILED: LogLimit = LogLimit::new(REPEAT_LOG);
static SPOOL_FULL: LogLimit = LogLimit::new(REPEAT_LOG);
static REPLAY_FAILED: LogLimit = LogLimit::new(REPEAT_LOG);

impl Health {
    fn failed(&self, error: &Error) {
        let mut failure = self.failure.lock();
        if failure.is_none() {
            metrics::gauge!(m::STORE_WRITABLE).set(0.0);
        }
        *failure = Some(error.to_string());
    }

    fn committed(&self) {
        let mut failure = self.failure.lock();
        if let Some(was) = failure.take() {
            metrics::gauge!(m::STORE_WRITABLE).set(1.0);
            COMMIT_FAILED.reset();
            SPOOL_FULL.reset();
            REPLAY_FAILED.reset();
            tracing::info!(was = %was, "the store takes commits again");
        }
    }
}

/// The memory budget of the queue, in units of [`ROOM_UNIT`] bytes (a semaphore: a write
/// takes its weight before it is queued, the writer gives it back as it takes the write).
type Room = Arc<tokio::sync::Semaphore>;

/// Bytes per unit of [`Room`].
const ROOM_UNIT: usize = 1024;

/// The memory a queued write holds, estimated: its readings and the payload it keeps for
/// the dead-letter store. (The strings of a reading are shared with the registry.)
pub fn weight(item: &WriteItem) -> usize {
    let payload = item.rejected.as_ref().map_or(0, |r| {
        r.payload.as_ref().map_or(0, Vec::len) + r.excerpt.len() + r.topic.len()
    });
    std::mem::size_of::<WriteItem>()
        + item.readings.len() * std::mem::size_of::<crate::telemetry::Reading>()
        + payload
}

/// What the rest of quantrac holds of a writer.
pub struct Writer {
    commands: flume::Sender<Command>,
    room: Room,
    /// All of [`Room`]'s units: a write heavier than this takes all of them.
    room_units: u32,
    closing: Arc<AtomicBool>,
    spool_bytes: Arc<AtomicU64>,
    health: Arc<Health>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread over `sink`. Opens the spool first: writes it holds from a
    /// previous run are replayed before anything new reaches the sink.
    pub fn start(name: &str, sink: Box<dyn Sink>, config: WriterConfig) -> Result<Writer> {
        let spool = match &config.spool {
            Some((dir, max)) => {
                Some(Spool::open(dir, *max).map_err(|e| Error::Spool(e.to_string()))?)
            }
            None => None,
        };
        let (commands, rx) = flume::bounded(config.queue_capacity);
        let room_units =
            u32::try_from(config.queue_max_bytes.div_ceil(ROOM_UNIT).max(1)).unwrap_or(u32::MAX);
        let room = Arc::new(tokio::sync::Semaphore::new(room_units as usize));
        let closing = Arc::new(AtomicBool::new(false));
        let spool_bytes = Arc::new(AtomicU64::new(spool.as_ref().map_or(0, Spool::size)));
        let health = Arc::new(Health::default());
        metrics::gauge!(m::STORE_WRITABLE).set(1.0);
        let worker = Worker {
            health: health.clone(),
            sink,
            spool,
            rx,
            room: room.clone(),
            config,
            closing: closing.clone(),
            spool_bytes: spool_bytes.clone(),
            held: Vec::new(),
            replay_at: Instant::now(),
            replay_backoff: MIN_BACKOFF,
            replayed: 0,
        };
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || worker.run())
            .map_err(|e| Error::Task(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            commands,
            room,
            room_units,
            closing,
            spool_bytes,
            health,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    /// Queues an item, waiting while the queue is full (in commands or in memory).
    pub async fn write(&self, item: WriteItem) -> Result<()> {
        let units = u32::try_from(weight(&item).div_ceil(ROOM_UNIT))
            .unwrap_or(u32::MAX)
            .min(self.room_units);
        // The semaphore is fair: a heavy write waits its turn, it is not passed over forever.
        // The permit is held across the send: if this future is dropped while the queue is
        // full (a client gone, a shutdown timeout), the units go back with it.
        let permit = self
            .room
            .acquire_many(units)
            .await
            .map_err(|_| Error::Closed)?;
        self.commands
            .send_async(Command::Write(item, units))
            .await
            .map_err(|_| Error::Closed)?;
        // Queued: the writer gives the units back as it takes the write.
        permit.forget();
        Ok(())
    }

    async fn command<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send_async(make(tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Resolves once everything queued before is durable (stored or spooled).
    pub async fn flush(&self) -> Result<()> {
        self.command(Command::Flush).await
    }

    pub async fn prune(&self, cutoff: Timestamp) -> Result<u64> {
        self.command(|tx| Command::Prune(cutoff, tx)).await?
    }

    /// Bytes waiting in the spool.
    pub fn spool_bytes(&self) -> u64 {
        self.spool_bytes.load(Ordering::Relaxed)
    }

    /// Why the store does not take commits now (the last commit failed, a full disk, say),
    /// or `None` while it does.
    pub fn write_failure(&self) -> Option<String> {
        self.health.failure.lock().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.commands.is_disconnected()
    }

    /// Commits or spools what is queued, then stops the thread.
    pub async fn close(&self) -> Result<()> {
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.command(Command::Close).await;
        let handle = self.thread.lock().take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| Error::Task(e.to_string()))?
                .map_err(|_| Error::Task("the writer thread panicked".into()))?;
        }
        Ok(())
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Replay gives way to new commands after this long, so ingest keeps moving.
const REPLAY_SLICE: Duration = Duration::from_millis(200);

struct Worker {
    sink: Box<dyn Sink>,
    health: Arc<Health>,
    spool: Option<Spool>,
    rx: flume::Receiver<Command>,
    room: Room,
    config: WriterConfig,
    closing: Arc<AtomicBool>,
    spool_bytes: Arc<AtomicU64>,
    /// A batch the full spool could not take: no command is taken until it is placed.
    held: Vec<WriteItem>,
    replay_at: Instant,
    replay_backoff: Duration,
    /// Spool records replayed since the spool was last empty.
    replayed: u64,
}

impl Worker {
    fn spooling(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    fn run(mut self) {
        // However the thread ends (closed, or a panic), writers waiting for room are told
        // the store is closed rather than wait for units that will never come back.
        struct CloseRoom(Room);
        impl Drop for CloseRoom {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        let _close_room = CloseRoom(self.room.clone());
        let mut batch: Vec<WriteItem> = Vec::new();
        loop {
            if self.spooling() {
                self.replay();
            }
            if !self.held.is_empty() {
                // The spool is full: take nothing new (the broker keeps the data) until the
                // held batch has a place.
                let held = std::mem::take(&mut self.held);
                self.place(held);
                if !self.held.is_empty() {
                    if self.closing.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(
                        self.replay_at
                            .saturating_duration_since(Instant::now())
                            .max(MIN_BACKOFF),
                    );
                    continue;
                }
            }
            // Wake up for the next replay attempt when spooling.
            let first = if self.spooling() {
                match self.rx.recv_deadline(self.replay_at) {
                    Ok(c) => c,
                    Err(flume::RecvTimeoutError::Timeout) => continue,
                    Err(flume::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.rx.recv() {
                    Ok(c) => c,
                    Err(_) => break,
                }
            };
            let control = self.gather(first, &mut batch);
            if !batch.is_empty() {
                self.place(std::mem::take(&mut batch));
            }
            match control {
                Some(Command::Flush(reply)) => {
                    let _ = reply.send(());
                }
                Some(Command::Prune(cutoff, reply)) => {
                    let _ = reply.send(self.sink.prune(cutoff));
                }
                Some(Command::Close(reply)) => {
                    let _ = reply.send(());
                    break;
                }
                Some(Command::Write(..)) | None => {}
            }
        }
        if !self.held.is_empty() {
            tracing::error!(items = self.held.len(), "writer stopping with writes the full spool could not take; they stay unacknowledged at the broker");
        }
        self.sink.close();
    }

    /// Takes writes after `first` until the batch is full (`batch_max_rows` readings, or
    /// [`BATCH_MAX_PAYLOAD_BYTES`] of rejected payloads), the delay is over, or a control
    /// command arrives (returned, to be answered after the batch).
    fn gather(&mut self, first: Command, batch: &mut Vec<WriteItem>) -> Option<Command> {
        let deadline = Instant::now() + self.config.batch_max_delay;
        let mut next = Some(first);
        let mut rows = 0;
        let mut payload_bytes = 0;
        loop {
            match next.take() {
                Some(Command::Write(item, units)) => {
                    // The batch is bounded on its own (rows, payload bytes).
                    self.room.add_permits(units as usize);
                    rows += item.readings.len();
                    payload_bytes += item
                        .rejected
                        .as_ref()
                        .and_then(|r| r.payload.as_ref())
                        .map_or(0, Vec::len);
                    batch.push(item);
                }
                Some(other) => return Some(other),
                None => {}
            }
            if rows >= self.config.batch_max_rows || payload_bytes >= BATCH_MAX_PAYLOAD_BYTES {
                return None;
            }
            next = match self.rx.try_recv() {
                Ok(c) => Some(c),
                Err(_) if self.config.batch_max_delay.is_zero() => return None,
                Err(_) => match self.rx.recv_deadline(deadline) {
                    Ok(c) => Some(c),
                    Err(_) => return None,
                },
            };
        }
    }

    /// Makes `batch` durable: straight into the sink, or into the spool (behind whatever it
    /// already holds, or because the sink failed). Confirms it once durable.
    fn place(&mut self, batch: Vec<WriteItem>) {
        if !self.spooling() {
            let started = Instant::now();
            match self.sink.commit(&batch) {
                Ok(rows) => {
                    self.health.committed();
                    metrics::histogram!(m::STORE_COMMIT_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!(m::STORE_BATCH_ROWS).record(rows as f64);
                    metrics::counter!(m::STORE_READINGS_TOTAL).increment(rows as u64);
                    confirm(batch);
                    return;
                }
                Err(e) => {
                    metrics::counter!(m::STORE_ERRORS_TOTAL).increment(1);
                    self.health.failed(&e);
                    if self.spool.is_none() {
                        self.retry_in_place(batch, e);
                        return;
                    }
                    if let Some(suppressed) = COMMIT_FAILED.admit() {
                        tracing::error!(error = %e, items = batch.len(), suppressed, "the store is unreachable: spooling writes to disk until it is back");
                    }
                    self.replay_at = Instant::now() + self.replay_backoff;
                }
            }
        }
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        match spool.append(&batch) {
            Ok(()) => {
                self.spool_bytes.store(spool.size(), Ordering::Relaxed);
                metrics::gauge!(m::SPOOL_BYTES).set(spool.size() as f64);
                confirm(batch);
            }
            Err(e) => {
                metrics::counter!(m::SPOOL_FULL_TOTAL).increment(1);
                // Tried again every fraction of a second while it lasts.
                if let Some(suppressed) = SPOOL_FULL.admit() {
                    tracing::error!(error = %e, items = batch.len(), suppressed,
                        "SPOOL FULL: not acknowledging new data until the store is back (the broker keeps it)");
                }
                self.held = batch;
            }
        }
    }

    /// Without a spool: retry the sink until it takes the batch, or the store closes.
    fn retry_in_place(&mut self, batch: Vec<WriteItem>, first: Error) {
        let mut backoff = MIN_BACKOFF;
        let mut error = first;
        loop {
            if self.closing.load(Ordering::SeqCst) {
                tracing::error!(error = %error, items = batch.len(), "store commit failed while closing; the data stays unacknowledged at the broker");
                return;
            }
            if let Some(suppressed) = COMMIT_FAILED.admit() {
                tracing::error!(error = %error, items = batch.len(), retry_in = ?backoff, suppressed, "store commit failed; retrying (ingest waits meanwhile)");
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
            match self.sink.commit(&batch) {
                Ok(_) => {
                    self.health.committed();
                    confirm(batch);
                    return;
                }
                Err(e) => {
                    metrics::counter!(m::STORE_ERRORS_TOTAL).increment(1);
                    self.health.failed(&e);
                    error = e;
                }
            }
        }
    }

    /// Replays spooled records into the sink, in order, for at most one slice of time.
    fn replay(&mut self) {
        if Instant::now() < self.replay_at {
            return;
        }
        let started = Instant::now();
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        while started.elapsed() < REPLAY_SLICE {
            let record =
                match spool.peek_many(self.config.batch_max_rows, BATCH_MAX_PAYLOAD_BYTES as u64) {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the spool; retrying");
                        self.replay_at = Instant::now() + self.replay_backoff;
                        return;
                    }
                };
            match self.sink.commit(&record.items) {
                Ok(_) => {
                    self.health.committed();
                    self.replayed += 1;
                    if let Err(e) = spool.advance(record.next) {
                        tracing::error!(error = %e, "cannot record spool progress; the record will be replayed again");
                    }
                    self.replay_backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    self.health.failed(&e);
                    if let Some(suppressed) = REPLAY_FAILED.admit() {
                        tracing::warn!(error = %e, retry_in = ?self.replay_backoff, suppressed, "the store is still unreachable; spooled writes wait");
                    }
                    self.replay_at = Instant::now() + self.replay_backoff;
                    self.replay_backoff = (self.replay_backoff * 2).min(MAX_BACKOFF);
                    break;
                }
            }
        }
        self.spool_bytes.store(spool.size(), Ordering::Relaxed);
        metrics::gauge!(m::SPOOL_BYTES).set(spool.size() as f64);
        if spool.is_empty() {
            let skipped = spool.take_skipped();
            let replayed = std::mem::take(&mut self.replayed);
            if skipped.regions > 0 {
                tracing::error!(
                    records_replayed = replayed,
                    damaged_regions = skipped.regions,
                    damaged_bytes = skipped.bytes,
                    "the store is back: spool replayed, but damaged regions of it were skipped and their writes lost"
                );
            } else if replayed > 0 {
                tracing::info!(
                    records_replayed = replayed,
                    torn_bytes = skipped.torn_bytes,
                    "the store is back: spooled writes replayed"
                );
            } else {
                tracing::warn!(
                    torn_bytes = skipped.torn_bytes,
                    "the spool held no readable record; nothing was replayed"
                );
            }
        }
    }
}

fn confirm(batch: Vec<WriteItem>) {
    for item in batch {
        if let Some(done) = item.done {
            done.confirm();
        }
    }
}

/// Errors of the spool, for the storage error type.
impl From<spool::Error> for Error {
    fn from(e: spool::Error) -> Self {
        Error::Spool(e.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::faults::FaultSwitch;
    use crate::telemetry::{Reading, Status};

    /// Remembers what it was given, in order.
    #[derive(Clone, Default)]
    struct Memory(Arc<parking_lot::Mutex<Vec<f64>>>);

    impl Sink for Memory {
        fn commit(&mut self, items: &[WriteItem]) -> Result<usize> {
            let mut seen = self.0.lock();
            for i in items {
                seen.extend(i.readings.iter().map(|r| r.value));
            }
            Ok(items.len())
        }
        fn prune(&mut self, _: Timestamp) -> Result<u64> {
            Ok(0)
        }
    }

    fn item(value: f64) -> (WriteItem, crate::ack::DurableWait) {
        let (done, wait) = crate::ack::pair();
        let item = WriteItem {
            readings: vec![Reading {
                station: "S".into(),
                zone: "Z".into(),
                param: "P".into(),
                ts: Timestamp::from_millis(value as i64),
                value,
                status: Status::Measuring,
            }],
            done: Some(done),
            ..WriteItem::default()
        };
        (item, wait)
    }

    fn config(spool: Option<(PathBuf, u64)>) -> WriterConfig {
        WriterConfig {
            queue_capacity: 16,
            queue_max_bytes: 64 * 1024 * 1024,
            batch_max_rows: 1000,
            batch_max_delay: Duration::ZERO,
            spool,
        }
    }

    /// A sink whose commits wait for a go-ahead, and that says when one has started.
    struct Gated {
        started: std::sync::mpsc::Sender<()>,
        go: std::sync::mpsc::Receiver<()>,
    }

    impl Sink for Gated {
        fn commit(&mut self, items: &[WriteItem]) -> Result<usize> {
            let _ = self.started.send(());
            let _ = self.go.recv();
            Ok(items.len())
        }
        fn prune(&mut self, _: Timestamp) -> Result<u64> {
            Ok(0)
        }
    }

    fn heavy(readings: usize) -> WriteItem {
        let (mut i, _) = item(1.0);
        i.done = None;
        i.readings = vec![i.readings[0].clone(); readings];
        i
    }

    /// A writer over a [`Gated`] sink whose first write (`heavy(1000)`) is committing, held
    /// there until `go` says so.
    async fn held_writer(c: WriterConfig) -> (Writer, std::sync::mpsc::Sender<()>) {
        let (started_tx, started) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let sink = Gated {
            started: started_tx,
            go: go_rx,
        };
        let w = Writer::start("t", Box::new(sink), c).unwrap();
        w.write(heavy(1000)).await.unwrap();
        tokio::task::spawn_blocking(move || started.recv().map(|()| started))
            .await
            .unwrap()
            .unwrap();
        (w, go)
    }

    /// Lets every held commit through and closes the writer.
    async fn release(w: &Writer, go: std::sync::mpsc::Sender<()>) {
        for _ in 0..4 {
            let _ = go.send(());
        }
        drop(go);
        w.close().await.unwrap();
    }

    #[tokio::test]
    async fn writes_wait_while_the_queued_ones_hold_the_memory_budget_and_go_on_as_it_frees() {
        let mut c = config(None);
        // Room for two writes of 1,000 readings (and a little more), not three.
        c.queue_max_bytes = weight(&heavy(1000)) * 5 / 2;
        // The first write is taken off the queue, and its commit holds the writer.
        let (w, go) = held_writer(c).await;
        let w = Arc::new(w);
        w.write(heavy(1000)).await.unwrap();
        w.write(heavy(1000)).await.unwrap();
        let mut third = tokio::spawn({
            let w = w.clone();
            async move { w.write(heavy(1000)).await }
        });
        let waited = tokio::time::timeout(Duration::from_millis(50), &mut third).await;
        assert!(waited.is_err(), "a third queued write waits for room");
        // The writer takes the two queued writes (giving their room back): the third goes in.
        go.send(()).unwrap();
        third.await.unwrap().unwrap();
        release(&w, go).await;
    }

    #[tokio::test]
    async fn a_write_given_up_while_the_queue_is_full_gives_its_room_back() {
        let mut c = config(None);
        c.queue_capacity = 1;
        c.queue_max_bytes = weight(&heavy(1000)) * 5 / 2;
        let (w, go) = held_writer(c).await;
        // The queue (one command) fills; the next write waits in the send, holding room.
        w.write(heavy(1000)).await.unwrap();
        let given_up = tokio::time::timeout(Duration::from_millis(50), w.write(heavy(1000))).await;
        assert!(given_up.is_err(), "the queue was full");
        // Its units came back: room for one more write of the same weight beside the queued one.
        assert_eq!(
            w.room.available_permits(),
            w.room_units as usize - weight(&heavy(1000)).div_ceil(ROOM_UNIT)
        );
        release(&w, go).await;
    }

    #[tokio::test]
    async fn writers_waiting_for_room_are_told_the_store_closed() {
        let memory = Memory::default();
        let mut c = config(None);
        c.queue_max_bytes = 1;
        let w = Writer::start("t", Box::new(memory), c).unwrap();
        w.close().await.unwrap();
        assert!(matches!(w.write(heavy(10)).await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn a_write_heavier_than_the_whole_budget_is_still_taken() {
        let memory = Memory::default();
        let mut c = config(None);
        c.queue_max_bytes = 1;
        let w = Writer::start("t", Box::new(memory.clone()), c).unwrap();
        let (mut i, wait) = item(7.0);
        i.readings = vec![i.readings[0].clone(); 10_000];
        w.write(i).await.unwrap();
        assert!(wait.wait().await);
        w.close().await.unwrap();
        assert_eq!(memory.0.lock().len(), 10_000);
    }

    #[tokio::test]
    async fn writes_reach_the_sink_in_order_and_are_confirmed() {
        let memory = Memory::default();
        let w = Writer::start("t", Box::new(memory.clone()), config(None)).unwrap();
        for v in [1.0, 2.0, 3.0] {
            let (i, wait) = item(v);
            w.write(i).await.unwrap();
            assert!(wait.wait().await);
        }
        w.close().await.unwrap();
        assert_eq!(*memory.0.lock(), [1.0, 2.0, 3.0]);
    }

    #[tokio::test]
    async fn while_the_store_fails_writes_are_spooled_confirmed_and_replayed_in_order_when_it_returns(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let memory = Memory::default();
        let switch = FaultSwitch::new();
        let spool = Some((dir.path().to_owned(), 1 << 20));
        let w = Writer::start("t", switch.wrap(Box::new(memory.clone())), config(spool)).unwrap();
        let (i, wait) = item(1.0);
        w.write(i).await.unwrap();
        assert!(wait.wait().await);
        switch.set_failing(true);
        for v in [2.0, 3.0, 4.0] {
            let (i, wait) = item(v);
            w.write(i).await.unwrap();
            assert!(
                wait.wait().await,
                "confirmed from the spool while the store is down"
            );
        }
        assert_eq!(*memory.0.lock(), [1.0]);
        assert!(w.spool_bytes() > 0);
        switch.set_failing(false);
        // A write after recovery goes behind the spooled ones.
        let (i, wait) = item(5.0);
        w.write(i).await.unwrap();
        assert!(wait.wait().await);
        w.flush().await.unwrap();
        // Replay runs on the writer's backoff; flush until it has caught up and emptied the
        // spool (the spool is truncated just after the replayed batch commits).
        let deadline = Instant::now() + Duration::from_secs(10);
        while (memory.0.lock().len() < 5 || w.spool_bytes() > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            w.flush().await.unwrap();
        }
        assert_eq!(*memory.0.lock(), [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(w.spool_bytes(), 0);
        w.close().await.unwrap();
    }

    #[tokio::test]
    async fn the_writer_reports_the_store_unwritable_from_a_failed_commit_to_the_next_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let memory = Memory::default();
        let switch = FaultSwitch::new();
        let spool = Some((dir.path().to_owned(), 1 << 20));
        let w = Writer::start("t", switch.wrap(Box::new(memory.clone())), config(spool)).unwrap();
        let (i, wait) = item(1.0);
        w.write(i).await.unwrap();
        assert!(wait.wait().await);
        assert_eq!(w.write_failure(), None);
        switch.set_failing(true);
        let (i, wait) = item(2.0);
        w.write(i).await.unwrap();
        assert!(wait.wait().await, "spooled");
        let failure = w.write_failure();
        assert!(failure.is_some(), "unwritable after a failed commit");
        switch.set_failing(false);
        // Replay (on the writer's backoff) is the next commit: it succeeds.
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.write_failure().is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            w.flush().await.unwrap();
        }
        assert_eq!(w.write_failure(), None, "writable again after {failure:?}");
        w.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_spool_left_by_a_previous_run_is_replayed_before_new_writes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Some((dir.path().to_owned(), 1 << 20));
        let switch = FaultSwitch::new();
        switch.set_failing(true);
        let first = Memory::default();
        let w = Writer::start(
            "t",
            switch.wrap(Box::new(first.clone())),
            config(spool.clone()),
        )
        .unwrap();
        for v in [1.0, 2.0] {
            let (i, wait) = item(v);
            w.write(i).await.unwrap();
            assert!(wait.wait().await);
        }
        w.close().await.unwrap();
        assert!(first.0.lock().is_empty());

        let second = Memory::default();
        let w = Writer::start("t", Box::new(second.clone()), config(spool)).unwrap();
        let (i, wait) = item(3.0);
        w.write(i).await.unwrap();
        assert!(wait.wait().await);
        w.close().await.unwrap();
        assert_eq!(*second.0.lock(), [1.0, 2.0, 3.0]);
    }

    #[tokio::test]
    async fn a_spool_damaged_at_its_start_still_replays_every_intact_record_and_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Some((dir.path().to_owned(), 1 << 20));
        let switch = FaultSwitch::new();
        switch.set_failing(true);
        let w = Writer::start(
            "t",
            switch.wrap(Box::new(Memory::default())),
            config(spool.clone()),
        )
        .unwrap();
        for v in 0..50 {
            let (i, wait) = item(f64::from(v));
            w.write(i).await.unwrap();
            assert!(wait.wait().await);
        }
        w.close().await.unwrap();
        let path = dir.path().join(spool::FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..64].fill(0xa5);
        std::fs::write(&path, &bytes).unwrap();

        // A second outage: the run spools more, then stops before the store returns.
        let w = Writer::start(
            "t",
            switch.wrap(Box::new(Memory::default())),
            config(spool.clone()),
        )
        .unwrap();
        for v in 50..60 {
            let (i, wait) = item(f64::from(v));
            w.write(i).await.unwrap();
            assert!(wait.wait().await);
        }
        w.close().await.unwrap();

        let memory = Memory::default();
        let w = Writer::start("t", Box::new(memory.clone()), config(spool)).unwrap();
        w.flush().await.unwrap();
        w.close().await.unwrap();
        let got = memory.0.lock().clone();
        assert!(got.len() >= 47 && got.len() < 60, "{} replayed", got.len());
        assert!(got.windows(2).all(|p| p[0] < p[1]), "in order: {got:?}");
        assert_eq!(
            got[got.len() - 11..],
            (49..60).map(f64::from).collect::<Vec<_>>()[..]
        );
    }

    #[tokio::test]
    async fn a_full_spool_stops_confirming_so_the_broker_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let switch = FaultSwitch::new();
        switch.set_failing(true);
        let memory = Memory::default();
        // Room for one record of one item.
        let one = {
            let probe = tempfile::tempdir().unwrap();
            let mut s = Spool::open(probe.path(), 1 << 20).unwrap();
            s.append(&[item(1.0).0]).unwrap();
            s.size()
        };
        let spool = Some((dir.path().to_owned(), one + one / 2));
        let w = Writer::start("t", switch.wrap(Box::new(memory.clone())), config(spool)).unwrap();
        let (i, first) = item(1.0);
        w.write(i).await.unwrap();
        assert!(first.wait().await, "fits in the spool");
        let (i, second) = item(2.0);
        w.write(i).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(500), second.wait()).await;
        assert!(waited.is_err(), "not confirmed while the spool is full");
        switch.set_failing(false);
        w.close().await.unwrap();
        assert_eq!(
            *memory.0.lock(),
            [1.0, 2.0],
            "replayed, then the held batch went through"
        );
    }
}
