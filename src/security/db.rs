//! The security database: API tokens (salted hashes only) and the audit log, in one SQLite
//! file of their own (`security.db`), shared by the server and the `quantrac token` command.
//!
//! Every call is a short blocking SQLite statement; async callers run them on the blocking
//! pool ([`tokio::task::spawn_blocking`]). The server looks a token up on every request, so a
//! revocation made by the command line takes effect at the next request.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::audit::{self, ChainCheck, Entry, NewEntry};
use super::token::{self, Presented};
use super::{AuthFailure, Error, Principal, Role};
use crate::telemetry::Timestamp;

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
}

/// The tokens and the audit log. Cheap to clone (one shared connection).
#[derive(Clone)]
pub struct SecurityDb {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SecurityDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecurityDb")
    }
}

impl SecurityDb {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SecurityDb, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Directory {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SecurityDb {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Creates a token; returns it (the only time its text exists) and its listing.
    pub fn create_token(
        &self,
        name: &str,
        role: Role,
        actor: &str,
        address: Option<&str>,
    ) -> Result<(String, TokenInfo), Error> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(Error::BadName);
        }
        let generated = token::generate()?;
        let now = Timestamp::now();
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO tokens (id, name, role, salt, hash, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                generated.id,
                name,
                role.as_str(),
                &generated.salt[..],
                &generated.hash[..],
                now.as_millis(),
                actor
            ],
        )?;
        append(
            &tx,
            now,
            &NewEntry {
                actor: actor.to_owned(),
                action: audit::Action::TokenCreated,
                target: generated.id.clone(),
                detail: format!("{role} token `{name}`"),
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
        };
        Ok((generated.token, info))
    }

    /// Every token, newest first.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>, Error> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT id, name, role, created_at, created_by, revoked_at, revoked_by
             FROM tokens ORDER BY created_at DESC, id",
        )?;
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
                "SELECT id, name, role, created_at, created_by, revoked_at, revoked_by
                 FROM tokens WHERE id = ?1",
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
        let Some(p) = Presented::parse(presented) else {
            return Ok(Err(AuthFailure::Malformed));
        };
        let conn = self.conn.lock();
        let row = conn
            .query_row(
                "SELECT name, role, salt, hash, revoked_at FROM tokens WHERE id = ?1",
                [p.id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((name, role, salt, hash, revoked_at)) = row else {
            return Ok(Err(AuthFailure::UnknownToken));
        };
        if !token::matches(&salt, p.secret, &hash) {
            return Ok(Err(AuthFailure::WrongSecret));
        }
        if revoked_at.is_some() {
            return Ok(Err(AuthFailure::Revoked));
        }
        let role = role.parse().map_err(|_| Error::Corrupt("token role"))?;
        Ok(Ok(Principal {
            token_id: p.id.to_owned(),
            name,
            role,
            address: None,
        }))
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
        let secret = text.rsplit('_').next().unwrap();
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
