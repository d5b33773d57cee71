//! The circuit breaker around PostgreSQL, shared by the flush workers.
//!
//! Closed: every attempt goes through; a transient failure is retried after an exponential
//! backoff with jitter. After `threshold` consecutive transient failures it opens: attempts wait
//! until the backoff has passed (fetching from Kafka is paused meanwhile), then one probe is
//! let through (half-open). The probe's success closes it; its failure re-opens it with a longer
//! backoff, up to the cap. Uses tokio's clock, so tests can pause time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl State {
    /// As `/health` and the logs say it: `closed`, `half_open`, `open`.
    pub fn label(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half_open",
            State::Open => "open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        opened: u32,
    },
    /// `probe`: the number of the probe let through last ([`Breaker::probes`]).
    HalfOpen {
        probing: bool,
        opened: u32,
        probe: u64,
    },
}

#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    state: AtomicU8,
    threshold: u32,
    base: Duration,
    max: Duration,
    /// Probes let through so far: numbers each, so that a late drop frees only its own place.
    probes: std::sync::atomic::AtomicU64,
}

impl Breaker {
    pub fn new(threshold: u32, base: Duration, max: Duration) -> Self {
        Breaker {
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            state: AtomicU8::new(0),
            threshold,
            base,
            max,
            probes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            0 => State::Closed,
            1 => State::HalfOpen,
            _ => State::Open,
        }
    }

    fn set(&self, inner: &mut Inner, next: Inner) {
        let s = match next {
            Inner::Closed { .. } => State::Closed,
            Inner::Open { .. } => State::Open,
            Inner::HalfOpen { .. } => State::HalfOpen,
        };
        *inner = next;
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// Waits until an attempt may be made. Keep the [`Attempt`] until [`Breaker::success`] or
    /// [`Breaker::failure`] has told its outcome: if it is the half-open probe and is dropped
    /// untold (PostgreSQL refused a row, the dead letter topic failed), the next attempt probes.
    pub async fn ready(&self) -> Attempt<'_> {
        loop {
            let wait = {
                let mut inner = self.inner.lock().expect("breaker lock");
                match *inner {
                    Inner::Closed { .. } => return Attempt { breaker: self, probe: None },
                    Inner::Open { until, opened } => {
                        let now = Instant::now();
                        if now >= until {
                            let probe = self.probes.fetch_add(1, Ordering::Relaxed) + 1;
                            self.set(&mut inner, Inner::HalfOpen { probing: true, opened, probe });
                            return Attempt { breaker: self, probe: Some(probe) };
                        }
                        until - now
                    }
                    Inner::HalfOpen { ref mut probing, ref mut probe, .. } => {
                        if !*probing {
                            *probing = true;
                            *probe = self.probes.fetch_add(1, Ordering::Relaxed) + 1;
                            return Attempt { breaker: self, probe: Some(*probe) };
                        }
                        // Another worker's probe is out; look again shortly.
                        Duration::from_millis(50)
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// An untold probe's end: another may go (unless the breaker has moved on meanwhile).
    fn release(&self, probe: u64) {
        let mut inner = self.inner.lock().expect("breaker lock");
        if let Inner::HalfOpen { ref mut probing, probe: p, .. } = *inner
            && p == probe
        {
            *probing = false;
        }
    }

    pub fn success(&self) {
        let mut inner = self.inner.lock().expect("breaker lock");
        if !matches!(*inner, Inner::Closed { failures: 0 }) {
            self.set(&mut inner, Inner::Closed { failures: 0 });
        }
    }

    /// Records a transient failure; returns how long to wait before the next attempt.
    pub fn failure(&self) -> Duration {
        let mut inner = self.inner.lock().expect("breaker lock");
        let now = Instant::now();
        match *inner {
            Inner::Closed { failures } => {
                let failures = failures + 1;
                let delay = self.backoff(failures - 1);
                if failures >= self.threshold {
                    self.set(&mut inner, Inner::Open { until: now + delay, opened: 1 });
                } else {
                    *inner = Inner::Closed { failures };
                }
                delay
            }
            Inner::HalfOpen { opened, .. } => {
                let delay = self.backoff(self.threshold - 1 + opened);
                self.set(&mut inner, Inner::Open { until: now + delay, opened: opened + 1 });
                delay
            }
            Inner::Open { until, .. } => until.saturating_duration_since(now),
        }
    }

    /// base × 2^n, capped, with jitter over its upper half (so concurrent workers spread out).
    fn backoff(&self, n: u32) -> Duration {
        let d = self.base.saturating_mul(1u32 << n.min(20)).min(self.max);
        d / 2 + d.mul_f64(fastrand::f64() / 2.0)
    }
}

/// One attempt let through by [`Breaker::ready`]; the half-open probe if `probe` is set (its
/// number, so that a late drop cannot free a later probe's place).
#[must_use = "the attempt's outcome is told while it is held"]
pub struct Attempt<'a> {
    breaker: &'a Breaker,
    probe: Option<u64>,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(probe) = self.probe {
            self.breaker.release(probe);
        }
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
