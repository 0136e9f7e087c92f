//! The alert engine: a pure state machine over every station.
//!
//! Inputs: validated readings ([`Engine::evaluate`]), gateway announcements
//! ([`Engine::gateway`]), the clock ([`Engine::tick`]) and acknowledgements
//! ([`Engine::acknowledge`]). Output: [`AlertEvent`]s. No I/O and no clock of its own:
//! `now` is always a parameter, so tests drive time explicitly.
//!
//! # Invariants
//! - At most one active (open or acknowledged) alert per (station, parameter, rule): a
//!   rule's [`Tracker`](super::tracker::Tracker) holds the id of its active alert.
//! - Readings of a series are evaluated in event-time order (see [`series`]); one older than
//!   the newest evaluated is stored but changes nothing.
//! - An event caused by a reading older than `backfill_after` (a backlog flush) is marked
//!   `backfilled`: recorded and published for machines, not announced to people. An alert
//!   opened that way is announced once (a reminder) when live data finds it still open.
//! - Rule state is plain data: [`Engine::snapshot`] serializes what changed, and
//!   [`Engine::restore`] rebuilds it with the active alerts, so a restart neither loses open
//!   alerts nor announces them again.

mod describe;
mod series;
mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};

use super::condition::{self, Context, Observation, Verdict};
use super::rules::{self, Check, RuleBook};
use super::tracker::Transition;
use super::{Ack, Alert, AlertEvent, AlertState, EventKind, RuleKind};
use crate::registry::{Registry, Station};
use crate::telemetry::time::{duration_ms, VIETNAM_OFFSET_SECS};
use crate::telemetry::{GatewayState, Reading, Timestamp};
use series::{Offer, Series, Slot};

pub use snapshot::SnapshotError;

/// Engine settings (the `[alerts]` configuration section).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConfig {
    /// How long a reading that follows a gap waits for stragglers.
    pub lateness: Duration,
    /// Readings older than this (relative to the clock) raise backfilled events.
    pub backfill_after: Duration,
    /// Re-announce open, unacknowledged alerts this often (`None`: never).
    pub reminder: Option<Duration>,
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("alert {0} is not active (resolved or unknown)")]
    NotActive(u64),
    #[error("alert {0} is already acknowledged")]
    AlreadyAcknowledged(u64),
}

/// Everything the engine knows about one station.
#[derive(Debug, Clone)]
struct StationState {
    id: Arc<str>,
    zone: Arc<str>,
    interval_ms: i64,
    series: Vec<Series>,
    /// Station-level rules (no data, gateway offline).
    slots: Vec<Slot>,
    /// Event time of the newest reading.
    last_data: Option<i64>,
    /// Clock time the engine started watching (the reference for "no data" until data comes).
    watched_since: i64,
    /// Changed since the last snapshot (and listed in `Engine::dirty`).
    dirty: bool,
}

/// Notes that a station's state changed, once per snapshot period (a flag, not a set: this
/// runs for every reading).
fn mark(dirty: &mut Vec<Arc<str>>, st: &mut StationState) {
    if !st.dirty {
        st.dirty = true;
        dirty.push(st.id.clone());
    }
}

/// The alert engine.
pub struct Engine {
    config: EngineConfig,
    registry: Arc<Registry>,
    book: Arc<RuleBook>,
    stations: FxHashMap<Arc<str>, StationState>,
    ledger: Ledger,
    /// Stations whose state changed since the last snapshot.
    dirty: Vec<Arc<str>>,
    /// Readings that came too late to be evaluated (for metrics).
    too_late: u64,
}

/// The active alerts and the next alert id.
#[derive(Debug, Default)]
struct Ledger {
    /// Active (open or acknowledged) alerts by id.
    active: FxHashMap<u64, Alert>,
    next_id: u64,
    /// Active alerts changed without an event (another offending reading) since
    /// [`Engine::take_updates`] last ran.
    updated: FxHashSet<u64>,
}

/// Where a slot lives.
#[derive(Debug, Clone, Copy)]
enum At {
    Series(usize, usize),
    Station(usize),
}

fn day_of(ts: i64) -> i64 {
    (ts + i64::from(VIETNAM_OFFSET_SECS) * 1000).div_euclid(86_400_000)
}

impl Engine {
    /// An engine watching every station of `registry` from `now`.
    pub fn new(
        config: EngineConfig,
        registry: Arc<Registry>,
        book: Arc<RuleBook>,
        now: Timestamp,
    ) -> Engine {
        let mut engine = Engine {
            config,
            registry,
            book,
            stations: FxHashMap::default(),
            ledger: Ledger {
                active: FxHashMap::default(),
                next_id: 1,
                updated: FxHashSet::default(),
            },
            dirty: Vec::new(),
            too_late: 0,
        };
        let registry = engine.registry.clone();
        let mut interner = rules::Interner::default();
        for station in registry.stations() {
            let state = engine.build_station(station, now.as_millis(), &mut interner);
            engine.stations.insert(station.id.clone(), state);
        }
        engine
    }

