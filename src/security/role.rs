//! Roles of API tokens: each one includes everything the one below it may do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a token may do, from least to most. `a >= b` means `a` may do everything `b` may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Stations, zones, readings, alerts (read only), and later charts.
    Viewer,
    /// A viewer who may also read the quarantine and, later, exports and reports.
    Analyst,
    /// An analyst who may also acknowledge alerts.
    Inspector,
    /// An inspector who may also manage tokens, reload the registry, read the audit log and
    /// see delivery internals (webhooks).
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Analyst, Role::Inspector, Role::Admin];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Inspector => "inspector",
            Role::Admin => "admin",
        }
    }

    /// Whether a token with this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}` (viewer, analyst, inspector or admin)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_allows_itself_and_every_role_below_it_and_nothing_above() {
        for (i, role) in Role::ALL.into_iter().enumerate() {
            for (j, needed) in Role::ALL.into_iter().enumerate() {
                assert_eq!(role.allows(needed), i >= j, "{role} vs {needed}");
            }
        }
    }

    #[test]
    fn roles_parse_from_their_names_only() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("Admin".parse::<Role>().is_err());
        assert!("root".parse::<Role>().is_err());
    }
}
