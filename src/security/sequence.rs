//! Record counters (`seq`) per station: replays are refused, gaps are counted as missing
//! records. A pure state machine, like the anti-replay window of IPsec (RFC 4303 §3.4.3).
//!
//! Each station has a window of the last [`WINDOW`] sequence numbers below the highest one
//! seen. A record is fresh if its `seq` is above the highest, or inside the window and not
//! seen yet (a backlog published a little out of order); it is a replay if it was seen, and
//! too old if it falls below the window. Jumping ahead by `k` counts `k - 1` records missing;
//! a late record filling a hole takes one back.
//!
//! The windows are saved with the data they let in (the station's `presence` row, in the
//! same transaction as the readings; [`Window::to_bytes`]) and restored at start, so that a
//! replay is refused after a restart too.

use std::collections::HashMap;
use std::sync::Arc;

/// How far below the highest `seq` a record may still arrive.
pub const WINDOW: u64 = 1024;
/// The largest believable jump ahead: about two years of records a minute. A larger one is
/// reported as [`Verdict::Jump`] and moves nothing (an unsigned counter could otherwise be
/// pushed to `u64::MAX` and refuse every later record).
pub const MAX_JUMP: u64 = 1 << 20;
const WORDS: usize = (WINDOW / 64) as usize;
/// The longest saved form ([`Window::to_bytes`]).
pub const SAVED_MAX: usize = 17 + 8 * WORDS;

/// A window's saved form: the first `len` bytes.
#[derive(Debug, Clone, Copy)]
pub struct Saved {
    bytes: [u8; SAVED_MAX],
    len: usize,
}

impl Saved {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// What a record's `seq` means for its station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: accept. `missing` is how many records the jump skipped (0 for the next one).
    Fresh { missing: u64 },
    /// A late record that fills a hole counted missing before.
    FillsGap,
    /// This `seq` was already accepted.
    Replayed { highest: u64 },
    /// Below the window: it cannot be told from a replay.
    TooOld { highest: u64 },
    /// More than [`MAX_JUMP`] ahead of the highest: nothing was recorded.
    Jump { highest: u64 },
}

/// One station's window. Bit `i` of `seen` is the record `highest - i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub highest: u64,
    pub seen: [u64; WORDS],
    /// Records skipped and not (yet) filled since tracking started.
    pub missing: u64,
}

impl Window {
    fn first(seq: u64) -> Window {
        let mut seen = [0; WORDS];
        seen[0] = 1;
        Window {
            highest: seq,
            seen,
            missing: 0,
        }
    }

    fn bit(&self, back: u64) -> bool {
        let (word, bit) = ((back / 64) as usize, back % 64);
        self.seen[word] & (1 << bit) != 0
    }

    fn set(&mut self, back: u64) {
        let (word, bit) = ((back / 64) as usize, back % 64);
        self.seen[word] |= 1 << bit;
    }

    /// Shifts the window so that `seq` (above `highest`) becomes the highest.
    fn advance(&mut self, seq: u64) {
        let shift = seq - self.highest;
        if shift >= WINDOW {
            self.seen = [0; WORDS];
        } else {
            let (words, bits) = ((shift / 64) as usize, (shift % 64) as u32);
            for i in (0..WORDS).rev() {
                let from = i.checked_sub(words);
                let high = from.map_or(0, |f| self.seen[f] << bits);
                let low = match from.and_then(|f| f.checked_sub(1)) {
                    Some(f) if bits > 0 => self.seen[f] >> (64 - bits),
                    _ => 0,
                };
                self.seen[i] = high | low;
            }
        }
        self.highest = seq;
        self.set(0);
    }

