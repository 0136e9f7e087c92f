//! The security database: API tokens (salted hashes only) and the audit log, in one SQLite
//! file of their own (`security.db`), shared by the server and the `quantrac token` command.
//!
//! Every call is a short blocking SQLite statement; async callers run them on the blocking
//! pool ([`tokio::task::spawn_blocking`]). The server looks a token up on every request, so a
//! revocation made by the command line takes effect at the next request. A token may expire
//! (`expires_at`); its `last_used_at` is kept to [`LAST_USED_GRANULARITY`], so that a busy
//! token costs a write a minute, not one per request.
//!
//! Recording a token's last use is bookkeeping: it never fails a request. When the write
//! fails (a full disk), the request goes on, the failure is counted
//! (`quantrac_security_db_write_errors_total`) and logged at most once a minute, and the
//! token's next attempt waits [`LAST_USED_GRANULARITY`] (remembered in memory), so that a full
//! disk costs no write attempt per request either. Only writes that are the point of a request
//! (creating a token, the audit entry of an action) fail it.
//!
//! The file is checked at open (`PRAGMA quick_check`, [`crate::storage::integrity`]): a
//! damaged security database stops the start, named.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::audit::{self, ChainCheck, Entry, NewEntry};
use super::token::{self, Presented};
use super::{AuthFailure, Error, Principal, Role};
use crate::telemetry::Timestamp;

/// The longest a token may be made to work for: 10 years (3,653 days).
pub const MAX_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3653 * 86_400);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('viewer', 'analyst', 'inspector', 'admin')),
    salt       BLOB    NOT NULL,
    hash       BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    revoked_at INTEGER,
    revoked_by TEXT
);
CREATE TRIGGER IF NOT EXISTS tokens_are_revoked_not_deleted BEFORE DELETE ON tokens
BEGIN SELECT RAISE(ABORT, 'tokens are revoked, never deleted'); END;
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    detail  TEXT    NOT NULL,
    address TEXT,
    hash    BLOB    NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

/// Version 1: token expiry and last use.
const V1: &str = "
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
";

/// How stale a token's `last_used_at` may be before a request updates it.
pub const LAST_USED_GRANULARITY: std::time::Duration = std::time::Duration::from_secs(60);

const TOKEN_COLUMNS: &str =
    "id, name, role, created_at, created_by, revoked_at, revoked_by, expires_at, last_used_at";

/// A token as listed (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub created_by: String,
    pub revoked_at: Option<Timestamp>,
    pub revoked_by: Option<String>,
    /// It stops working at this time, if set.
    pub expires_at: Option<Timestamp>,
    /// Its last successful use, to [`LAST_USED_GRANULARITY`].
    pub last_used_at: Option<Timestamp>,
}

/// How long the start-up integrity check of the security database may take, when opened
/// without a configured bound (the command line). The file is small: milliseconds.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Failed last-use writes are logged at most this often.
static LAST_USED_ERRORS: crate::log_limit::LogLimit =
    crate::log_limit::LogLimit::new(Duration::from_secs(60));

/// The tokens and the audit log. Cheap to clone (one shared connection).
#[derive(Clone)]
pub struct SecurityDb {
    conn: Arc<Mutex<Connection>>,
    /// When each token's last use was last written or tried (failed writes wait too).
    last_used: Arc<Mutex<HashMap<String, Timestamp>>>,
}

impl std::fmt::Debug for SecurityDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecurityDb")
    }
}

impl SecurityDb {
    /// Opens (creating if needed) the database at `path`, checked with
    /// [`DEFAULT_CHECK_TIMEOUT`].
    pub fn open(path: &Path) -> Result<SecurityDb, Error> {
        SecurityDb::open_checked(path, DEFAULT_CHECK_TIMEOUT)
    }

