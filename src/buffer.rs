//! The bounded buffer's accounting: events and bytes fetched from Kafka and not yet persisted.
//!
//! The events themselves live in the batches being built and persisted; this only counts them,
//! with atomics, so the poll thread can decide to pause fetching without taking a lock. It never
//! refuses an event: full means "pause fetching", never "drop".

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

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
        self.events() >= self.capacity_events || self.bytes() >= self.capacity_bytes
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_pauses_and_resumes_below_the_low_water_mark() {
        let b = Buffer::new(10, 1000, 50);
        b.add(9, 100);
        assert!(!b.is_full());
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
