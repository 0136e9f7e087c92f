//! The audit log's entries and the hash chain that makes tampering evident.
//!
//! Every entry is chained to the one before it: `hash = SHA-256(previous hash || fields)`,
//! each field length-prefixed so that no two different entries hash alike. The table also
//! refuses `UPDATE` and `DELETE` (triggers, see [`super::db`]). Someone with write access to
//! the file can still drop the triggers, but cannot change or remove an entry without
//! recomputing every hash after it; [`super::SecurityDb::verify_audit`] finds where the chain
//! breaks, and a copy of the newest hash kept elsewhere pins the whole history.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::telemetry::Timestamp;

/// What happened. Codes are stable API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    TokenCreated,
    TokenRevoked,
    AlertAcknowledged,
    RegistryReloaded,
    RegistryReloadFailed,
    /// Many failed authentications from one address in a short time.
    AuthFailureBurst,
    /// A station's record-counter window was reset by an admin.
    RecordCounterReset,
}

impl Action {
    pub const fn code(self) -> &'static str {
        match self {
            Action::TokenCreated => "token_created",
            Action::TokenRevoked => "token_revoked",
            Action::AlertAcknowledged => "alert_acknowledged",
            Action::RegistryReloaded => "registry_reloaded",
            Action::RegistryReloadFailed => "registry_reload_failed",
            Action::AuthFailureBurst => "auth_failure_burst",
            Action::RecordCounterReset => "record_counter_reset",
        }
    }
}

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Who: `token {id} ({name})`, `cli ({user})`, `signal (SIGHUP)`, `anonymous`.
    pub actor: String,
    pub action: Action,
    /// What it was done to: a token id, an alert id, the seeds directory, an address.
    pub target: String,
    pub detail: String,
    /// The client address, for API requests.
    pub address: Option<String>,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub address: Option<String>,
    pub hash: [u8; 32],
}

/// The chain value before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// The hash of an entry given the hash of the one before it.
#[allow(clippy::too_many_arguments)]
pub fn chain(
    previous: &[u8; 32],
    id: i64,
    at: Timestamp,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    address: Option<&str>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(id.to_be_bytes());
    h.update(at.as_millis().to_be_bytes());
    for field in [actor, action, target, detail, address.unwrap_or("\u{0}")] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().into()
}

/// The result of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainCheck {
    pub entries: u64,
    /// The first entry whose hash does not follow from the entries before it.
    pub broken_at: Option<i64>,
    /// The newest hash (hex): keep a copy elsewhere to pin the history up to now.
    pub head: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changing_any_field_changes_the_hash() {
        let t = Timestamp::from_millis(1_000);
        let base = chain(&GENESIS, 1, t, "a", "b", "c", "d", None);
        assert_ne!(base, chain(&GENESIS, 2, t, "a", "b", "c", "d", None));
        assert_ne!(
            base,
            chain(
                &GENESIS,
                1,
                Timestamp::from_millis(1_001),
                "a",
                "b",
                "c",
                "d",
                None
            )
        );
        assert_ne!(
            base,
            chain(&GENESIS, 1, t, "ab", "", "c", "d", None),
            "fields are delimited"
        );
        assert_ne!(base, chain(&GENESIS, 1, t, "a", "b", "c", "d", Some("")));
        assert_ne!(base, chain(&[1; 32], 1, t, "a", "b", "c", "d", None));
        assert_eq!(base, chain(&GENESIS, 1, t, "a", "b", "c", "d", None));
    }
}
