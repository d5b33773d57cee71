//! Whether the consumer is alive in its group (pure): a member that stays out of its group while
//! a broker answers is stuck, and is recreated by the poll loop.
//!
//! librdkafka rejoins by itself after a broker restart or a coordinator move, but a consumer that
//! never rejoined was seen twice while testing aurore: it answers nothing, stores nothing, and
//! only its lag grows. The judgement uses librdkafka's statistics (`statistics.interval.ms`,
//! 5 s): `cgrp.join_state` is `steady` while the member is in the group with its assignment
//! applied, whatever the protocol. A broker that does not answer is not the consumer's fault:
//! that time is not counted.
//!
//! That judgement runs on the poll thread, so it cannot see the poll thread itself stop (a call
//! into librdkafka that never returns). [`PollWatch`] does: the loop stamps it, and a task on the
//! async runtime ([`PollWatch::stalled`]) stops the process when the stamp grows older than the
//! bound: nothing can take a thread back from inside librdkafka, and PostgreSQL holds every
//! committed offset, so a restart (static membership: a takeover in about a second) loses
//! nothing.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one statistics report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The cluster answered the poll loop's probe lately ([`PROBE_EVERY`]), asked by a client
    /// of its own (`client::cluster_answers`). The consumer's own view cannot say: with nothing
    /// assigned it keeps no connection open (librdkafka's sparse connections); it may know no
    /// broker at all (confluentinc/librdkafka#5301); and a frozen broker (SIGSTOP) kept its
    /// connection `UP` in the statistics while it answered nothing (a newcomer's trial: the
    /// consumer was recreated for it).
    pub broker_up: bool,
    /// The member is in its group with its assignment applied (`cgrp.join_state` `steady`).
    pub in_group: bool,
}

#[derive(Debug, Clone)]
pub struct Liveness {
    base: Duration,
    /// The bound now: doubled by each recreation that did not bring the member back into its
    /// group, up to [`MAX_BACKOFF`] × `base`; back to `base` once in the group.
    bound: Duration,
    /// Since when a broker has answered while the member was out of its group.
    out_since: Option<Instant>,
}

/// The most the bound grows by recreations in a row: a recreation interrupts the rebalance
/// that would have let the member in, so recreating at a fixed pace can keep a group from ever
/// settling (seen with a 10 s bound after a broker restart: each new member waited for the one
/// before it, which had not left, to time out).
pub const MAX_BACKOFF: u32 = 8;

impl Liveness {
    /// Stuck after `bound` out of the group with a broker answering.
    pub fn new(bound: Duration) -> Self {
        Liveness { base: bound, bound, out_since: None }
    }

    /// Takes in a report; true once the member has been out of its group, with a broker
    /// answering, for the bound or longer.
    pub fn observe(&mut self, now: Instant, seen: Observed) -> bool {
        if seen.in_group {
            self.bound = self.base;
        }
        if seen.in_group || !seen.broker_up {
            self.out_since = None;
            return false;
        }
        let since = *self.out_since.get_or_insert(now);
        now.duration_since(since) >= self.bound
    }

    /// aurore's own rebalance callback has just returned: the clock restarts. Time librdkafka
    /// waits for the application (`wait-assign-call`, `wait-unassign-call`) is aurore's (the
    /// revocation drain, reading where partitions start: bounded, and watched by [`PollWatch`]),
    /// not the member's being stuck; a slow PostgreSQL during a rebalance had a consumer
    /// recreated twice with a 10 s bound (a newcomer's trial). A librdkafka that never hands the
    /// callback over still counts.
    pub fn application_turn_done(&mut self) {
        self.out_since = None;
    }

    /// A new consumer was made: it gets twice the bound to join (see [`MAX_BACKOFF`]).
    pub fn recreated(&mut self) {
        self.out_since = None;
        self.bound = (self.bound * 2).min(self.base * MAX_BACKOFF);
    }

    /// The bound now.
    pub fn bound(&self) -> Duration {
        self.bound
    }
}

/// How often the poll loop asks the cluster for metadata while the member is out of its group.
pub const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What the poll thread was doing at its last stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Polling = 0,
    Assigning = 1,
    Revoking = 2,
    Closing = 3,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Polling => "polling",
            Phase::Assigning => "assigning partitions",
            Phase::Revoking => "revoking partitions",
            Phase::Closing => "closing the consumer",
        }
    }
}

/// The poll thread's last sign of life: stamped by the loop (one relaxed store an iteration, not
/// one an event), read once a second by the watchdog.
#[derive(Debug)]
pub struct PollWatch {
    epoch: Instant,
    /// Milliseconds since `epoch` at the last stamp.
    last_ms: AtomicU64,
    phase: AtomicU8,
}

