//! Who may do what, and what was done: API tokens and their roles, the append-only audit
//! log, per-station telemetry signatures, and MQTT device credentials.
//!
//! | module | job |
//! |---|---|
//! | [`role`] | the four roles, each including the ones below it |
//! | [`token`] | token text, generation, salted hashes (pure) |
//! | [`audit`] | audit entries and their hash chain (pure) |
//! | [`db`] | the SQLite file holding tokens and the audit log |
//! | [`failures`] | bursts of failed authentications per address (pure state machine) |
//! | [`signature`] | HMAC-SHA256 over a record's canonical form (pure) |
//! | [`sequence`] | per-station record counters: replays refused, gaps counted (pure) |
//! | [`tls`] | rustls server configuration for quantrac's listeners |
//!
//! `docs/security.md` is the threat model these answer.

pub mod audit;
pub mod db;
pub mod failures;
pub mod role;
pub mod sequence;
pub mod signature;
pub mod tls;
pub mod token;

pub use audit::{Action, NewEntry};
pub use db::{SecurityDb, TokenInfo};
pub use role::Role;

/// Who made an API request: the token that authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// The client's address, when known.
    pub address: Option<std::net::IpAddr>,
}

impl Principal {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("token {} ({})", self.token_id, self.name)
    }
}

/// Why a presented token was refused. All answer 401; the reason is logged and counted,
/// never told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Not the shape of a token.
    Malformed,
    UnknownToken,
    WrongSecret,
    Revoked,
    /// Past its `expires_at`.
    Expired,
}

impl AuthFailure {
    pub const fn code(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::UnknownToken => "unknown_token",
            AuthFailure::WrongSecret => "wrong_secret",
            AuthFailure::Revoked => "revoked",
            AuthFailure::Expired => "expired",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("security database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create {path}: {source}")]
    Directory {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Random(#[from] token::RandomError),
    #[error("a token name must be 1 to 100 characters")]
    BadName,
    #[error("a token name may not contain control characters")]
    ControlCharacters,
    #[error("a token's expiry must be in the future and at most 10 years away")]
    BadExpiry,
    #[error("no token `{0}`")]
    UnknownToken(String),
    #[error("token `{0}` is already revoked")]
    AlreadyRevoked(String),
    #[error("the security database holds an invalid {0}")]
    Corrupt(&'static str),
    /// The file failed its start-up check.
    #[error(transparent)]
    Integrity(#[from] crate::storage::integrity::Error),
}
