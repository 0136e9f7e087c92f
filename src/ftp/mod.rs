//! Circular 10 files: the FTP/FTPS endpoint where station data loggers upload their `.txt`
//! files, and the watched directory for centers that keep their own FTP server.
//!
//! | file | job |
//! |---|---|
//! | [`name`] | the file name `<PROVINCE>_<FACILITY>_<STATION>_<YYYYMMDDhhmmss>.txt` and its station |
//! | [`intake`] | one file in: checks, the pipeline, durable outcome (shared by both sources) |
//! | [`auth`] | FTP logins against `devices.toml` |
//! | [`lockout`] | failed logins: a block after too many, shared by all sessions |
//! | [`backend`] | libunftp storage backend: a write-only drop box |
//! | [`server`] | the listener, session bound, ordered stop |
//! | [`watch`] | the watched directory (polling, crash-safe moves) |
//!
//! # Guarantee
//! The final reply of an upload (226) is sent only once every reading of the file is durably
//! stored, or the file durably quarantined: libunftp sends it when the backend's `put`
//! returns, and `put` returns after [`intake::Intake::ingest`], which waits for the store.
//! A re-sent file is stored once (readings are keyed by `(station, param, ts)`).
//!
//! # Replies to a refused upload
//! libunftp 0.24 (the newest release) answers each error kind of a storage backend with a
//! fixed text (`control_loop.rs`, `ControlChanMsg::StorageError`: the error's own message
//! is dropped), so the reply code tells the reason class; `SITE REASON`, a SITE command
//! (the hook libunftp offers), answers `200 <file>: <label>: <reason>` for the last refused
//! upload of the session; the quarantine entry (`GET /api/v1/quarantine`; the whole file from
//! `GET /api/v1/quarantine/{id}/payload`) and the log have it too:
//!
//! | reply | reason (`SITE REASON` label) |
//! |---|---|
//! | `553 File name not allowed` | not a Circular 10 name (`file_name`), or it names no station of the registry (`unknown_station`) |
//! | `550 Permission denied` | the device may not upload for that station (`not_authorized`); APPE, DELE, RNFR, RMD |
//! | `552 Exceeded storage allocation` | larger than `ftp.max_file_bytes` (`too_large`) |
//! | `551 Page type unknown` | no reading of the file could be used (`unusable`: the first rejection) |
//! | `451 Local error` | not durable (`not_durable`: store failure) or quantrac stopping (`stopping`): send it again |
//! | `530` | wrong user or password, or blocked after `ftp.failed_logins_max` failures ([`lockout`]) |

pub mod auth;
pub mod backend;
pub mod intake;
pub mod lockout;
pub mod name;
pub mod server;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use intake::{Accepted, Intake, Refusal, SharedDevices, Source};
pub use server::FtpServer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen for FTP on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("ftp.tls: {0}")]
    Tls(#[from] crate::security::tls::TlsError),
    #[error("cannot set up the FTP server: {0}")]
    Build(String),
    #[error("ingest_dir: cannot create {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
