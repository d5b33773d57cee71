//! The bounded buffer's accounting: events and bytes fetched from Kafka and not yet persisted.
//!
//! The events themselves live in the batches being built and persisted; this only counts them,
//! with atomics, so the poll thread can decide to stop taking messages without taking a lock. It
//! never refuses an event: full means "take no more" ([`Backpressure`]: hold, then pause), never
//! "drop".

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How `--buffer-capacity-bytes` is shared, so that everything that grows with it stays within it
/// (README, "Memory"): librdkafka's prefetch (`queued.max.messages.kbytes`) takes an eighth,
/// within 1–16 MiB and never more than a quarter, and as much again is left for the fetch
/// response being read (librdkafka caps `fetch.max.bytes` at the prefetch when it is not set);
/// the buffer's own byte capacity, for the messages taken and not yet persisted, is the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// librdkafka's prefetch, in bytes.
    pub prefetch_bytes: usize,
    /// The buffer's byte capacity ([`Buffer::capacity_bytes`]).
    pub buffer_bytes: usize,
}

impl Budget {
    pub fn of(capacity_bytes: usize) -> Self {
        let prefetch_bytes = (capacity_bytes / 8).clamp(1 << 20, 16 << 20).min(capacity_bytes / 4);
        Budget { prefetch_bytes, buffer_bytes: capacity_bytes - 2 * prefetch_bytes }
    }
}

#[derive(Debug)]
pub struct Buffer {
    events: AtomicUsize,
    bytes: AtomicUsize,
    pub capacity_events: usize,
    pub capacity_bytes: usize,
    resume_events: usize,
    resume_bytes: usize,
}

impl Buffer {
    pub fn new(capacity_events: usize, capacity_bytes: usize, resume_percent: u8) -> Self {
        let pct = |c: usize| c / 100 * resume_percent as usize + c % 100 * resume_percent as usize / 100;
        Buffer {
            events: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            capacity_events,
            capacity_bytes,
            resume_events: pct(capacity_events),
            resume_bytes: pct(capacity_bytes),
        }
    }

    pub fn add(&self, events: usize, bytes: usize) {
        self.events.fetch_add(events, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    pub fn release(&self, events: usize, bytes: usize) {
        self.events.fetch_sub(events, Relaxed);
        self.bytes.fetch_sub(bytes, Relaxed);
    }

    pub fn events(&self) -> usize {
        self.events.load(Relaxed)
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Relaxed)
    }

    /// At or over either capacity: fetching must pause.
    pub fn is_full(&self) -> bool {
        self.is_full_with(0, 0)
    }

    /// Whether it would be full with `events` and `bytes` more, taken but not yet added.
    pub fn is_full_with(&self, events: usize, bytes: usize) -> bool {
        self.events() + events >= self.capacity_events || self.bytes() + bytes >= self.capacity_bytes
    }

    /// Below the low-water mark on both counts: fetching may resume.
    pub fn may_resume(&self) -> bool {
        self.events() < self.resume_events && self.bytes() < self.resume_bytes
    }

    /// Fill level, in percent of the fuller of the two capacities.
    pub fn utilization_percent(&self) -> f64 {
        let e = self.events() as f64 / self.capacity_events as f64;
        let b = self.bytes() as f64 / self.capacity_bytes as f64;
        100.0 * e.max(b)
    }
}

/// What the poll loop does about back-pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Take messages.
    Fetch,
    /// The buffer is full: take nothing, and do not poll (librdkafka keeps its prefetched
    /// messages, so taking restarts at once when a batch commits).
    Hold,
    /// The assignment is paused (held too long, or the circuit breaker is open); polling goes
    /// on, taking nothing.
    Pause,
}

/// Back-pressure in two steps: a full buffer holds, and pauses only if it stays full for
/// `hold_max` (or at once with the circuit breaker open). Both end below the buffer's
/// low-water mark (and with the breaker closed).
#[derive(Debug)]
pub struct Backpressure {
    hold_max: Duration,
    flow: Flow,
    full_since: Option<Instant>,
}

impl Backpressure {
    pub fn new(hold_max: Duration) -> Self {
        Backpressure { hold_max, flow: Flow::Fetch, full_since: None }
    }

    pub fn flow(&self) -> Flow {
        self.flow
    }