    fn build_station(
        &self,
        station: &Station,
        now: i64,
        interner: &mut rules::Interner,
    ) -> StationState {
        StationState {
            id: station.id.clone(),
            zone: station.zone.clone(),
            interval_ms: duration_ms(station.expected_interval).max(1),
            series: station
                .parameters
                .iter()
                .map(|p| {
                    Series::new(
                        p.name.clone(),
                        p.unit.clone(),
                        rules::compile(&self.book, station, p, interner),
                    )
                })
                .collect(),
            slots: rules::compile_station(&self.book, station, interner)
                .into_iter()
                .map(Slot::new)
                .collect(),
            last_data: None,
            watched_since: now,
            dirty: false,
        }
    }

    /// Active alerts (open or acknowledged).
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.ledger.active.values()
    }

    pub fn alert(&self, id: u64) -> Option<&Alert> {
        self.ledger.active.get(&id)
    }

    /// Active alerts that changed without an event since the last call (more offending
    /// readings: count, last and peak values), so that the store keeps up with them.
    pub fn take_updates(&mut self) -> Vec<Alert> {
        let ids: Vec<u64> = self.ledger.updated.drain().collect();
        ids.into_iter()
            .filter_map(|id| self.ledger.active.get(&id).cloned())
            .collect()
    }

    /// Readings that arrived too late to be evaluated, since start.
    pub fn too_late(&self) -> u64 {
        self.too_late
    }

    /// Evaluates validated readings that arrived at `now`; appends what happened to `out`.
    pub fn evaluate(&mut self, readings: &[Reading], now: Timestamp, out: &mut Vec<AlertEvent>) {
        let now = now.as_millis();
        let backfill_after = duration_ms(self.config.backfill_after);
        let lateness = duration_ms(self.config.lateness);
        let mut released = Vec::new();
        for r in readings {
            let Some(st) = self.stations.get_mut(&*r.station) else {
                continue;
            };
            let ts = r.ts.as_millis();
            let newer = st.last_data.is_none_or(|last| ts > last);
            if newer {
                st.last_data = Some(ts);
            }
            // Registry ids are shared `Arc`s: comparing pointers first skips the strcmp.
            let Some(si) = st
                .series
                .iter()
                .position(|s| Arc::ptr_eq(&s.param, &r.param) || s.param == r.param)
            else {
                continue;
            };
            mark(&mut self.dirty, st);
            if !st.series[si].slots.is_empty() {
                let obs = Observation {
                    ts,
                    value: r.value,
                    status: r.status,
                };
                let interval = st.interval_ms;
                match st.series[si].offer(obs, now, interval) {
                    Offer::Now => judge(st, &mut self.ledger, backfill_after, si, obs, now, out),
                    Offer::Held => {
                        st.series[si].release(now, interval, lateness, &mut released);
                        for obs in released.drain(..) {
                            judge(st, &mut self.ledger, backfill_after, si, obs, now, out);
                        }
                    }
                    Offer::TooLate => {
                        self.too_late += 1;
                        metrics::counter!(crate::metrics::ALERT_LATE_READINGS_TOTAL).increment(1);
                    }
                }
            }
            if newer {
                judge_no_data(st, &mut self.ledger, now, out);
            }
        }
    }

    /// A gateway announcement from the status topic.
    pub fn gateway(
        &mut self,
        station: &str,
        state: GatewayState,
        now: Timestamp,
        out: &mut Vec<AlertEvent>,
    ) {
        let now = now.as_millis();
        let Some(st) = self.stations.get_mut(station) else {
            return;
        };
        let verdict = match state {
            GatewayState::Offline => Verdict::Exceeding {
                value: 0.0,
                threshold: 0.0,
                excess: 0.0,
                source: None,
            },
            GatewayState::Online => Verdict::Clear,
        };
        for i in 0..st.slots.len() {
            if !matches!(st.slots[i].rule.check, Check::GatewayOffline) {
                continue;
            }
            let slot = &mut st.slots[i];
            let transition = slot.tracker.step(&slot.rule, &verdict, now);
            apply(
                st,
                &mut self.ledger,
                At::Station(i),
                transition,
                &verdict,
                now,
                now,
                false,
                out,
            );
        }
        mark(&mut self.dirty, st);
    }

    /// The clock: releases readings held past the lateness, judges "no data", escalates by
    /// duration and sends reminders.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<AlertEvent>) {
        let now_ms = now.as_millis();
        let lateness = duration_ms(self.config.lateness);
        let backfill_after = duration_ms(self.config.backfill_after);
        let mut released = Vec::new();
        for st in self.stations.values_mut() {
            for si in 0..st.series.len() {
                if st.series[si].held.is_empty() {
                    continue;
                }
                let interval = st.interval_ms;
                st.series[si].release(now_ms, interval, lateness, &mut released);
                if !released.is_empty() {
                    mark(&mut self.dirty, st);
                }
                for obs in released.drain(..) {
                    judge(st, &mut self.ledger, backfill_after, si, obs, now_ms, out);
                }
            }
            judge_no_data(st, &mut self.ledger, now_ms, out);
        }
        self.escalate_by_duration(now_ms, out);
        self.remind(now_ms, out);
    }

    /// Escalates active alerts that have lasted long enough (rules with `escalate.after`),
    /// judged on the clock for the rules that no reading drives.
    fn escalate_by_duration(&mut self, now: i64, out: &mut Vec<AlertEvent>) {
        let due: Vec<u64> = self
            .ledger
            .active
            .values()
            .filter(|a| a.kind.is_station_level())
            .map(|a| a.id)
            .collect();
        for id in due {
            let Some(rule) = self.rule_of(id) else {
                continue;
            };
            if let Some(alert) = self.ledger.active.get_mut(&id) {
                alert.last_at = Timestamp::from_millis(now);
                self.ledger.updated.insert(id);
                if let Some(event) = describe::escalate_if_due(alert, &rule, None, now, false) {
                    out.push(event);
                }
            }
        }
    }

    /// Reminders for open, unacknowledged alerts whose last announcement is older than the
    /// reminder interval.
    fn remind(&mut self, now: i64, out: &mut Vec<AlertEvent>) {
        let Some(every) = self.config.reminder.map(duration_ms) else {
            return;
        };
        for alert in self.ledger.active.values_mut() {
            let due = alert.state == AlertState::Open
                && alert
                    .notified_at
                    .is_some_and(|t| now - t.as_millis() >= every);
            if due {
                alert.notified_at = Some(Timestamp::from_millis(now));
                alert.updated_at = Timestamp::from_millis(now);
                out.push(describe::event(EventKind::Reminder, alert, now, false));
            }
        }
    }

    /// The compiled rule that feeds active alert `id`.
    fn rule_of(&self, id: u64) -> Option<Arc<rules::Rule>> {
        let alert = self.ledger.active.get(&id)?;
        let st = self.stations.get(&alert.station)?;
        let slots = match &alert.param {
            Some(p) => &st.series.iter().find(|s| &s.param == p)?.slots,
            None => &st.slots,
        };
        slots
            .iter()
            .find(|s| s.rule.name == alert.rule)
            .map(|s| s.rule.clone())
    }

    /// Acknowledges an open alert.
    pub fn acknowledge(
        &mut self,
        id: u64,
        by: &str,
        note: &str,
        now: Timestamp,
    ) -> Result<AlertEvent, AckError> {
        let alert = self
            .ledger
            .active
            .get_mut(&id)
            .ok_or(AckError::NotActive(id))?;
        if alert.state == AlertState::Acknowledged {
            return Err(AckError::AlreadyAcknowledged(id));
        }
        alert.state = AlertState::Acknowledged;
        alert.ack = Some(Ack {
            by: by.to_owned(),
            note: note.to_owned(),
            at: now,
        });
        alert.updated_at = now;
        if let Some(st) = self.stations.get_mut(&alert.station) {
            mark(&mut self.dirty, st);
        }
        Ok(describe::event(
            EventKind::Acknowledged,
            alert,
            now.as_millis(),
            false,
        ))
    }

    /// Replaces the registry and rules (a reload), keeping the state of rules that still
    /// exist under the same name.
    pub fn reconfigure(&mut self, registry: Arc<Registry>, book: Arc<RuleBook>, now: Timestamp) {
        self.registry = registry;
        self.book = book;
        let registry = self.registry.clone();
        let mut interner = rules::Interner::default();
        let mut next = FxHashMap::default();
        for station in registry.stations() {
            let mut fresh = self.build_station(station, now.as_millis(), &mut interner);
            if let Some(old) = self.stations.remove(&station.id) {
                snapshot::carry_over(old, &mut fresh);
            }
            fresh.dirty = false;
            mark(&mut self.dirty, &mut fresh);
            next.insert(station.id.clone(), fresh);
        }
        self.stations = next;
    }
}

