//! The spool: a local append-only log that holds writes while the store is unreachable.
//!
//! # On-disk format
//! One file, `<dir>/spool.log`, a sequence of records:
//!
//! ```text
//! record  := magic:[u8; 4] = "QSP1"  len:u32 LE  crc:u32 LE  payload:[u8; len]
//! payload := bincode 2 standard() of Batch { version: u8 = 3, items: Vec<Item> }
//! ```
//!
//! `crc` is the CRC-32 (IEEE) of `payload`; an `Item` is a [`WriteItem`] without its
//! durability handle (readings, rejections, presence, alerts, rule state, record window,
//! record-window reset). Version 1 items (without the record window) and version 2 items
//! (rejections as a list, without the payload: they become entries without a dead letter;
//! without the reset) are still read, so that a spool left by an older build is replayed
//! after an upgrade.
//!
//! # Invariants
//! - **Append, then fsync, then confirm.** A batch is acknowledged to the broker only after
//!   its record is on disk (`sync_data`), so a crash loses nothing that was acknowledged.
//! - **Order.** Records are replayed in file order, and while the spool is not empty every
//!   new write is appended behind it, never written to the store directly: the store sees
//!   writes in the order they were made (alert states included).
//! - **Idempotent replay.** Replay may repeat records (after a crash the file is replayed from
//!   its start): every write is an upsert by identity, so repeating it changes nothing.
//! - **Bounded.** The file never grows beyond `max_bytes`; a batch that does not fit is not
//!   accepted, and the writer stops taking writes until replay makes room, so the broker
//!   keeps the data.
//! - **Damage is skipped, never fatal, and loses only what it covers.** At open every record
//!   is checked (magic, a length within `MAX_RECORD` and the file, the CRC of the payload, and
//!   a payload that decodes). Where one fails, the scan **resynchronises**: it searches forward
//!   byte by byte for the next offset holding `QSP1` followed by a record that passes all of
//!   these checks, and resumes there; the bytes in between are one damaged region. A false
//!   resynchronisation would need the magic (32 bits) and the CRC-32 of an arbitrary length of
//!   bytes (32 bits) to match by chance and the bytes to decode as a batch: about 2^-64 per
//!   candidate offset, negligible even over a full spool.
//! - **Torn tail versus damage.** An unreadable end that looks like the start of a record (a
//!   prefix of the magic, or a plausible header whose payload runs past the end of the file)
//!   is what a crash during an append leaves: that record was never acknowledged, so the file
//!   is just cut there (WARN, counted with `reason="torn_tail"`). Anything else (a damaged
//!   region anywhere, or an unreadable end that is no record start) means acknowledged writes
//!   are lost: the intact records are written to a fresh `spool.log` (synced, then renamed
//!   over it), the damaged file is kept as `spool.log.damaged-<UTC time>` for inspection, and
//!   the skipped bytes and regions are counted (`quantrac_spool_skipped_bytes_total`,
//!   `quantrac_spool_skipped_regions_total`, `reason="damaged"`) and logged at ERROR. New
//!   writes thus never go behind damage, and a restart never meets the same damage again.
//!   Damage that appears while quantrac runs is skipped the same way during replay.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{PresenceUpdate, WriteItem};
use crate::alerts::Alert;
use crate::metrics as m;
use crate::quarantine::{self, Rejected, Rejection};
use crate::security::sequence::Window;
use crate::telemetry::{Encoding, Reading, Timestamp};

/// File name inside the spool directory.
pub const FILE: &str = "spool.log";
const MAGIC: [u8; 4] = *b"QSP1";
const HEADER: usize = 12;
const VERSION: u8 = 3;
const VERSION_2: u8 = 2;
const VERSION_1: u8 = 1;
/// No single record may claim more than this (a damaged length field is caught early).
const MAX_RECORD: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the spool is full ({size} of {max} bytes)")]
    Full { size: u64, max: u64 },
    #[error("spool I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode a spool record: {0}")]
    Encode(String),
}

#[derive(Serialize)]
struct ItemRef<'a> {
    readings: &'a [Reading],
    rejected: &'a Option<Rejected>,
    presence: &'a Option<PresenceUpdate>,
    alerts: &'a [Alert],
    rule_states: &'a [(Arc<str>, Vec<u8>)],
    record_window: &'a Option<(Arc<str>, Window)>,
    record_window_reset: &'a Option<Arc<str>>,
}

