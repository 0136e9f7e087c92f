//! Caps on the alert event streams open at once: per token and in all.
//!
//! An event stream holds its connection (a file descriptor) for as long as the client stays.
//! Without a cap, one token opening stream after stream took every descriptor the process
//! had (918 streams under `ulimit -n 1024`): health probes timed out and new connections
//! failed. [`StreamLimits::acquire`] hands out a [`StreamPermit`] per stream, or refuses with
//! 429 `too_many_streams`; the permit travels with the response body ([`Held`]) and is
//! released when the body is dropped: the client went away, or the server shuts down.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{BoxStream, Stream};
use parking_lot::Mutex;

use super::ApiError;
use crate::metrics as m;

/// How long a refused client is asked to wait: streams last long, slots free slowly.
const RETRY_AFTER_SECS: u64 = 5;

/// The caps and what is open now.
#[derive(Debug)]
pub struct StreamLimits {
    per_token: usize,
    total: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_token: HashMap<String, usize>,
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The token holds `api.max_streams_per_token` streams.
    PerToken(usize),
    /// `api.max_streams` streams are open.
    Total(usize),
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::PerToken(_) => "per_token",
            Refusal::Total(_) => "total",
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        let message = match refusal {
            Refusal::PerToken(limit) => format!(
                "this token already has {limit} event streams open (api.max_streams_per_token); close one first"
            ),
            Refusal::Total(limit) => {
                format!("the server has {limit} event streams open (api.max_streams); retry later")
            }
        };
        ApiError::TooManyRequests {
            code: "too_many_streams",
            message,
            retry_after: RETRY_AFTER_SECS,
        }
    }
}

impl StreamLimits {
    pub fn new(per_token: usize, total: usize) -> Arc<StreamLimits> {
        Arc::new(StreamLimits {
            per_token,
            total,
            open: Mutex::new(Open::default()),
        })
    }

    /// A permit for one more stream of `token`, or why not (counted).
    pub fn acquire(self: &Arc<Self>, token: &str) -> Result<StreamPermit, Refusal> {
        let mut open = self.open.lock();
        let mine = open.by_token.get(token).copied().unwrap_or(0);
        let refusal = if mine >= self.per_token {
            Some(Refusal::PerToken(self.per_token))
        } else if open.total >= self.total {
            Some(Refusal::Total(self.total))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            metrics::counter!(m::API_STREAMS_REFUSED_TOTAL, m::LABEL_REASON => refusal.reason())
                .increment(1);
            return Err(refusal);
        }
        open.total += 1;
        *open.by_token.entry(token.to_owned()).or_default() += 1;
        metrics::gauge!(m::API_STREAMS_OPEN).increment(1.0);
        Ok(StreamPermit {
            limits: self.clone(),
            token: token.to_owned(),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.lock().total
    }

    fn release(&self, token: &str) {
        let mut open = self.open.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_token.get_mut(token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_token.remove(token);
            }
        }
        metrics::gauge!(m::API_STREAMS_OPEN).decrement(1.0);
    }
}

/// One open stream's slot; released when dropped.
#[derive(Debug)]
pub struct StreamPermit {
    limits: Arc<StreamLimits>,
    token: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.limits.release(&self.token);
    }
}

/// A stream that holds its permit for as long as it lives.
pub struct Held<T> {
    inner: BoxStream<'static, T>,
    _permit: StreamPermit,
}

impl<T> Held<T> {
    pub fn new(inner: BoxStream<'static, T>, permit: StreamPermit) -> Held<T> {
        Held {
            inner,
            _permit: permit,
        }
    }
}

impl<T> Stream for Held<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The soft limit on open files of this process (`Max open files` in `/proc/self/limits`;
/// `None` elsewhere or when unlimited).
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A warning when `max_streams` event streams could take more than half of `limit` file
/// descriptors, leaving too little for the API, the probes, the device endpoint and the
/// store.
pub fn headroom_warning(limit: Option<u64>, max_streams: usize) -> Option<String> {
    let limit = limit?;
    ((max_streams as u64).saturating_mul(2) > limit).then(|| {
        format!(
            "api.max_streams ({max_streams}) event streams could take more than half of the \
             {limit} file descriptors this process may open: raise the limit (LimitNOFILE, \
             ulimit -n) or lower api.max_streams"
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn streams_that_could_take_half_the_descriptors_are_warned_about() {
        assert_eq!(headroom_warning(Some(1024), 256), None);
        assert_eq!(headroom_warning(None, 100_000), None);
        let warning = headroom_warning(Some(1024), 600).unwrap();
        assert!(
            warning.contains("1024") && warning.contains("600"),
            "{warning}"
        );
        assert!(open_file_limit().is_none_or(|l| l > 0));
    }

    #[test]
    fn streams_are_capped_per_token_and_in_all_and_a_dropped_permit_frees_its_slot() {
        let limits = StreamLimits::new(2, 3);
        let a1 = limits.acquire("a");
        let a2 = limits.acquire("a");
        assert!(a1.is_ok() && a2.is_ok());
        assert_eq!(limits.acquire("a").err(), Some(Refusal::PerToken(2)));
        let b1 = limits.acquire("b");
        assert!(b1.is_ok());
        assert_eq!(limits.acquire("c").err(), Some(Refusal::Total(3)));
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let a3 = limits.acquire("a");
        assert!(a3.is_ok());
        drop((a2, a3, b1));
        assert_eq!(limits.open(), 0);
        assert!(
            limits.open.lock().by_token.is_empty(),
            "no token left behind"
        );
    }
}
