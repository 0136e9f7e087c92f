//! Failed FTP logins: after `max_failures` wrong passwords within `block_for`, further logins
//! of that key (an address, a user name, or both: [`BlockBy`]) are refused for `block_for`,
//! the right password included, without checking it. A pure state machine: every call takes
//! the time, so tests drive it without waiting.
//!
//! libunftp has a policy of its own (`ServerBuilder::failed_logins_policy`), but its memory
//! of failures lives in one `Server::service` call, that is one connection for quantrac
//! (which accepts connections itself): a client reconnecting after each wrong password would
//! never be blocked. This one is shared by every session of the endpoint.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// What a block applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockBy {
    /// One user name from one address (others may still log in from there, and that user
    /// from elsewhere): a guesser cannot lock a device out from another network.
    AddressAndUser,
    /// Every login from the address.
    Address,
    /// Every login with the user name, from anywhere.
    User,
}

/// The key failures are counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    address: Option<IpAddr>,
    user: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Start of the current counting window.
    since: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// Failures per key, bounded in size.
#[derive(Debug)]
pub struct Lockout {
    max_failures: u32,
    block_for: Duration,
    block_by: BlockBy,
    capacity: usize,
    entries: HashMap<Key, Entry>,
}

/// A login refused because its key is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// How long the block still lasts.
    pub remaining: Duration,
}

impl Lockout {
    /// `max_failures` 0 turns blocking off. `capacity` bounds the keys remembered.
    pub fn new(max_failures: u32, block_for: Duration, block_by: BlockBy, capacity: usize) -> Self {
        Lockout {
            max_failures,
            block_for,
            block_by,
            capacity: capacity.max(1),
            entries: HashMap::new(),
        }
    }

    fn key(&self, address: IpAddr, user: &str) -> Key {
        let (address, user) = match self.block_by {
            BlockBy::AddressAndUser => (Some(address), Some(user.to_owned())),
            BlockBy::Address => (Some(address), None),
            BlockBy::User => (None, Some(user.to_owned())),
        };
        Key { address, user }
    }

    /// Whether a login of `user` from `address` may be checked at `now`.
    pub fn check(&self, address: IpAddr, user: &str, now: Instant) -> Result<(), Blocked> {
        let until = self
            .entries
            .get(&self.key(address, user))
            .and_then(|e| e.blocked_until);
        match until {
            Some(until) if until > now => Err(Blocked {
                remaining: until - now,
            }),
            _ => Ok(()),
        }
    }

    /// Records a wrong password; returns true when this failure starts a block.
    pub fn failed(&mut self, address: IpAddr, user: &str, now: Instant) -> bool {
        if self.max_failures == 0 {
            return false;
        }
        let key = self.key(address, user);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.evict(now);
        }
        let entry = self.entries.entry(key).or_insert(Entry {
            since: now,
            failures: 0,
            blocked_until: None,
        });
        let blocked = entry.blocked_until.is_some_and(|until| until > now);
        if !blocked && now.duration_since(entry.since) >= self.block_for {
            *entry = Entry {
                since: now,
                failures: 0,
                blocked_until: None,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
        if !blocked && entry.failures >= self.max_failures {
            entry.blocked_until = Some(now + self.block_for);
            return true;
        }
        false
    }

    /// A login succeeded: its failures are forgotten.
    pub fn succeeded(&mut self, address: IpAddr, user: &str) {
        let key = self.key(address, user);
        self.entries.remove(&key);
    }

    fn evict(&mut self, now: Instant) {
        let block_for = self.block_for;
        self.entries.retain(|_, e| match e.blocked_until {
            Some(until) => until > now,
            None => now.duration_since(e.since) < block_for,
        });
        if self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.since)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
    }

    /// Keys remembered now.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_nth_wrong_password_blocks_even_the_right_one_for_the_block_time() {
        let mut l = Lockout::new(3, MINUTE, BlockBy::AddressAndUser, 100);
        let t = Instant::now();
        assert!(!l.failed(A, "gw", t));
        assert!(!l.failed(A, "gw", t + Duration::from_secs(1)));
        assert!(l.check(A, "gw", t + Duration::from_secs(2)).is_ok());
        assert!(
            l.failed(A, "gw", t + Duration::from_secs(2)),
            "the third starts a block"
        );
        let blocked = l.check(A, "gw", t + Duration::from_secs(3));
        assert_eq!(
            blocked,
            Err(Blocked {
                remaining: Duration::from_secs(59)
            })
        );
        assert!(
            l.check(A, "gw", t + Duration::from_secs(62)).is_ok(),
            "it ends"
        );
    }

    #[test]
    fn a_block_by_address_and_user_leaves_other_users_and_addresses_free() {
        let mut l = Lockout::new(2, MINUTE, BlockBy::AddressAndUser, 100);
        let t = Instant::now();
        l.failed(A, "gw", t);
        l.failed(A, "gw", t);
        assert!(l.check(A, "gw", t).is_err());
        assert!(l.check(A, "other", t).is_ok());
        assert!(l.check(B, "gw", t).is_ok());
    }

    #[test]
    fn a_block_by_address_covers_every_user_name() {
        let mut l = Lockout::new(2, MINUTE, BlockBy::Address, 100);
        let t = Instant::now();
        l.failed(A, "one", t);
        l.failed(A, "two", t);
        assert!(l.check(A, "three", t).is_err());
        assert!(l.check(B, "one", t).is_ok());
    }

    #[test]
    fn failures_spread_over_more_than_the_block_time_do_not_block() {
        let mut l = Lockout::new(2, MINUTE, BlockBy::User, 100);
        let t = Instant::now();
        assert!(!l.failed(A, "gw", t));
        assert!(!l.failed(B, "gw", t + MINUTE));
        assert!(l.failed(A, "gw", t + MINUTE + Duration::from_secs(1)));
    }

    #[test]
    fn a_success_forgets_the_failures_and_zero_turns_blocking_off() {
        let mut l = Lockout::new(2, MINUTE, BlockBy::AddressAndUser, 100);
        let t = Instant::now();
        l.failed(A, "gw", t);
        l.succeeded(A, "gw");
        assert!(!l.failed(A, "gw", t));
        let mut off = Lockout::new(0, MINUTE, BlockBy::AddressAndUser, 100);
        for _ in 0..100 {
            assert!(!off.failed(A, "gw", t));
        }
        assert!(off.check(A, "gw", t).is_ok());
    }

    #[test]
    fn the_number_of_remembered_keys_stays_bounded() {
        let mut l = Lockout::new(5, MINUTE, BlockBy::Address, 10);
        let t = Instant::now();
        for i in 0..1000u32 {
            l.failed(IpAddr::V4(i.into()), "gw", t);
        }
        assert!(l.tracked() <= 10);
    }
}