/// Applies a tracker transition to the alert of the slot at `at`.
#[allow(clippy::too_many_arguments)]
fn apply(
    st: &mut StationState,
    ledger: &mut Ledger,
    at: At,
    transition: Transition,
    verdict: &Verdict,
    ts: i64,
    now: i64,
    backfilled: bool,
    out: &mut Vec<AlertEvent>,
) {
    if transition == Transition::Nothing {
        return;
    }
    let (slot, param, unit) = match at {
        At::Series(si, ri) => {
            let series = &mut st.series[si];
            (
                &mut series.slots[ri],
                Some(series.param.clone()),
                Some(series.unit.clone()),
            )
        }
        At::Station(i) => (&mut st.slots[i], None, None),
    };
    match transition {
        Transition::Nothing => {}
        Transition::Open {
            first_at,
            first_value,
            worst_value,
            count,
        } => {
            let id = ledger.next_id;
            ledger.next_id += 1;
            slot.tracker.open = Some(id);
            let mut alert = describe::open(
                id,
                (&st.id, &st.zone),
                (param, unit),
                &slot.rule,
                verdict,
                (first_at, first_value, worst_value, count),
                ts,
                now,
                backfilled,
            );
            if slot.rule.kind == RuleKind::NoData {
                // "No data since ...": the silence started with the last reading.
                alert.first_at = Timestamp::from_millis(st.last_data.unwrap_or(st.watched_since));
            }
            out.push(describe::event(EventKind::Opened, &alert, now, backfilled));
            let rule = slot.rule.clone();
            ledger.active.insert(id, alert);
            if let Some(alert) = ledger.active.get_mut(&id) {
                if let Some(e) =
                    describe::escalate_if_due(alert, &rule, Some(verdict), now, backfilled)
                {
                    out.push(e);
                }
            }
        }
        Transition::Continue => {
            let Some(id) = slot.tracker.open else {
                return;
            };
            let rule = slot.rule.clone();
            let Some(alert) = ledger.active.get_mut(&id) else {
                // The alert was lost (it cannot be, but do not fail the pipeline for it).
                slot.tracker.open = None;
                return;
            };
            describe::update(alert, verdict, ts, now);
            ledger.updated.insert(id);
            if let Some(e) = describe::escalate_if_due(alert, &rule, Some(verdict), now, backfilled)
            {
                out.push(e);
            } else if !backfilled && alert.notified_at.is_none() && alert.state == AlertState::Open
            {
                // Opened by a backlog, still open now that live data arrives: tell people.
                alert.notified_at = Some(Timestamp::from_millis(now));
                out.push(describe::event(EventKind::Reminder, alert, now, false));
            }
        }
        Transition::Resolve => {
            let Some(id) = slot.tracker.open.take() else {
                return;
            };
            if let Some(mut alert) = ledger.active.remove(&id) {
                alert.state = AlertState::Resolved;
                alert.resolved_at = Some(Timestamp::from_millis(ts));
                alert.updated_at = Timestamp::from_millis(now);
                out.push(describe::event(
                    EventKind::Resolved,
                    &alert,
                    now,
                    backfilled,
                ));
            }
        }
    }
}