#[derive(Deserialize)]
struct Item {
    readings: Vec<Reading>,
    rejected: Option<Rejected>,
    presence: Option<PresenceUpdate>,
    alerts: Vec<Alert>,
    rule_states: Vec<(Arc<str>, Vec<u8>)>,
    record_window: Option<(Arc<str>, Window)>,
    record_window_reset: Option<Arc<str>>,
}

/// A message's rejections as versions 1 and 2 wrote them: every one listed, no payload.
#[derive(Deserialize)]
struct RejectedV2 {
    received_at: Timestamp,
    topic: String,
    encoding: Option<Encoding>,
    excerpt: String,
    rejections: Vec<Rejection>,
}

impl From<RejectedV2> for Rejected {
    fn from(r: RejectedV2) -> Rejected {
        let station = r.rejections.first().and_then(|f| f.station.clone());
        let (counts, samples) = quarantine::summarise(r.rejections);
        Rejected {
            received_at: r.received_at,
            topic: r.topic,
            encoding: r.encoding,
            station,
            excerpt: r.excerpt,
            payload: None,
            counts,
            samples,
        }
    }
}

/// An item as version 2 wrote it.
#[derive(Deserialize)]
struct ItemV2 {
    readings: Vec<Reading>,
    rejected: Option<RejectedV2>,
    presence: Option<PresenceUpdate>,
    alerts: Vec<Alert>,
    rule_states: Vec<(Arc<str>, Vec<u8>)>,
    record_window: Option<(Arc<str>, Window)>,
}

impl From<ItemV2> for Item {
    fn from(i: ItemV2) -> Item {
        Item {
            readings: i.readings,
            rejected: i.rejected.map(Rejected::from),
            presence: i.presence,
            alerts: i.alerts,
            rule_states: i.rule_states,
            record_window: i.record_window,
            record_window_reset: None,
        }
    }
}

/// An item as version 1 wrote it.
#[derive(Deserialize)]
struct ItemV1 {
    readings: Vec<Reading>,
    rejected: Option<RejectedV2>,
    presence: Option<PresenceUpdate>,
    alerts: Vec<Alert>,
    rule_states: Vec<(Arc<str>, Vec<u8>)>,
}

impl From<ItemV1> for Item {
    fn from(i: ItemV1) -> Item {
        Item {
            readings: i.readings,
            rejected: i.rejected.map(Rejected::from),
            presence: i.presence,
            alerts: i.alerts,
            rule_states: i.rule_states,
            record_window: None,
            record_window_reset: None,
        }
    }
}

impl From<Item> for WriteItem {
    fn from(i: Item) -> WriteItem {
        WriteItem {
            readings: i.readings,
            rejected: i.rejected,
            presence: i.presence,
            alerts: i.alerts,
            rule_states: i.rule_states,
            record_window: i.record_window,
            record_window_reset: i.record_window_reset,
            done: None,
        }
    }
}

#[derive(Serialize)]
struct BatchRef<'a> {
    version: u8,
    items: Vec<ItemRef<'a>>,
}

#[derive(Deserialize)]
struct Batch<T> {
    /// Already read (the first byte) to choose `T`.
    _version: u8,
    items: Vec<T>,
}

/// What was skipped as unreadable. `bytes` and `regions` count damage (a region is one
/// contiguous run of bytes between intact records: acknowledged writes lost); `torn_bytes` is
/// a torn last record (a crash during its append: never acknowledged, so nothing lost).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    pub bytes: u64,
    pub regions: u64,
    pub torn_bytes: u64,
}

impl Skipped {
    fn add(&mut self, bytes: u64) {
        self.bytes += bytes;
        self.regions += 1;
    }
}

/// The spool file and the replay position.
pub struct Spool {
    path: PathBuf,
    file: File,
    /// Bytes in the file (all valid records).
    len: u64,
    /// Where replay continues.
    read: u64,
    max_bytes: u64,
    /// Skipped since the last [`Spool::take_skipped`].
    skipped: Skipped,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("read", &self.read)
            .finish()
    }
}

/// A record read back, and where the next one starts.
pub struct Replay {
    pub items: Vec<WriteItem>,
    pub next: u64,
}

const REASON_TORN: &str = "torn_tail";
const REASON_DAMAGED: &str = "damaged";

