//! The FTP storage backend: a write-only drop box in front of the [`Intake`].
//!
//! | command | behaviour |
//! |---|---|
//! | STOR | the file is read (at most `ftp.max_file_bytes` + 1 bytes) and ingested; the reply waits until it is durable (see the table in [`super`]) |
//! | APPE, REST + STOR | refused (550): a file is one upload |
//! | CWD, MKD | accepted: any directory "exists", so loggers that upload into a station folder work; the folder is not used |
//! | LIST, NLST, MLSD | an empty listing |
//! | SIZE, MDTM, RETR | 550 (no file is ever there to read) |
//! | DELE, RMD, RNFR/RNTO | 550 permission denied |
//! | SITE REASON | `200 <file>: <reason>`: why the last refused upload of this session was refused (see [`super`]) |

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use libunftp::options::{Reply, ReplyCode, SiteCommandContext, SiteCommandHandler};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use unftp_core::storage::{Error, ErrorKind, Fileinfo, Metadata, Result, StorageBackend};

use super::auth::DeviceUser;
use super::intake::{Intake, Refusal, Source};

/// Longest reason `SITE REASON` replies with (one reply line; the quarantine entry has all).
const REASON_CHARS: usize = 400;

/// The last refused upload of one session, as `SITE REASON` tells it.
pub type LastRefusal = Arc<Mutex<Option<String>>>;

/// One per session (libunftp makes one per connection); shares the intake.
#[derive(Clone)]
pub struct DropBox {
    pub intake: Arc<Intake>,
    pub max_file_bytes: usize,
    pub last_refusal: LastRefusal,
}

impl Debug for DropBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropBox")
            .field("max_file_bytes", &self.max_file_bytes)
            .finish()
    }
}

/// What the drop box says about a path: every directory exists, no file does.
#[derive(Debug, Clone, Copy)]
pub struct Entry;

impl Metadata for Entry {
    fn len(&self) -> u64 {
        0
    }
    fn is_dir(&self) -> bool {
        true
    }
    fn is_file(&self) -> bool {
        false
    }
    fn is_symlink(&self) -> bool {
        false
    }
    fn modified(&self) -> Result<SystemTime> {
        Ok(SystemTime::UNIX_EPOCH)
    }
    fn gid(&self) -> u32 {
        0
    }
    fn uid(&self) -> u32 {
        0
    }
}

/// The FTP reply class of a refusal. libunftp 0.24 answers each kind with a fixed text
/// (e.g. `553 File name not allowed`), so the code names the reason; the full reason is in
/// the quarantine entry and the log.
pub fn reply_kind(refusal: &Refusal) -> ErrorKind {
    match refusal {
        Refusal::FileName(_) | Refusal::UnknownStation(_) => ErrorKind::FileNameNotAllowedError,
        Refusal::NotAuthorized(_) => ErrorKind::PermissionDenied,
        Refusal::TooLarge { .. } => ErrorKind::ExceededStorageAllocationError,
        Refusal::Unusable(_) => ErrorKind::PageTypeUnknown,
        Refusal::NotDurable(_) | Refusal::Stopping => ErrorKind::LocalError,
    }
}

/// `<file>: <refusal>` on one safe line: no control character (a CR LF would end the
/// reply and forge the next), at most [`REASON_CHARS`] characters.
pub fn reason_line(file: &str, refusal: &Refusal) -> String {
    let text = format!("{file}: {}: {refusal}", refusal.label());
    let safe = crate::text::escape(&text);
    match safe.char_indices().nth(REASON_CHARS) {
        Some((cut, _)) => format!("{}...", &safe[..cut]),
        None => safe.into_owned(),
    }
}

/// `SITE REASON`: the reason for the last refused upload of the session. libunftp 0.24
/// replies to a refused STOR with a fixed text per reply code and offers no way for a
/// storage backend to word it; this is the hook it does offer.
#[derive(Debug)]
pub struct SiteReason(pub LastRefusal);

#[async_trait]
impl SiteCommandHandler<DropBox, DeviceUser> for SiteReason {
    async fn handle(&self, _context: &SiteCommandContext<DropBox, DeviceUser>) -> Reply {
        match self.0.lock().clone() {
            Some(line) => Reply::new_with_string(ReplyCode::CommandOkay, line),
            None => Reply::new(
                ReplyCode::CommandOkay,
                "no upload of this session was refused",
            ),
        }
    }
}

fn denied() -> Error {
    Error::from(ErrorKind::PermissionDenied)
}

#[async_trait]
impl StorageBackend<DeviceUser> for DropBox {
    type Metadata = Entry;

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &DeviceUser,
        path: P,
    ) -> Result<Entry> {
        // A name with an extension is taken for a file (SIZE/MDTM before an upload): absent.
        match path.as_ref().extension() {
            Some(_) => Err(Error::from(ErrorKind::PermanentFileNotAvailable)),
            None => Ok(Entry),
        }
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &DeviceUser,
        _path: P,
    ) -> Result<Vec<Fileinfo<std::path::PathBuf, Entry>>> {
        Ok(Vec::new())
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &DeviceUser,
        _path: P,
        _start_pos: u64,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>> {
        Err(Error::from(ErrorKind::PermanentFileNotAvailable))
    }

    async fn put<
        P: AsRef<Path> + Send + Debug,
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        user: &DeviceUser,
        input: R,
        path: P,
        start_pos: u64,
    ) -> Result<u64> {
        if start_pos != 0 {
            return Err(denied());
        }
        let file = path
            .as_ref()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let limit = self.max_file_bytes as u64 + 1;
        let mut body = Vec::with_capacity(4096);
        input
            .take(limit)
            .read_to_end(&mut body)
            .await
            .map_err(Error::from)?;
        let truncated = (body.len() > self.max_file_bytes).then(|| {
            body.truncate(self.max_file_bytes);
            self.max_file_bytes
        });
        let received = body.len() as u64;
        match self
            .intake
            .ingest(Source::Ftp(&user.0), &file, &body, truncated)
            .await
        {
            Ok(_) => Ok(received),
            Err(refusal) => {
                *self.last_refusal.lock() = Some(reason_line(&file, &refusal));
                Err(Error::new(reply_kind(&refusal), refusal))
            }
        }
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, _user: &DeviceUser, _path: P) -> Result<()> {
        Err(denied())
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(&self, _user: &DeviceUser, _path: P) -> Result<()> {
        Ok(())
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &DeviceUser,
        _from: P,
        _to: P,
    ) -> Result<()> {
        Err(denied())
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(&self, _user: &DeviceUser, _path: P) -> Result<()> {
        Err(denied())
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(&self, _user: &DeviceUser, _path: P) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_line_is_one_line_of_bounded_length() {
        let refusal = Refusal::Unusable("line 1: bad\r\n226 forged".to_owned());
        let line = reason_line("DN_X_Y_20260101000000.txt", &refusal);
        assert_eq!(
            line,
            "DN_X_Y_20260101000000.txt: unusable: no usable reading: line 1: bad\\r\\n226 forged"
        );
        let long = Refusal::Unusable("x".repeat(5000));
        assert_eq!(
            reason_line("f.txt", &long).chars().count(),
            REASON_CHARS + 3
        );
    }
}