/// Evaluates every rule of series `si` of `st` on `obs`.
fn judge(
    st: &mut StationState,
    ledger: &mut Ledger,
    backfill_after: i64,
    si: usize,
    obs: Observation,
    now: i64,
    out: &mut Vec<AlertEvent>,
) {
    let ctx = Context {
        interval_ms: st.interval_ms,
        day: day_of(obs.ts),
    };
    let backfilled = obs.ts < now - backfill_after;
    for ri in 0..st.series[si].slots.len() {
        let slot = &mut st.series[si].slots[ri];
        let verdict = condition::evaluate(&slot.rule, &mut slot.state, &obs, &ctx);
        let transition = slot.tracker.step(&slot.rule, &verdict, obs.ts);
        apply(
            st,
            ledger,
            At::Series(si, ri),
            transition,
            &verdict,
            obs.ts,
            now,
            backfilled,
            out,
        );
    }
}

/// The no-data rule of a station: clears as soon as fresh data arrives, opens on the clock
/// (see [`Engine::tick`]).
fn judge_no_data(st: &mut StationState, ledger: &mut Ledger, now: i64, out: &mut Vec<AlertEvent>) {
    for i in 0..st.slots.len() {
        let Check::NoData { after_ms } = st.slots[i].rule.check else {
            continue;
        };
        let since = st.last_data.unwrap_or(st.watched_since);
        let silence = now - since;
        let verdict = if silence > after_ms {
            let minutes = silence as f64 / 60_000.0;
            let allowed = after_ms as f64 / 60_000.0;
            Verdict::Exceeding {
                value: minutes,
                threshold: allowed,
                excess: minutes - allowed,
                source: None,
            }
        } else {
            Verdict::Clear
        };
        let slot = &mut st.slots[i];
        let transition = slot.tracker.step(&slot.rule, &verdict, now);
        apply(
            st,
            ledger,
            At::Station(i),
            transition,
            &verdict,
            now,
            now,
            false,
            out,
        );
    }
}