    /// The flow for now, given the buffer and the breaker.
    pub fn update(&mut self, buffer: &Buffer, breaker_open: bool, now: Instant) -> Flow {
        // Hysteresis: once constrained, stay so until below the low-water mark.
        let full = if self.full_since.is_some() { !buffer.may_resume() } else { buffer.is_full() };
        self.full_since = if full { Some(self.full_since.unwrap_or(now)) } else { None };
        self.flow = match self.full_since {
            _ if breaker_open => Flow::Pause,
            Some(since) if now.duration_since(since) >= self.hold_max => Flow::Pause,
            Some(_) => Flow::Hold,
            None => Flow::Fetch,
        };
        self.flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_holds_then_pauses_and_both_end_below_the_low_water_mark() {
        let b = Buffer::new(10, 1000, 50);
        let mut bp = Backpressure::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(bp.update(&b, false, t0), Flow::Fetch);
        b.add(10, 100);
        assert_eq!(bp.update(&b, false, t0), Flow::Hold);
        assert_eq!(bp.update(&b, false, t0 + Duration::from_millis(999)), Flow::Hold);
        assert_eq!(bp.update(&b, false, t0 + Duration::from_secs(1)), Flow::Pause, "held for hold_max");
        b.release(5, 50);
        assert_eq!(bp.update(&b, false, t0 + Duration::from_secs(2)), Flow::Pause, "5 of 10 is not below 50 %");
        b.release(1, 10);
        assert_eq!(bp.update(&b, false, t0 + Duration::from_secs(3)), Flow::Fetch);
        // A short hold that ends before hold_max never pauses.
        b.add(6, 60);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(bp.update(&b, false, t1), Flow::Hold);
        b.release(6, 60);
        assert_eq!(bp.update(&b, false, t1 + Duration::from_millis(200)), Flow::Fetch);
        // The hold_max clock restarts with each hold.
        b.add(10, 100);
        assert_eq!(bp.update(&b, false, t1 + Duration::from_millis(900)), Flow::Hold);
        assert_eq!(bp.update(&b, false, t1 + Duration::from_millis(1800)), Flow::Hold);
    }

    #[test]
    fn an_open_breaker_pauses_whatever_the_buffer_holds() {
        let b = Buffer::new(10, 1000, 50);
        let mut bp = Backpressure::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(bp.update(&b, true, t0), Flow::Pause);
        assert_eq!(bp.update(&b, false, t0), Flow::Fetch);
        b.add(10, 100);
        assert_eq!(bp.update(&b, true, t0), Flow::Pause);
        assert_eq!(bp.update(&b, false, t0), Flow::Hold, "closed again, still full: hold");
    }

    #[test]
    fn the_budget_leaves_the_buffer_at_least_half_and_librdkafka_at_most_a_quarter() {
        const MIB: usize = 1 << 20;
        assert_eq!(Budget::of(64 * MIB), Budget { prefetch_bytes: 8 * MIB, buffer_bytes: 48 * MIB }, "the default");
        assert_eq!(Budget::of(16 * MIB), Budget { prefetch_bytes: 2 * MIB, buffer_bytes: 12 * MIB });
        assert_eq!(Budget::of(4 * MIB), Budget { prefetch_bytes: MIB, buffer_bytes: 2 * MIB }, "at least 1 MiB");
        assert_eq!(Budget::of(1024 * MIB), Budget { prefetch_bytes: 16 * MIB, buffer_bytes: 992 * MIB }, "at most 16 MiB");
        for capacity in (0..40).map(|i| 1usize << i).chain([3, 1000, 3 * MIB + 7, 200 * MIB + 1, usize::MAX / 2]) {
            let b = Budget::of(capacity);
            assert!(b.prefetch_bytes <= capacity / 4 && b.prefetch_bytes <= 16 * MIB, "{capacity}: {b:?}");
            assert_eq!(b.buffer_bytes + 2 * b.prefetch_bytes, capacity, "{capacity}: the whole budget, no more");
            assert!(b.buffer_bytes >= capacity / 2, "{capacity}: {b:?}");
        }
    }

    #[test]
    fn full_pauses_and_resumes_below_the_low_water_mark() {
        let b = Buffer::new(10, 1000, 50);
        b.add(9, 100);
        assert!(!b.is_full());
        assert!(b.is_full_with(1, 0) && b.is_full_with(0, 1_000) && !b.is_full_with(0, 0), "taken, not yet added, counts");
        b.add(1, 10);
        assert!(b.is_full() && !b.may_resume());
        b.release(5, 50);
        assert!(!b.is_full() && !b.may_resume(), "5 of 10 is not below 50 %");
        b.release(1, 10);
        assert!(b.may_resume());
        assert_eq!((b.events(), b.bytes()), (4, 50));
        b.add(0, 960);
        assert!(b.is_full(), "bytes alone fill it");
        assert_eq!(b.utilization_percent(), 101.0);
    }
}
