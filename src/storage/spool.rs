//! The spool: a local append-only log that holds writes while the store is unreachable.
//!
//! # On-disk format
//! One file, `<dir>/spool.log`, a sequence of records:
//!
//! ```text
//! record  := magic:[u8; 4] = "QSP1"  len:u32 LE  crc:u32 LE  payload:[u8; len]
//! payload := bincode 2 standard() of Batch { version: u8 = 2, items: Vec<Item> }
//! ```
//!
//! `crc` is the CRC-32 (IEEE) of `payload`; an `Item` is a [`WriteItem`] without its
//! durability handle (readings, rejections, presence, alerts, rule state, record window).
//! Version 1 items (without the record window) are still read, so that a spool left by an
//! older build is replayed after an upgrade.
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
//! - **Damage is skipped, never fatal.** At open, a torn tail (a crash mid-append) or a
//!   corrupt record is detected by its length, magic or CRC, logged with its offset and size,
//!   and skipped; the file is cut at a torn tail so appends continue cleanly.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{PresenceUpdate, WriteItem};
use crate::alerts::Alert;
use crate::quarantine::Rejected;
use crate::security::sequence::Window;
use crate::telemetry::Reading;

/// File name inside the spool directory.
pub const FILE: &str = "spool.log";
const MAGIC: [u8; 4] = *b"QSP1";
const HEADER: usize = 12;
const VERSION: u8 = 2;
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
}

#[derive(Deserialize)]
struct Item {
    readings: Vec<Reading>,
    rejected: Option<Rejected>,
    presence: Option<PresenceUpdate>,
    alerts: Vec<Alert>,
    rule_states: Vec<(Arc<str>, Vec<u8>)>,
    record_window: Option<(Arc<str>, Window)>,
}

/// An item as version 1 wrote it.
#[derive(Deserialize)]
struct ItemV1 {
    readings: Vec<Reading>,
    rejected: Option<Rejected>,
    presence: Option<PresenceUpdate>,
    alerts: Vec<Alert>,
    rule_states: Vec<(Arc<str>, Vec<u8>)>,
}

impl From<ItemV1> for Item {
    fn from(i: ItemV1) -> Item {
        Item {
            readings: i.readings,
            rejected: i.rejected,
            presence: i.presence,
            alerts: i.alerts,
            rule_states: i.rule_states,
            record_window: None,
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

/// The spool file and the replay position.
pub struct Spool {
    path: PathBuf,
    file: File,
    /// Bytes in the file (all valid records).
    len: u64,
    /// Where replay continues.
    read: u64,
    max_bytes: u64,
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

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, checking every record.
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
        let valid_end = check(&bytes, &path);
        if (valid_end as usize) < bytes.len() {
            tracing::warn!(path = %path.display(), offset = valid_end, dropped = bytes.len() as u64 - valid_end,
                "spool: torn or corrupt tail skipped (a crash during an append?)");
            file.set_len(valid_end).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        if valid_end > 0 {
            tracing::warn!(path = %path.display(), bytes = valid_end,
                "spool: writes held while the store was unreachable will be replayed");
        }
        Ok(Spool {
            path,
            file,
            len: valid_end,
            read: 0,
            max_bytes,
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

    /// The next record to replay, if any (records that fail their checks are skipped).
    pub fn peek(&mut self) -> Result<Option<Replay>, Error> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        while self.read < self.len {
            let mut header = [0u8; HEADER];
            self.file.seek(SeekFrom::Start(self.read)).map_err(io)?;
            self.file.read_exact(&mut header).map_err(io)?;
            let Some((len, crc)) = parse_header(&header) else {
                // Records were checked at open and are written by us alone: damage since
                // then is beyond repair. Skip the rest rather than loop on it.
                tracing::error!(path = %self.path.display(), offset = self.read, lost = self.len - self.read,
                    "spool: damaged record header; the rest of the spool is skipped");
                self.read = self.len;
                break;
            };
            let mut payload = vec![0u8; len];
            self.file.read_exact(&mut payload).map_err(io)?;
            let next = self.read + (HEADER + len) as u64;
            match decode(&payload, crc) {
                Some(items) => return Ok(Some(Replay { items, next })),
                None => {
                    tracing::error!(path = %self.path.display(), offset = self.read, "spool: unreadable record skipped");
                    self.read = next;
                }
            }
        }
        Ok(None)
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
        VERSION_1 => {
            let (batch, _): (Batch<ItemV1>, usize) =
                bincode::serde::decode_from_slice(payload, config).ok()?;
            batch.items.into_iter().map(Item::from).collect()
        }
        _ => return None,
    };
    Some(items.into_iter().map(WriteItem::from).collect())
}

/// The end of the last valid record of `bytes`. A damaged record in the middle is skipped by
/// searching for the next record that checks out (logged); damage at the end is a torn tail.
fn check(bytes: &[u8], path: &Path) -> u64 {
    let mut at = 0usize;
    let mut end = 0usize;
    while at + HEADER <= bytes.len() {
        let good = parse_header(&bytes[at..at + HEADER]).and_then(|(len, crc)| {
            let payload = bytes.get(at + HEADER..at + HEADER + len)?;
            decode(payload, crc).map(|_| len)
        });
        match good {
            Some(len) => {
                at += HEADER + len;
                end = at;
            }
            None => {
                // Resynchronise on the next record that checks out, if any.
                let resume = (at + 1..bytes.len().saturating_sub(HEADER - 1)).find(|&i| {
                    bytes[i..].starts_with(&MAGIC)
                        && parse_header(&bytes[i..i + HEADER])
                            .and_then(|(len, crc)| {
                                bytes
                                    .get(i + HEADER..i + HEADER + len)
                                    .and_then(|p| decode(p, crc))
                            })
                            .is_some()
                });
                match resume {
                    Some(i) => {
                        tracing::error!(path = %path.display(), offset = at, skipped = i - at,
                            "spool: corrupt record skipped; the data in it is lost");
                        at = i;
                    }
                    None => break,
                }
            }
        }
    }
    end as u64
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