fn count_skipped(reason: &'static str, bytes: u64, regions: u64) {
    metrics::counter!(m::SPOOL_SKIPPED_BYTES_TOTAL, m::LABEL_REASON => reason).increment(bytes);
    metrics::counter!(m::SPOOL_SKIPPED_REGIONS_TOTAL, m::LABEL_REASON => reason).increment(regions);
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, checking every record. A torn last
    /// record is cut; any other damage moves the file aside (`spool.log.damaged-<time>`) and
    /// the intact records go to a fresh `spool.log`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, Error> {
        let path = dir.join(FILE);
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let scan = scan(&bytes);
        let mut skipped = Skipped::default();
        let mut len = scan.records.iter().map(|&(_, n)| n as u64).sum::<u64>();
        if let Some((offset, torn)) = scan.torn {
            skipped.torn_bytes = torn as u64;
            count_skipped(REASON_TORN, torn as u64, 1);
            tracing::warn!(path = %path.display(), offset, bytes = torn,
                "spool: a torn last record (a crash during an append?) is cut; it was never acknowledged");
        }
        if scan.damaged.is_empty() {
            if scan.torn.is_some() {
                file.set_len(len).map_err(io)?;
                file.sync_all().map_err(io)?;
            }
        } else {
            for &(_, n) in &scan.damaged {
                skipped.add(n as u64);
            }
            count_skipped(REASON_DAMAGED, skipped.bytes, skipped.regions);
            let aside = move_aside(dir, &path, &bytes, &scan.records)?;
            let first = scan.damaged.first().map_or(0, |&(o, _)| o);
            tracing::error!(path = %path.display(), moved_to = %aside.display(),
                damaged_regions = skipped.regions, damaged_bytes = skipped.bytes, first_damage_at = first,
                intact_records = scan.records.len(),
                "SPOOL DAMAGED: the unreadable regions are skipped and their writes lost; every intact record is kept in a fresh spool and the damaged file is moved aside");
            drop(file);
            file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io)?;
            len = file.metadata().map_err(io)?.len();
        }
        if len > 0 {
            tracing::warn!(path = %path.display(), bytes = len, records = scan.records.len(),
                "spool: writes held while the store was unreachable will be replayed");
        }
        Ok(Spool {
            path,
            file,
            len,
            read: 0,
            max_bytes,
            skipped,
        })
    }

    /// Nothing left to replay.
    pub fn is_empty(&self) -> bool {
        self.read >= self.len
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// What was skipped since the last call (at open or during replay), and resets it.
    pub fn take_skipped(&mut self) -> Skipped {
        std::mem::take(&mut self.skipped)
    }

    /// Appends `items` as one record and syncs it to disk.
    pub fn append(&mut self, items: &[WriteItem]) -> Result<(), Error> {
        let batch = BatchRef {
            version: VERSION,
            items: items
                .iter()
                .map(|i| ItemRef {
                    readings: &i.readings,
                    rejected: &i.rejected,
                    presence: &i.presence,
                    alerts: &i.alerts,
                    rule_states: &i.rule_states,
                    record_window: &i.record_window,
                    record_window_reset: &i.record_window_reset,
                })
                .collect(),
        };
        let payload = bincode::serde::encode_to_vec(&batch, bincode::config::standard())
            .map_err(|e| Error::Encode(e.to_string()))?;
        let record_len = (HEADER + payload.len()) as u64;
        if self.len + record_len > self.max_bytes || payload.len() > MAX_RECORD {
            return Err(Error::Full {
                size: self.len,
                max: self.max_bytes,
            });
        }
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&MAGIC);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let written = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut what may have been half written, so the file stays a sequence of records.
            let _ = self.file.set_len(self.len);
            return Err(io(e));
        }
        self.len += record_len;
        Ok(())
    }

    /// The next record to replay, if any. Records were checked at open; damage that appeared
    /// since is skipped up to the next intact record (counted and logged).
    pub fn peek(&mut self) -> Result<Option<Replay>, Error> {
        while self.read < self.len {
            if let Some(replay) = self.read_record(self.read)? {
                return Ok(Some(replay));
            }
            let io = |source| Error::Io {
                path: self.path.clone(),
                source,
            };
            // Damaged since open: resynchronise on the next intact record.
            let mut rest = Vec::new();
            self.file.seek(SeekFrom::Start(self.read)).map_err(io)?;
            (&mut self.file)
                .take(self.len - self.read)
                .read_to_end(&mut rest)
                .map_err(io)?;
            let skip = next_record(&rest, 1).unwrap_or(rest.len()).max(1) as u64;
            let skip = skip.min(self.len - self.read);
            self.skipped.add(skip);
            count_skipped(REASON_DAMAGED, skip, 1);
            tracing::error!(path = %self.path.display(), offset = self.read, damaged_bytes = skip,
                "SPOOL DAMAGED during replay: an unreadable region is skipped up to the next intact record; its writes are lost");
            self.read += skip;
        }
        Ok(None)
    }

    /// As [`Spool::peek`], with the records that follow merged in until they hold `max_rows`
    /// readings or `max_bytes` of the file: the sink commits them in one transaction (one
    /// record per commit replayed an outage's spool at a few hundred readings a second into
    /// QuestDB). A damaged record ends the batch; the next `peek` deals with it.
    pub fn peek_many(&mut self, max_rows: usize, max_bytes: u64) -> Result<Option<Replay>, Error> {
        let Some(mut batch) = self.peek()? else {
            return Ok(None);
        };
        let start = self.read;
        let mut rows: usize = batch.items.iter().map(|i| i.readings.len()).sum();
        while rows < max_rows && batch.next - start < max_bytes && batch.next < self.len {
            let Some(more) = self.read_record(batch.next)? else {
                break;
            };
            rows += more.items.iter().map(|i| i.readings.len()).sum::<usize>();
            batch.items.extend(more.items);
            batch.next = more.next;
        }
        Ok(Some(batch))
    }

    /// The record at `at`, or `None` if it is damaged.
    fn read_record(&mut self, at: u64) -> Result<Option<Replay>, Error> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let mut header = [0u8; HEADER];
        self.file.seek(SeekFrom::Start(at)).map_err(io)?;
        if self.file.read_exact(&mut header).is_err() {
            return Ok(None);
        }
        let Some((len, crc)) = parse_header(&header) else {
            return Ok(None);
        };
        let next = at + (HEADER + len) as u64;
        if next > self.len {
            return Ok(None);
        }
        let mut payload = vec![0u8; len];
        if self.file.read_exact(&mut payload).is_err() {
            return Ok(None);
        }
        Ok(decode(&payload, crc).map(|items| Replay { items, next }))
    }

    /// Marks replay done up to `next` (from [`Spool::peek`]); empties the file once all of it
    /// is replayed.
    pub fn advance(&mut self, next: u64) -> Result<(), Error> {
        self.read = next;
        if self.read >= self.len {
            self.file
                .set_len(0)
                .and_then(|()| self.file.sync_all())
                .map_err(|source| Error::Io {
                    path: self.path.clone(),
                    source,
                })?;
            self.len = 0;
            self.read = 0;
        }
        Ok(())
    }
}

