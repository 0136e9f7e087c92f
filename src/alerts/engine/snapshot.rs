//! Rule state across restarts and reloads.
//!
//! A station's rule state is written as one bincode blob (`version` first, so a later format
//! can be told apart) whenever it changed since the last snapshot. On restart the blobs are
//! read back and matched to the rules by name; a rule whose kind changed starts fresh. The
//! active alerts, stored with every event, win over the blobs: whatever a blob says, a rule
//! feeds the active alert of its (station, parameter, rule), and no other.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::series::{Held, Series, Slot};
use super::{Engine, StationState};
use crate::alerts::condition::{Observation, State};
use crate::alerts::tracker::Tracker;
use crate::alerts::Alert;
use crate::telemetry::Status;

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("rule state of station `{station}` cannot be read ({reason}); it starts fresh")]
    Unreadable { station: String, reason: String },
}

#[derive(Serialize, Deserialize)]
struct StationSnapshot {
    version: u8,
    last_data: Option<i64>,
    series: Vec<SeriesSnapshot>,
    slots: Vec<SlotSnapshot>,
}

#[derive(Serialize, Deserialize)]
struct SeriesSnapshot {
    param: String,
    last_ts: Option<i64>,
    /// (ts, value, status code, arrival)
    held: Vec<(i64, f64, u8, i64)>,
    slots: Vec<SlotSnapshot>,
}

#[derive(Serialize, Deserialize)]
struct SlotSnapshot {
    rule: String,
    state: State,
    tracker: Tracker,
}

fn slot_snapshots(slots: &[Slot]) -> Vec<SlotSnapshot> {
    slots
        .iter()
        .map(|s| SlotSnapshot {
            rule: s.rule.name.to_string(),
            state: s.state.clone(),
            tracker: s.tracker.clone(),
        })
        .collect()
}

/// Puts a saved state into the slot of the same rule, if it still exists and fits.
fn transplant(slots: &mut [Slot], name: &str, state: State, tracker: Tracker) {
    if let Some(slot) = slots.iter_mut().find(|s| &*s.rule.name == name) {
        if state.fits(&slot.rule) {
            slot.state = state;
        }
        slot.tracker = tracker;
    }
}

fn encode(st: &StationState) -> Vec<u8> {
    let snapshot = StationSnapshot {
        version: VERSION,
        last_data: st.last_data,
        series: st
            .series
            .iter()
            .map(|s| SeriesSnapshot {
                param: s.param.to_string(),
                last_ts: s.last_ts,
                held: s
                    .held
                    .iter()
                    .map(|h| (h.obs.ts, h.obs.value, h.obs.status.as_u8(), h.arrived))
                    .collect(),
                slots: slot_snapshots(&s.slots),
            })
            .collect(),
        slots: slot_snapshots(&st.slots),
    };
    // Encoding plain data into a Vec cannot fail; an empty blob would restore as fresh.
    bincode::serde::encode_to_vec(&snapshot, bincode::config::standard()).unwrap_or_default()
}

fn apply(st: &mut StationState, snapshot: StationSnapshot) {
    st.last_data = st.last_data.max(snapshot.last_data);
    for saved in snapshot.series {
        let Some(series) = st.series.iter_mut().find(|s| *s.param == *saved.param) else {
            continue;
        };
        series.last_ts = saved.last_ts;
        series.held = saved
            .held
            .into_iter()
            .filter_map(|(ts, value, status, arrived)| {
                Some(Held {
                    obs: Observation {
                        ts,
                        value,
                        status: Status::from_u8(status)?,
                    },
                    arrived,
                })
            })
            .collect();
        for slot in saved.slots {
            transplant(&mut series.slots, &slot.rule, slot.state, slot.tracker);
        }
    }
    for slot in snapshot.slots {
        transplant(&mut st.slots, &slot.rule, slot.state, slot.tracker);
    }
}

/// Moves the state of rules that survive a reload from `old` into `fresh`.
pub(super) fn carry_over(old: StationState, fresh: &mut StationState) {
    fresh.last_data = old.last_data;
    fresh.watched_since = old.watched_since;
    for old_series in old.series {
        let Some(series) = fresh
            .series
            .iter_mut()
            .find(|s| s.param == old_series.param)
        else {
            continue;
        };
        let Series {
            last_ts,
            held,
            slots,
            ..
        } = old_series;
        series.last_ts = last_ts;
        series.held = held;
        for slot in slots {
            transplant(&mut series.slots, &slot.rule.name, slot.state, slot.tracker);
        }
    }
    for slot in old.slots {
        transplant(&mut fresh.slots, &slot.rule.name, slot.state, slot.tracker);
    }
}

impl Engine {
    /// The rule state of every station changed since the last call, as blobs.
    pub fn snapshot(&mut self) -> Vec<(Arc<str>, Vec<u8>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|id| {
                let st = self.stations.get_mut(&id)?;
                st.dirty = false;
                Some((id, encode(st)))
            })
            .collect()
    }

    /// Restores saved rule state and the active alerts after a restart. Returns the blobs
    /// that could not be read (their stations start fresh).
    pub fn restore(
        &mut self,
        active: Vec<Alert>,
        states: Vec<(String, Vec<u8>)>,
        next_id: u64,
    ) -> Vec<SnapshotError> {
        let mut problems = Vec::new();
        for (station, blob) in states {
            let Some(st) = self.stations.get_mut(station.as_str()) else {
                continue;
            };
            match bincode::serde::decode_from_slice::<StationSnapshot, _>(
                &blob,
                bincode::config::standard(),
            ) {
                Ok((snapshot, _)) if snapshot.version == VERSION => apply(st, snapshot),
                Ok((snapshot, _)) => problems.push(SnapshotError::Unreadable {
                    station,
                    reason: format!("format version {}", snapshot.version),
                }),
                Err(e) => problems.push(SnapshotError::Unreadable {
                    station,
                    reason: e.to_string(),
                }),
            }
        }
        // Only the stored active alerts are active: drop links to anything else...
        let ids: rustc_hash::FxHashSet<u64> = active.iter().map(|a| a.id).collect();
        for st in self.stations.values_mut() {
            let slots = st
                .slots
                .iter_mut()
                .chain(st.series.iter_mut().flat_map(|s| s.slots.iter_mut()));
            for slot in slots {
                if slot.tracker.open.is_some_and(|id| !ids.contains(&id)) {
                    slot.tracker.open = None;
                }
            }
        }
        // ...and link every active alert to its rule.
        self.ledger.next_id = self.ledger.next_id.max(next_id);
        for alert in active {
            self.ledger.next_id = self.ledger.next_id.max(alert.id + 1);
            if let Some(st) = self.stations.get_mut(&*alert.station) {
                let slots = match &alert.param {
                    Some(p) => st
                        .series
                        .iter_mut()
                        .find(|s| s.param == *p)
                        .map(|s| &mut s.slots),
                    None => Some(&mut st.slots),
                };
                if let Some(slot) =
                    slots.and_then(|slots| slots.iter_mut().find(|s| s.rule.name == alert.rule))
                {
                    slot.tracker.open = Some(alert.id);
                }
            }
            self.ledger.active.insert(alert.id, alert);
        }
        problems
    }
}