    /// Opens (creating if needed) the database at `path`; its `quick_check` may take at most
    /// `check_timeout` (zero: skipped). A damaged file is [`Error::Integrity`].
    pub fn open_checked(path: &Path, check_timeout: Duration) -> Result<SecurityDb, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Directory {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        crate::storage::integrity::quick_check(&conn, path, check_timeout)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < 1 {
            let tx = conn.transaction()?;
            tx.execute_batch(V1)?;
            tx.pragma_update(None, "user_version", 1)?;
            tx.commit()?;
        }
        Ok(SecurityDb {
            conn: Arc::new(Mutex::new(conn)),
            last_used: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Creates a token that does not expire; returns it (the only time its text exists) and
    /// its listing.
    pub fn create_token(
        &self,
        name: &str,
        role: Role,
        actor: &str,
        address: Option<&str>,
    ) -> Result<(String, TokenInfo), Error> {
        self.create_token_until(name, role, None, actor, address)
    }

    /// Creates a token that stops working at `expires_at` (if set: in the future, at most
    /// [`MAX_TOKEN_LIFETIME`] away). Names are 1 to 100 bytes without control characters.
    pub fn create_token_until(
        &self,
        name: &str,
        role: Role,
        expires_at: Option<Timestamp>,
        actor: &str,
        address: Option<&str>,
    ) -> Result<(String, TokenInfo), Error> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(Error::BadName);
        }
        if crate::text::has_unsafe(name) {
            return Err(Error::ControlCharacters);
        }
        let now = Timestamp::now();
        let latest = now.saturating_add(MAX_TOKEN_LIFETIME);
        if expires_at.is_some_and(|at| at <= now || at > latest) {
            return Err(Error::BadExpiry);
        }
        let generated = token::generate()?;
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO tokens (id, name, role, salt, hash, created_at, created_by, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                generated.id,
                name,
                role.as_str(),
                &generated.salt[..],
                &generated.hash[..],
                now.as_millis(),
                actor,
                expires_at.map(Timestamp::as_millis),
            ],
        )?;
        let until = expires_at.map_or_else(String::new, |at| {
            format!(
                ", expires {}",
                at.to_rfc3339(&chrono::Offset::fix(&chrono::Utc))
            )
        });
        append(
            &tx,
            now,
            &NewEntry {
                actor: actor.to_owned(),
                action: audit::Action::TokenCreated,
                target: generated.id.clone(),
                detail: format!("{role} token `{name}`{until}"),
                address: address.map(str::to_owned),
            },
        )?;
        tx.commit()?;
        let info = TokenInfo {
            id: generated.id,
            name: name.to_owned(),
            role,
            created_at: now,
            created_by: actor.to_owned(),
            revoked_at: None,
            revoked_by: None,
            expires_at,
            last_used_at: None,
        };
        Ok((generated.token, info))
    }