/// Keeps the damaged file as `spool.log.damaged-<time>` (a hard link, or a copy) and replaces
/// `spool.log` by a fresh file of the intact `records` of `bytes`. Crash-safe: the fresh file
/// is complete and synced before it atomically replaces the damaged one, which is only ever
/// linked or copied, so a crash at any step leaves either file readable at the next open.
fn move_aside(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    records: &[(usize, usize)],
) -> Result<PathBuf, Error> {
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| Error::Io { path: p, source }
    };
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let mut aside = dir.join(format!("{FILE}.damaged-{stamp}"));
    let mut n = 1;
    while aside.exists() {
        aside = dir.join(format!("{FILE}.damaged-{stamp}-{n}"));
        n += 1;
    }
    let fresh = dir.join(format!("{FILE}.fresh"));
    {
        let mut out = File::create(&fresh).map_err(io(&fresh))?;
        for &(at, len) in records {
            if let Some(record) = bytes.get(at..at + len) {
                out.write_all(record).map_err(io(&fresh))?;
            }
        }
        out.sync_all().map_err(io(&fresh))?;
    }
    if std::fs::hard_link(path, &aside).is_err() {
        std::fs::write(&aside, bytes).map_err(io(&aside))?;
        File::open(&aside)
            .and_then(|f| f.sync_all())
            .map_err(io(&aside))?;
    }
    std::fs::rename(&fresh, path).map_err(io(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(aside)
}

fn parse_header(header: &[u8]) -> Option<(usize, u32)> {
    if header.get(..4)? != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header.get(4..8)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header.get(8..12)?.try_into().ok()?);
    (len <= MAX_RECORD).then_some((len, crc))
}