    /// The saved form, little-endian: `highest` (8 bytes), `missing` (8), a fill byte (`0x00`
    /// or `0xff`), then the words of `seen` (8 bytes each) up to the last one that differs
    /// from the fill: the words after it are all fill bits. A station that sends every record
    /// in order has a window of all ones: 17 bytes, not 144, which keeps the rows it is saved
    /// in small (they are rewritten with every batch).
    pub fn to_bytes(&self) -> Saved {
        let fill = if self.seen[WORDS - 1] == u64::MAX {
            u64::MAX
        } else {
            0
        };
        let words = self
            .seen
            .iter()
            .rposition(|&w| w != fill)
            .map_or(0, |last| last + 1);
        let mut saved = Saved {
            bytes: [0; SAVED_MAX],
            len: 17 + 8 * words,
        };
        saved.bytes[..8].copy_from_slice(&self.highest.to_le_bytes());
        saved.bytes[8..16].copy_from_slice(&self.missing.to_le_bytes());
        saved.bytes[16] = fill as u8;
        for (chunk, word) in saved.bytes[17..saved.len]
            .chunks_exact_mut(8)
            .zip(self.seen)
        {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        saved
    }

    /// Reads [`Window::to_bytes`]; `None` if `bytes` is not such a form.
    pub fn from_bytes(bytes: &[u8]) -> Option<Window> {
        let word = |at: usize| {
            let chunk: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
            Some(u64::from_le_bytes(chunk))
        };
        let fill = match *bytes.get(16)? {
            0x00 => 0,
            0xff => u64::MAX,
            _ => return None,
        };
        let words = (bytes.len() - 17) / 8;
        if !(bytes.len() - 17).is_multiple_of(8) || words > WORDS {
            return None;
        }
        let mut seen = [fill; WORDS];
        for (i, slot) in seen.iter_mut().take(words).enumerate() {
            *slot = word(17 + 8 * i)?;
        }
        Some(Window {
            highest: word(0)?,
            seen,
            missing: word(8)?,
        })
    }

    /// Judges `seq` and records it when it is accepted.
    pub fn check(&mut self, seq: u64) -> Verdict {
        if seq > self.highest.saturating_add(MAX_JUMP) {
            return Verdict::Jump {
                highest: self.highest,
            };
        }
        if seq > self.highest {
            let missing = seq - self.highest - 1;
            self.advance(seq);
            self.missing += missing;
            return Verdict::Fresh { missing };
        }
        let back = self.highest - seq;
        if back >= WINDOW {
            return Verdict::TooOld {
                highest: self.highest,
            };
        }
        if self.bit(back) {
            return Verdict::Replayed {
                highest: self.highest,
            };
        }
        self.set(back);
        self.missing = self.missing.saturating_sub(1);
        Verdict::FillsGap
    }
}

/// Every station's window.
#[derive(Debug, Default)]
pub struct Sequences {
    windows: HashMap<Arc<str>, Window>,
}

impl Sequences {
    pub fn new() -> Sequences {
        Sequences::default()
    }

    /// Starts from saved windows (after a restart).
    pub fn restore(windows: impl IntoIterator<Item = (Arc<str>, Window)>) -> Sequences {
        Sequences {
            windows: windows.into_iter().collect(),
        }
    }

    /// Judges record `seq` of `station`; the first record of a station is always fresh.
    pub fn check(&mut self, station: &Arc<str>, seq: u64) -> Verdict {
        match self.windows.get_mut(station) {
            Some(w) => w.check(seq),
            None => {
                self.windows.insert(station.clone(), Window::first(seq));
                Verdict::Fresh { missing: 0 }
            }
        }
    }

    /// Starts `station`'s window again at `seq` (a counter reset, or a signed jump), keeping
    /// its count of missing records.
    pub fn rebase(&mut self, station: &Arc<str>, seq: u64) {
        let missing = self.windows.get(station).map_or(0, |w| w.missing);
        let mut window = Window::first(seq);
        window.missing = missing;
        self.windows.insert(station.clone(), window);
    }

    /// Forgets `station`'s window (an admin reset: a replaced logger counts from 1 again);
    /// its next record starts a new one. Returns the window it had.
    pub fn reset(&mut self, station: &str) -> Option<Window> {
        self.windows.remove(station)
    }

    /// A station's window (to save it with the records it let in).
    pub fn window(&self, station: &str) -> Option<&Window> {
        self.windows.get(station)
    }