impl Default for PollWatch {
    fn default() -> Self {
        PollWatch { epoch: Instant::now(), last_ms: AtomicU64::new(0), phase: AtomicU8::new(Phase::Polling as u8) }
    }
}

impl PollWatch {
    /// The thread is alive, doing `phase`.
    pub fn stamp(&self, phase: Phase) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// How long since the last stamp, at `now`, and what the thread was doing then.
    pub fn silent_for(&self, now: Instant) -> (Duration, Phase) {
        let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let phase = match self.phase.load(Ordering::Relaxed) {
            1 => Phase::Assigning,
            2 => Phase::Revoking,
            3 => Phase::Closing,
            _ => Phase::Polling,
        };
        (now.saturating_duration_since(last), phase)
    }

    /// `Some` once the thread has been silent for `bound` or longer.
    pub fn stalled(&self, now: Instant, bound: Duration) -> Option<(Duration, Phase)> {
        let (silent, phase) = self.silent_for(now);
        (silent >= bound).then_some((silent, phase))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_thread_silent_for_the_bound_is_stalled_with_its_last_phase() {
        let w = PollWatch::default();
        let t = Instant::now();
        w.stamp(Phase::Revoking);
        let bound = Duration::from_secs(70);
        assert_eq!(w.stalled(t, bound), None);
        assert_eq!(w.stalled(t + Duration::from_secs(69), bound), None);
        let (silent, phase) = w.stalled(t + Duration::from_secs(71), bound).expect("stalled");
        assert!(silent >= bound);
        assert_eq!(phase, Phase::Revoking);
        w.stamp(Phase::Polling);
        assert_eq!(w.stalled(Instant::now(), bound), None, "a stamp restarts the clock");
    }

    const OUT: Observed = Observed { broker_up: true, in_group: false };
    const IN: Observed = Observed { broker_up: true, in_group: true };
    const NO_BROKER: Observed = Observed { broker_up: false, in_group: false };

    #[test]
    fn out_of_the_group_with_a_broker_answering_for_the_bound_is_stuck() {
        let mut l = Liveness::new(Duration::from_secs(60));
        let t = Instant::now();
        assert!(!l.observe(t, OUT));
        assert!(!l.observe(t + Duration::from_secs(59), OUT));
        assert!(l.observe(t + Duration::from_secs(60), OUT));
        l.recreated();
        assert!(!l.observe(t + Duration::from_secs(65), OUT), "a new consumer gets the whole bound");
    }

    #[test]
    fn recreations_in_a_row_double_the_bound_up_to_the_cap_and_joining_resets_it() {
        let base = Duration::from_secs(10);
        let mut l = Liveness::new(base);
        let mut t = Instant::now();
        let mut bounds = Vec::new();
        for _ in 0..6 {
            assert!(!l.observe(t, OUT));
            let b = l.bound();
            assert!(!l.observe(t + b - Duration::from_millis(1), OUT), "not before the bound");
            assert!(l.observe(t + b, OUT));
            bounds.push(b.as_secs());
            l.recreated();
            t += b;
        }
        assert_eq!(bounds, [10, 20, 40, 80, 80, 80]);
        assert!(!l.observe(t, IN));
        assert_eq!(l.bound(), base, "in the group: back to the configured bound");
    }

    #[test]
    fn the_applications_rebalance_turn_restarts_the_clock() {
        let mut l = Liveness::new(Duration::from_secs(10));
        let t = Instant::now();
        assert!(!l.observe(t, OUT));
        // aurore held the callback 9 s (a revocation drain waiting on PostgreSQL).
        l.application_turn_done();
        assert!(!l.observe(t + Duration::from_secs(12), OUT), "counted from the callback's end");
        assert!(!l.observe(t + Duration::from_secs(21), OUT));
        assert!(l.observe(t + Duration::from_secs(22), OUT), "then the whole bound");
    }

    #[test]
    fn joining_or_a_silent_broker_restarts_the_clock() {
        let mut l = Liveness::new(Duration::from_secs(60));
        let t = Instant::now();
        assert!(!l.observe(t, OUT));
        assert!(!l.observe(t + Duration::from_secs(50), IN));
        assert!(!l.observe(t + Duration::from_secs(100), OUT));
        // The broker is down: librdkafka cannot join, and that is not the consumer's fault.
        assert!(!l.observe(t + Duration::from_secs(150), NO_BROKER));
        assert!(!l.observe(t + Duration::from_secs(200), OUT));
        assert!(l.observe(t + Duration::from_secs(260), OUT));
    }
}