fn decode(payload: &[u8], crc: u32) -> Option<Vec<WriteItem>> {
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let config = bincode::config::standard().with_limit::<MAX_RECORD>();
    // `version` is the first byte (bincode writes a u8 as it is).
    let items: Vec<Item> = match *payload.first()? {
        VERSION => {
            let (batch, _): (Batch<Item>, usize) =
                bincode::serde::decode_from_slice(payload, config).ok()?;
            batch.items
        }
        VERSION_2 => {
            let (batch, _): (Batch<ItemV2>, usize) =
                bincode::serde::decode_from_slice(payload, config).ok()?;
            batch.items.into_iter().map(Item::from).collect()
        }
        VERSION_1 => {
            let (batch, _): (Batch<ItemV1>, usize) =
                bincode::serde::decode_from_slice(payload, config).ok()?;
            batch.items.into_iter().map(Item::from).collect()
        }
        _ => return None,
    };
    Some(items.into_iter().map(WriteItem::from).collect())
}

/// The length (header included) of the intact record at `at` of `bytes`, if there is one:
/// magic, a bounded length inside `bytes`, the CRC of the payload, and a payload that decodes.
fn record_at(bytes: &[u8], at: usize) -> Option<usize> {
    let (len, crc) = parse_header(bytes.get(at..at.checked_add(HEADER)?)?)?;
    let payload = bytes.get(at + HEADER..(at + HEADER).checked_add(len)?)?;
    decode(payload, crc).map(|_| HEADER + len)
}