    /// Every token, newest first.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>, Error> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at DESC, id"
        ))?;
        let rows = stmt.query_map([], token_info)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    /// Revokes token `id`: it stops working at once.
    pub fn revoke_token(
        &self,
        id: &str,
        actor: &str,
        address: Option<&str>,
    ) -> Result<TokenInfo, Error> {
        let now = Timestamp::now();
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let found = tx
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
                [id],
                token_info,
            )
            .optional()?
            .transpose()?;
        let Some(mut info) = found else {
            return Err(Error::UnknownToken(id.to_owned()));
        };
        if info.revoked_at.is_some() {
            return Err(Error::AlreadyRevoked(id.to_owned()));
        }
        tx.execute(
            "UPDATE tokens SET revoked_at = ?2, revoked_by = ?3 WHERE id = ?1",
            params![id, now.as_millis(), actor],
        )?;
        append(
            &tx,
            now,
            &NewEntry {
                actor: actor.to_owned(),
                action: audit::Action::TokenRevoked,
                target: id.to_owned(),
                detail: format!("{} token `{}`", info.role, info.name),
                address: address.map(str::to_owned),
            },
        )?;
        tx.commit()?;
        info.revoked_at = Some(now);
        info.revoked_by = Some(actor.to_owned());
        Ok(info)
    }

    /// Checks a presented bearer token.
    pub fn authenticate(&self, presented: &str) -> Result<Result<Principal, AuthFailure>, Error> {
        self.authenticate_at(presented, Timestamp::now())
    }

    /// [`SecurityDb::authenticate`] at time `now`.
    pub fn authenticate_at(
        &self,
        presented: &str,
        now: Timestamp,
    ) -> Result<Result<Principal, AuthFailure>, Error> {
        let Some(p) = Presented::parse(presented) else {
            return Ok(Err(AuthFailure::Malformed));
        };
        let conn = self.conn.lock();
        let row = conn
            .query_row(
                "SELECT name, role, salt, hash, revoked_at, expires_at, last_used_at
                 FROM tokens WHERE id = ?1",
                [p.id],
                |r| {
                    Ok(Stored {
                        name: r.get(0)?,
                        role: r.get(1)?,
                        salt: r.get(2)?,
                        hash: r.get(3)?,
                        revoked: r.get::<_, Option<i64>>(4)?.is_some(),
                        expires_at: r.get::<_, Option<i64>>(5)?.map(Timestamp::from_millis),
                        last_used_at: r.get::<_, Option<i64>>(6)?.map(Timestamp::from_millis),
                    })
                },
            )
            .optional()?;
        let Some(stored) = row else {
            return Ok(Err(AuthFailure::UnknownToken));
        };
        if !token::matches(&stored.salt, p.secret, &stored.hash) {
            return Ok(Err(AuthFailure::WrongSecret));
        }
        if stored.revoked {
            return Ok(Err(AuthFailure::Revoked));
        }
        if stored.expires_at.is_some_and(|at| at <= now) {
            return Ok(Err(AuthFailure::Expired));
        }
        let role = stored
            .role
            .parse()
            .map_err(|_| Error::Corrupt("token role"))?;
        let stale = now.saturating_sub(LAST_USED_GRANULARITY);
        if stored.last_used_at.is_none_or(|at| at < stale) && self.due(p.id, stale, now) {
            // Bookkeeping: a failure (a full disk) is counted and logged, never the
            // request's failure.
            if let Err(e) = conn.execute(
                "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1",
                params![p.id, now.as_millis()],
            ) {
                metrics::counter!(crate::metrics::SECURITY_DB_WRITE_ERRORS_TOTAL).increment(1);
                if let Some(suppressed) = LAST_USED_ERRORS.admit() {
                    tracing::error!(error = %e, token = %p.id, suppressed,
                        "cannot record a token's last use in the security database; requests go on");
                }
            }
        }
        Ok(Ok(Principal {
            token_id: p.id.to_owned(),
            name: stored.name,
            role,
            address: None,
        }))
    }

    /// Whether token `id`'s last use should be written now: not tried since `stale`. Marks
    /// it tried at `now`.
    fn due(&self, id: &str, stale: Timestamp, now: Timestamp) -> bool {
        let mut tried = self.last_used.lock();
        if tried.get(id).is_some_and(|at| *at >= stale) {
            return false;
        }
        tried.insert(id.to_owned(), now);
        true
    }

    /// Appends an audit entry.
    pub fn audit(&self, entry: &NewEntry) -> Result<i64, Error> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let id = append(&tx, Timestamp::now(), entry)?;
        tx.commit()?;
        Ok(id)
    }

    /// Audit entries with an id above `after`, oldest first, at most `limit`.
    pub fn audit_log(&self, after: i64, limit: usize) -> Result<Vec<Entry>, Error> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT id, at, actor, action, target, detail, address, hash FROM audit
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], entry)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    /// Recomputes the hash chain over the whole log.
    pub fn verify_audit(&self) -> Result<ChainCheck, Error> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT id, at, actor, action, target, detail, address, hash FROM audit ORDER BY id",
        )?;
        let mut previous = audit::GENESIS;
        let mut entries = 0;
        let mut broken_at = None;
        for row in stmt.query_map([], entry)? {
            let e = row??;
            entries += 1;
            let expected = audit::chain(
                &previous,
                e.id,
                e.at,
                &e.actor,
                &e.action,
                &e.target,
                &e.detail,
                e.address.as_deref(),
            );
            if broken_at.is_none() && expected != e.hash {
                broken_at = Some(e.id);
            }
            previous = e.hash;
        }
        Ok(ChainCheck {
            entries,
            broken_at,
            head: token::hex(&previous),
        })
    }
}

/// Appends an entry inside `tx`, chained to the newest one.
fn append(tx: &rusqlite::Transaction<'_>, at: Timestamp, e: &NewEntry) -> Result<i64, Error> {
    let last: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (id, previous) = match last {
        Some((id, hash)) => (
            id + 1,
            <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| Error::Corrupt("audit hash"))?,
        ),
        None => (1, audit::GENESIS),
    };
    let action = e.action.code();
    let hash = audit::chain(
        &previous,
        id,
        at,
        &e.actor,
        action,
        &e.target,
        &e.detail,
        e.address.as_deref(),
    );
    tx.execute(
        "INSERT INTO audit (id, at, actor, action, target, detail, address, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            id,
            at.as_millis(),
            e.actor,
            action,
            e.target,
            e.detail,
            e.address,
            &hash[..]
        ],
    )?;
    Ok(id)
}