    /// A station's highest `seq` and its missing-record count.
    pub fn station(&self, station: &str) -> Option<(u64, u64)> {
        self.windows.get(station).map(|w| (w.highest, w.missing))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn station() -> Arc<str> {
        Arc::from("S1")
    }

    #[test]
    fn increasing_seqs_are_fresh_and_a_repeat_is_a_replay() {
        let mut s = Sequences::new();
        let id = station();
        assert_eq!(s.check(&id, 10), Verdict::Fresh { missing: 0 });
        assert_eq!(s.check(&id, 11), Verdict::Fresh { missing: 0 });
        assert_eq!(s.check(&id, 11), Verdict::Replayed { highest: 11 });
        assert_eq!(s.check(&id, 10), Verdict::Replayed { highest: 11 });
    }

    #[test]
    fn a_jump_counts_missing_records_and_late_ones_fill_the_gap_once() {
        let mut s = Sequences::new();
        let id = station();
        s.check(&id, 1);
        assert_eq!(s.check(&id, 5), Verdict::Fresh { missing: 3 });
        assert_eq!(s.station("S1"), Some((5, 3)));
        assert_eq!(s.check(&id, 3), Verdict::FillsGap);
        assert_eq!(s.station("S1"), Some((5, 2)));
        assert_eq!(s.check(&id, 3), Verdict::Replayed { highest: 5 });
    }

    #[test]
    fn records_below_the_window_are_too_old_to_tell_from_replays() {
        let mut s = Sequences::new();
        let id = station();
        s.check(&id, 5000);
        assert_eq!(
            s.check(&id, 5000 - WINDOW),
            Verdict::TooOld { highest: 5000 }
        );
        assert_eq!(s.check(&id, 5000 - WINDOW + 1), Verdict::FillsGap);
    }

    #[test]
    fn the_window_remembers_across_shifts_of_every_size() {
        for step in [1, 3, 63, 64, 65, 200, 1023, 1024, 5000] {
            let mut w = Window::first(0);
            let mut accepted = vec![0u64];
            let mut seq = 0;
            for _ in 0..20 {
                seq += step;
                assert!(matches!(w.check(seq), Verdict::Fresh { .. }));
                accepted.push(seq);
            }
            for &a in &accepted {
                let verdict = w.check(a);
                if seq - a < WINDOW {
                    assert_eq!(
                        verdict,
                        Verdict::Replayed { highest: seq },
                        "step {step}, seq {a}"
                    );
                } else {
                    assert_eq!(
                        verdict,
                        Verdict::TooOld { highest: seq },
                        "step {step}, seq {a}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_saved_window_restores_the_same_verdicts() {
        let mut s = Sequences::new();
        let id = station();
        for seq in [100, 101, 103, 170, 2000, 1990] {
            s.check(&id, seq);
        }
        let saved = s.window("S1").map(Window::to_bytes).unwrap();
        let window = Window::from_bytes(saved.as_slice()).unwrap();
        assert_eq!(Some(&window), s.window("S1"));
        let mut again = Sequences::restore([(id.clone(), window)]);
        assert_eq!(again.check(&id, 1990), Verdict::Replayed { highest: 2000 });
        assert_eq!(again.check(&id, 2000), Verdict::Replayed { highest: 2000 });
        assert_eq!(again.check(&id, 1991), Verdict::FillsGap);
        assert_eq!(
            again.station("S1"),
            s.station("S1").map(|(h, m)| (h, m - 1))
        );
    }

    #[test]
    fn a_station_that_sends_in_order_saves_a_short_window() {
        let mut w = Window::first(1);
        for seq in 2..=3000 {
            w.check(seq);
        }
        assert_eq!(w.to_bytes().as_slice().len(), 17, "all ones: the fill only");
        let young = Window::first(5);
        assert_eq!(
            young.to_bytes().as_slice().len(),
            17 + 8,
            "one word, then zeros"
        );
        for window in [w, young] {
            assert_eq!(
                Window::from_bytes(window.to_bytes().as_slice()),
                Some(window)
            );
        }
    }

    #[test]
    fn a_damaged_saved_window_is_refused() {
        let mut w = Window::first(7);
        w.check(9);
        let saved = w.to_bytes();
        let bytes = saved.as_slice();
        assert_eq!(Window::from_bytes(bytes), Some(w));
        assert!(Window::from_bytes(&bytes[..bytes.len() - 1]).is_none());
        assert!(Window::from_bytes(&bytes[..16]).is_none());
        let mut bad_fill = bytes.to_vec();
        bad_fill[16] = 0x7f;
        assert!(Window::from_bytes(&bad_fill).is_none());
        let too_long = [bytes, &[0; 8 * 16]].concat();
        assert!(Window::from_bytes(&too_long).is_none());
    }
}