/// The offset of the first intact record of `bytes` at or after `from`.
fn next_record(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(found) = bytes
        .get(i..)?
        .windows(MAGIC.len())
        .position(|w| w == MAGIC)
    {
        let at = i + found;
        if record_at(bytes, at).is_some() {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// The tail from a failed record to the end is what a crash during an append leaves: the
/// start of a record (a magic prefix, or a plausible header whose payload runs past the end).
fn is_torn(rest: &[u8]) -> bool {
    if rest.len() < HEADER {
        return MAGIC.starts_with(rest.get(..rest.len().min(MAGIC.len())).unwrap_or(rest));
    }
    parse_header(rest).is_some_and(|(len, _)| HEADER + len > rest.len())
}

/// What [`scan`] found: intact records and unreadable regions, as (offset, length).
#[derive(Debug, Default)]
struct Scan {
    records: Vec<(usize, usize)>,
    damaged: Vec<(usize, usize)>,
    torn: Option<(usize, usize)>,
}

/// Walks `bytes` record by record; where one fails its checks, resynchronises on the next
/// intact record (the bytes in between are one damaged region). An unreadable end that looks
/// like the start of a record is a torn tail; any other unreadable end is damage.
fn scan(bytes: &[u8]) -> Scan {
    let mut out = Scan::default();
    let mut at = 0usize;
    while at < bytes.len() {
        if let Some(len) = record_at(bytes, at) {
            out.records.push((at, len));
            at += len;
            continue;
        }
        match next_record(bytes, at + 1) {
            Some(next) => {
                out.damaged.push((at, next - at));
                at = next;
            }
            None => {
                let rest = bytes.get(at..).unwrap_or_default();
                if is_torn(rest) {
                    out.torn = Some((at, rest.len()));
                } else {
                    out.damaged.push((at, rest.len()));
                }
                break;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::telemetry::{Status, Timestamp};

    fn item(value: f64) -> WriteItem {
        WriteItem {
            readings: vec![Reading {
                station: "S".into(),
                zone: "Z".into(),
                param: "COD".into(),
                ts: Timestamp::from_millis(1_000),
                value,
                status: Status::Measuring,
            }],
            rule_states: vec![("S".into(), vec![1, 2, 3])],
            ..WriteItem::default()
        }
    }

    fn values(spool: &mut Spool) -> Vec<f64> {
        let mut out = Vec::new();
        while let Some(r) = spool.peek().unwrap() {
            out.extend(r.items.iter().map(|i| i.readings[0].value));
            spool.advance(r.next).unwrap();
        }
        out
    }

    #[test]
    fn consecutive_records_are_replayed_together_up_to_the_row_and_byte_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for v in 1..=5 {
            s.append(&[item(f64::from(v))]).unwrap();
        }
        let first = s.peek_many(3, u64::MAX).unwrap().unwrap();
        let got: Vec<f64> = first.items.iter().map(|i| i.readings[0].value).collect();
        assert_eq!(got, [1.0, 2.0, 3.0], "three records of one reading each");
        // Not advanced: the same batch again (a failed commit replays it whole).
        assert_eq!(s.peek_many(3, u64::MAX).unwrap().unwrap().next, first.next);
        s.advance(first.next).unwrap();
        let one = s.peek_many(100, 1).unwrap().unwrap();
        assert_eq!(
            one.items.len(),
            1,
            "the byte bound still lets one record through"
        );
        s.advance(one.next).unwrap();
        let rest = s.peek_many(100, u64::MAX).unwrap().unwrap();
        assert_eq!(rest.items[0].readings[0].value, 5.0);
        s.advance(rest.next).unwrap();
        assert!(s.is_empty());
        assert!(s.peek_many(100, u64::MAX).unwrap().is_none());
    }

    #[test]
    fn records_come_back_in_order_and_the_file_empties_once_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(s.is_empty());
        s.append(&[item(1.0), item(2.0)]).unwrap();
        s.append(&[item(3.0)]).unwrap();
        assert!(!s.is_empty());
        let mut reopened = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(values(&mut reopened), [1.0, 2.0, 3.0]);
        assert!(reopened.is_empty());
        assert_eq!(std::fs::metadata(dir.path().join(FILE)).unwrap().len(), 0);
    }

    #[test]
    fn a_record_window_comes_back_with_its_item() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let mut counters = crate::security::sequence::Sequences::new();
        let station: Arc<str> = "S".into();
        counters.check(&station, 41);
        counters.check(&station, 43);
        let window = *counters.window("S").unwrap();
        let mut with_window = item(1.0);
        with_window.record_window = Some((station.clone(), window));
        s.append(&[with_window]).unwrap();
        let replay = Spool::open(dir.path(), 1 << 20)
            .unwrap()
            .peek()
            .unwrap()
            .unwrap();
        assert_eq!(replay.items[0].record_window, Some((station, window)));
    }

    #[test]
    fn a_record_window_reset_comes_back_with_its_item_and_version_2_records_still_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let station: Arc<str> = "S".into();
        let mut reset = item(1.0);
        reset.record_window_reset = Some(station.clone());
        s.append(&[reset]).unwrap();
        let replay = Spool::open(dir.path(), 1 << 20)
            .unwrap()
            .peek()
            .unwrap()
            .unwrap();
        assert_eq!(replay.items[0].record_window_reset, Some(station));

        #[derive(Serialize)]
        struct ItemV2<'a> {
            readings: &'a [Reading],
            rejected: Option<Rejected>,
            presence: Option<PresenceUpdate>,
            alerts: Vec<Alert>,
            rule_states: Vec<(Arc<str>, Vec<u8>)>,
            record_window: Option<(Arc<str>, Window)>,
        }
        let old = item(8.0);
        let batch = (
            VERSION_2,
            vec![ItemV2 {
                readings: &old.readings,
                rejected: None,
                presence: None,
                alerts: Vec::new(),
                rule_states: Vec::new(),
                record_window: None,
            }],
        );
        let payload = bincode::serde::encode_to_vec(&batch, bincode::config::standard()).unwrap();
        let mut record = MAGIC.to_vec();
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), record).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            s.peek().unwrap().unwrap().items[0].record_window_reset,
            None
        );
        assert_eq!(values(&mut s), [8.0]);
    }

    #[test]
    fn a_record_written_by_version_1_is_still_replayed() {
        #[derive(Serialize)]
        struct ItemV1<'a> {
            readings: &'a [Reading],
            rejected: Option<Rejected>,
            presence: Option<PresenceUpdate>,
            alerts: Vec<Alert>,
            rule_states: Vec<(Arc<str>, Vec<u8>)>,
        }
        let old = item(7.0);
        let batch = (
            VERSION_1,
            vec![ItemV1 {
                readings: &old.readings,
                rejected: None,
                presence: None,
                alerts: Vec::new(),
                rule_states: old.rule_states.clone(),
            }],
        );
        let payload = bincode::serde::encode_to_vec(&batch, bincode::config::standard()).unwrap();
        let mut record = MAGIC.to_vec();
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), record).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let replay = s.peek().unwrap().unwrap();
        assert_eq!(replay.items[0].rule_states, old.rule_states);
        assert_eq!(replay.items[0].record_window, None);
        assert_eq!(values(&mut s), [7.0]);
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut record = MAGIC.to_vec();
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        record.extend_from_slice(payload);
        record
    }

    fn rejection(detail: &str) -> Rejection {
        Rejection {
            reason: crate::quarantine::Reason::OutOfRange,
            station: Some("S".into()),
            param: Some("COD".into()),
            ts: None,
            value: Some(9e9),
            detail: detail.into(),
        }
    }

    #[test]
    fn a_rejection_comes_back_with_its_whole_payload() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let payload = [0u8, 1, 2, 0xff, b'\n'];
        let rejected = Rejected::new(
            Timestamp::from_millis(5),
            "t",
            Some(Encoding::Bincode),
            Some("S".into()),
            &payload,
            16,
            [rejection("a"), rejection("b")],
        );
        let mut with_rejection = item(1.0);
        with_rejection.rejected = Some(rejected.clone());
        s.append(&[with_rejection]).unwrap();
        let replay = Spool::open(dir.path(), 1 << 20)
            .unwrap()
            .peek()
            .unwrap()
            .unwrap();
        assert_eq!(replay.items[0].rejected, Some(rejected));
    }

    #[test]
    fn a_rejection_written_by_version_2_is_replayed_as_one_entry_without_payload() {
        #[derive(Serialize)]
        struct RejectedV2 {
            received_at: Timestamp,
            topic: String,
            encoding: Option<Encoding>,
            excerpt: String,
            rejections: Vec<Rejection>,
        }
        #[derive(Serialize)]
        struct ItemV2 {
            readings: Vec<Reading>,
            rejected: Option<RejectedV2>,
            presence: Option<PresenceUpdate>,
            alerts: Vec<Alert>,
            rule_states: Vec<(Arc<str>, Vec<u8>)>,
            record_window: Option<(Arc<str>, Window)>,
        }
        let batch = (
            VERSION_2,
            vec![ItemV2 {
                readings: Vec::new(),
                rejected: Some(RejectedV2 {
                    received_at: Timestamp::from_millis(5),
                    topic: "t".into(),
                    encoding: Some(Encoding::Json),
                    excerpt: "{bad".into(),
                    rejections: vec![rejection("a"), rejection("b"), rejection("c")],
                }),
                presence: None,
                alerts: Vec::new(),
                rule_states: Vec::new(),
                record_window: None,
            }],
        );
        let payload = bincode::serde::encode_to_vec(&batch, bincode::config::standard()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), framed(&payload)).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let replay = s.peek().unwrap().unwrap();
        let rejected = replay.items[0].rejected.as_ref().unwrap();
        assert_eq!(rejected.total(), 3);
        assert_eq!(rejected.samples[2].detail, "c");
        assert_eq!(rejected.excerpt, "{bad");
        assert_eq!(rejected.station.as_deref(), Some("S"));
        assert_eq!(rejected.payload, None, "version 2 did not keep it");
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&[item(1.0)]).unwrap();
        s.append(&[item(2.0)]).unwrap();
        let path = dir.path().join(FILE);
        let full = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 5).unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&[item(3.0)]).unwrap();
        assert_eq!(values(&mut s), [1.0, 3.0]);
    }

    #[test]
    fn a_corrupt_record_in_the_middle_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for v in [1.0, 2.0, 3.0] {
            s.append(&[item(v)]).unwrap();
        }
        drop(s);
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let record = bytes.len() / 3;
        bytes[record + HEADER + 3] ^= 0xff; // a flipped byte in the second payload
        std::fs::write(&path, &bytes).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(values(&mut s), [1.0, 3.0]);
    }

    #[test]
    fn garbage_never_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            b"QSP1\xff\xff\xff\xffgarbage and more garbage",
        )
        .unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(s.is_empty());
        s.append(&[item(9.0)]).unwrap();
        assert_eq!(values(&mut s), [9.0]);
    }

    /// Appends `n` records of one item each, valued 0, 1, 2, ...
    fn spool_with(dir: &Path, n: usize) {
        let mut s = Spool::open(dir, 1 << 30).unwrap();
        for v in 0..n {
            s.append(&[item(v as f64)]).unwrap();
        }
    }

    /// Overwrites `len` bytes at `offset` of the spool file with pseudo-random bytes.
    fn damage(dir: &Path, offset: usize, len: usize) {
        let path = dir.join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for b in &mut bytes[offset..offset + len] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(&path, &bytes).unwrap();
    }

    /// The first `len` bytes [`damage`] writes at an offset.
    fn damaged_head(len: usize) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), vec![0u8; len]).unwrap();
        damage(dir.path(), 0, len);
        std::fs::read(dir.path().join(FILE)).unwrap()
    }

    fn damaged_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("spool.log.damaged-")
            })
            .collect()
    }

    /// Asserts `got` is 0..n without at most `lost` values, in order.
    fn assert_all_but(got: &[f64], n: usize, lost: usize) {
        assert!(
            got.len() + lost >= n && got.len() < n,
            "{} of {n} replayed",
            got.len()
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order");
        assert!(got.iter().all(|v| *v >= 0.0 && *v < n as f64));
    }

    #[test]
    fn a_damaged_header_at_the_start_loses_only_the_records_it_overwrote() {
        let dir = tempfile::tempdir().unwrap();
        spool_with(dir.path(), 5_000);
        damage(dir.path(), 0, 64);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        let got = values(&mut s);
        assert_all_but(&got, 5_000, 3);
        assert_eq!(got.last(), Some(&4_999.0));
        let skipped = s.take_skipped();
        assert_eq!(skipped.regions, 1);
        assert!(skipped.bytes >= 64, "{skipped:?}");
        let aside = damaged_files(dir.path());
        assert_eq!(aside.len(), 1, "the damaged file is kept aside");
        assert_eq!(
            &std::fs::read(&aside[0]).unwrap()[..64],
            &damaged_head(64)[..]
        );
    }

    #[test]
    fn a_damaged_region_in_the_middle_is_skipped_and_every_intact_record_after_it_replayed() {
        let dir = tempfile::tempdir().unwrap();
        spool_with(dir.path(), 1_000);
        let size = std::fs::metadata(dir.path().join(FILE)).unwrap().len() as usize;
        damage(dir.path(), size / 2, 200);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        let got = values(&mut s);
        assert_all_but(&got, 1_000, 6);
        assert_eq!(got.first(), Some(&0.0));
        assert_eq!(got.last(), Some(&999.0));
        assert_eq!(s.take_skipped().regions, 1);
    }

    #[test]
    fn writes_spooled_after_a_damaged_file_go_to_a_fresh_file_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        spool_with(dir.path(), 100);
        damage(dir.path(), 0, 64);
        // A first run opens the damaged spool, replays nothing (store still down) and spools
        // more; a restart must still find all of it.
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        for v in 100..1_100 {
            s.append(&[item(f64::from(v))]).unwrap();
        }
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        let got = values(&mut s);
        assert_all_but(&got, 1_100, 3);
        assert!(got.contains(&99.0));
        assert_eq!(got.iter().filter(|v| **v >= 100.0).count(), 1_000);
        assert_eq!(damaged_files(dir.path()).len(), 1);
    }

    #[test]
    fn damage_that_appears_while_running_is_skipped_up_to_the_next_intact_record() {
        let dir = tempfile::tempdir().unwrap();
        spool_with(dir.path(), 100);
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        damage(dir.path(), 0, 64);
        let got = values(&mut s);
        assert_all_but(&got, 100, 3);
        assert_eq!(got.last(), Some(&99.0));
        assert_eq!(s.take_skipped().regions, 1);
    }

    #[test]
    fn a_torn_last_record_is_cut_without_moving_the_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        spool_with(dir.path(), 10);
        let path = dir.path().join(FILE);
        let full = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 5).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 30).unwrap();
        assert!(damaged_files(dir.path()).is_empty());
        let skipped = s.take_skipped();
        assert_eq!(
            (skipped.regions, skipped.bytes),
            (0, 0),
            "a torn tail is no damage"
        );
        assert!(skipped.torn_bytes > 0, "but it is counted");
        assert_eq!(values(&mut s), (0..9).map(f64::from).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_spool_refuses_the_batch_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&[item(1.0)]).unwrap();
        let one = s.size();
        drop(s);
        let mut s = Spool::open(dir.path(), one + one / 2).unwrap();
        let err = s.append(&[item(2.0)]).unwrap_err();
        assert!(matches!(err, Error::Full { .. }), "{err}");
        assert_eq!(values(&mut s), [1.0]);
    }
}