type RowResult<T> = rusqlite::Result<Result<T, Error>>;

/// A token's row as authentication reads it.
struct Stored {
    name: String,
    role: String,
    salt: Vec<u8>,
    hash: Vec<u8>,
    revoked: bool,
    expires_at: Option<Timestamp>,
    last_used_at: Option<Timestamp>,
}

fn token_info(r: &rusqlite::Row<'_>) -> RowResult<TokenInfo> {
    let role: String = r.get(2)?;
    let Ok(role) = role.parse() else {
        return Ok(Err(Error::Corrupt("token role")));
    };
    Ok(Ok(TokenInfo {
        id: r.get(0)?,
        name: r.get(1)?,
        role,
        created_at: Timestamp::from_millis(r.get(3)?),
        created_by: r.get(4)?,
        revoked_at: r.get::<_, Option<i64>>(5)?.map(Timestamp::from_millis),
        revoked_by: r.get(6)?,
        expires_at: r.get::<_, Option<i64>>(7)?.map(Timestamp::from_millis),
        last_used_at: r.get::<_, Option<i64>>(8)?.map(Timestamp::from_millis),
    }))
}

fn entry(r: &rusqlite::Row<'_>) -> RowResult<Entry> {
    let hash: Vec<u8> = r.get(7)?;
    let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
        return Ok(Err(Error::Corrupt("audit hash")));
    };
    Ok(Ok(Entry {
        id: r.get(0)?,
        at: Timestamp::from_millis(r.get(1)?),
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        detail: r.get(5)?,
        address: r.get(6)?,
        hash,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, SecurityDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = SecurityDb::open(&dir.path().join("security.db")).unwrap();
        (dir, db)
    }

    #[test]
    fn a_token_stops_working_at_its_expiry_and_cannot_be_made_expired() {
        let (_dir, db) = db();
        let now = Timestamp::now();
        let until = now.saturating_add(std::time::Duration::from_secs(3600));
        let (text, info) = db
            .create_token_until("contractor", Role::Viewer, Some(until), "cli", None)
            .unwrap();
        assert_eq!(info.expires_at, Some(until));
        assert!(db.authenticate_at(&text, now).unwrap().is_ok());
        assert_eq!(
            db.authenticate_at(&text, until).unwrap(),
            Err(AuthFailure::Expired)
        );
        assert!(matches!(
            db.create_token_until("late", Role::Viewer, Some(now), "cli", None),
            Err(Error::BadExpiry)
        ));
        let log = db.audit_log(0, 10).unwrap();
        assert!(log[0].detail.contains("expires"), "{:?}", log[0]);
    }

    #[test]
    fn last_use_is_kept_to_the_minute() {
        let (_dir, db) = db();
        let (text, _) = db.create_token("ops", Role::Viewer, "cli", None).unwrap();
        assert_eq!(db.tokens().unwrap()[0].last_used_at, None);
        let t0 = Timestamp::now();
        let later = |s| t0.saturating_add(std::time::Duration::from_secs(s));
        db.authenticate_at(&text, t0).unwrap().unwrap();
        db.authenticate_at(&text, later(30)).unwrap().unwrap();
        assert_eq!(db.tokens().unwrap()[0].last_used_at, Some(t0));
        db.authenticate_at(&text, later(61)).unwrap().unwrap();
        assert_eq!(db.tokens().unwrap()[0].last_used_at, Some(later(61)));
    }

    #[test]
    fn a_last_use_that_cannot_be_written_does_not_fail_the_request_and_is_retried_later() {
        let (_dir, db) = db();
        let (text, _) = db.create_token("wall", Role::Viewer, "cli", None).unwrap();
        // Every write now fails, as on a full disk; reads still work.
        db.conn
            .lock()
            .pragma_update(None, "query_only", true)
            .unwrap();
        let t0 = Timestamp::now();
        let later = |s| t0.saturating_add(std::time::Duration::from_secs(s));
        let who = db.authenticate_at(&text, t0).unwrap().unwrap();
        assert_eq!(who.role, Role::Viewer);
        db.authenticate_at(&text, later(1)).unwrap().unwrap();
        // Writable again: the next attempt waits out the granularity, then succeeds.
        db.conn
            .lock()
            .pragma_update(None, "query_only", false)
            .unwrap();
        db.authenticate_at(&text, later(30)).unwrap().unwrap();
        assert_eq!(db.tokens().unwrap()[0].last_used_at, None);
        db.authenticate_at(&text, later(61)).unwrap().unwrap();
        assert_eq!(db.tokens().unwrap()[0].last_used_at, Some(later(61)));
    }

    #[test]
    fn a_database_from_before_expiry_keeps_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.db");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(SCHEMA).unwrap();
            old.execute(
                "INSERT INTO tokens (id, name, role, salt, hash, created_at, created_by)
                 VALUES ('0123456789ab', 'old', 'viewer', x'00', x'00', 1, 'cli')",
                [],
            )
            .unwrap();
        }
        let db = SecurityDb::open(&path).unwrap();
        let tokens = db.tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!((tokens[0].expires_at, tokens[0].last_used_at), (None, None));
        drop(db);
        assert!(
            SecurityDb::open(&path).is_ok(),
            "opening again migrates nothing"
        );
    }

    #[test]
    fn a_created_token_authenticates_with_its_role_until_it_is_revoked() {
        let (_dir, db) = db();
        let (text, info) = db
            .create_token("ops", Role::Inspector, "cli", None)
            .unwrap();
        let who = db.authenticate(&text).unwrap().unwrap();
        assert_eq!((who.role, who.name.as_str()), (Role::Inspector, "ops"));
        assert_eq!(who.token_id, info.id);
        db.revoke_token(&info.id, "cli", None).unwrap();
        assert_eq!(db.authenticate(&text).unwrap(), Err(AuthFailure::Revoked));
        assert!(matches!(
            db.revoke_token(&info.id, "cli", None),
            Err(Error::AlreadyRevoked(_))
        ));
    }

    #[test]
    fn unknown_malformed_and_wrong_secrets_fail_with_their_own_reason() {
        let (_dir, db) = db();
        let (text, _) = db.create_token("a", Role::Viewer, "cli", None).unwrap();
        let mut wrong = text.clone();
        wrong.pop();
        wrong.push(if text.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            db.authenticate(&wrong).unwrap(),
            Err(AuthFailure::WrongSecret)
        );
        assert_eq!(
            db.authenticate("qt_0123456789ab_whatever").unwrap(),
            Err(AuthFailure::UnknownToken)
        );
        assert_eq!(
            db.authenticate("Bearer").unwrap(),
            Err(AuthFailure::Malformed)
        );
    }

    #[test]
    fn the_database_keeps_no_token_text() {
        let (dir, db) = db();
        let (text, _) = db.create_token("a", Role::Admin, "cli", None).unwrap();
        drop(db);
        // `qt_<id>_<secret>`; the secret's own alphabet has `_` too.
        let secret = text.splitn(3, '_').nth(2).unwrap();
        assert!(secret.len() >= 32, "{text}");
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }

    #[test]
    fn token_changes_are_audited_in_an_append_only_chained_log() {
        let (_dir, db) = db();
        let (_, info) = db
            .create_token("a", Role::Admin, "cli (root)", None)
            .unwrap();
        db.revoke_token(&info.id, "token x (y)", Some("127.0.0.1"))
            .unwrap();
        let log = db.audit_log(0, 10).unwrap();
        let actions: Vec<_> = log.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["token_created", "token_revoked"]);
        assert_eq!(log[1].address.as_deref(), Some("127.0.0.1"));
        let check = db.verify_audit().unwrap();
        assert_eq!((check.entries, check.broken_at), (2, None));
        let conn = db.conn.lock();
        assert!(conn.execute("DELETE FROM audit", []).is_err());
        assert!(conn.execute("UPDATE audit SET detail = 'x'", []).is_err());
        assert!(conn.execute("DELETE FROM tokens", []).is_err());
    }

    #[test]
    fn an_edited_audit_entry_breaks_the_chain_at_that_entry() {
        let (_dir, db) = db();
        for i in 0..3 {
            db.create_token(&format!("t{i}"), Role::Viewer, "cli", None)
                .unwrap();
        }
        {
            let conn = db.conn.lock();
            conn.execute_batch(
                "DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'someone else' WHERE id = 2;",
            )
            .unwrap();
        }
        assert_eq!(db.verify_audit().unwrap().broken_at, Some(2));
    }
}
