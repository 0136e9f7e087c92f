//! Circular 10 files: the FTP/FTPS endpoint where station data loggers upload their `.txt`
//! files, and the watched directory for centers that keep their own FTP server.
//!
//! | file | job |
//! |---|---|
//! | [`name`] | the file name `<PROVINCE>_<FACILITY>_<STATION>_<YYYYMMDDhhmmss>.txt` and its station |
//! | [`intake`] | one file in: checks, the pipeline, durable outcome (shared by both sources) |
//! | [`auth`] | FTP logins against `devices.toml` |
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
//! libunftp 0.24 answers each error kind with a fixed text, so the reply code tells the
//! reason and the quarantine entry (`GET /api/v1/quarantine`; the whole file from
//! `GET /api/v1/quarantine/{id}/payload`) and the log tell the details:
//!
//! | reply | reason |
//! |---|---|
//! | `553 File name not allowed` | not a Circular 10 name, or it names no station of the registry |
//! | `550 Permission denied` | the device may not upload for that station; APPE, DELE, RNFR, RMD |
//! | `552 Exceeded storage allocation` | larger than `ftp.max_file_bytes` |
//! | `551 Page type unknown` | no reading of the file could be used (undecodable, or all rejected) |
//! | `451 Local error` | not durable (store failure) or quantrac stopping: send it again |
//! | `530` | wrong user or password |

pub mod auth;
pub mod backend;
pub mod intake;
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
