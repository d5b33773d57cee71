//! Whether the consumer is alive in its group (pure): a member that stays out of its group while
//! a broker answers is stuck, and is recreated by the poll loop.
//!
//! librdkafka rejoins by itself after a broker restart or a coordinator move, but a consumer that
//! never rejoined was seen twice while testing aurore: it answers nothing, stores nothing, and
//! only its lag grows. The judgement uses librdkafka's statistics (`statistics.interval.ms`,
//! 5 s): `cgrp.join_state` is `steady` while the member is in the group with its assignment
//! applied, whatever the protocol. A broker that does not answer is not the consumer's fault:
//! that time is not counted.

use std::time::{Duration, Instant};

/// What one statistics report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// A broker of the cluster (not a bootstrap address) is connected (`state` `UP`).
    pub broker_up: bool,
    /// The member is in its group with its assignment applied (`cgrp.join_state` `steady`).
    pub in_group: bool,
}

#[derive(Debug)]
pub struct Liveness {
    bound: Duration,
    /// Since when a broker has answered while the member was out of its group.
    out_since: Option<Instant>,
}

impl Liveness {
    /// Stuck after `bound` out of the group with a broker answering.
    pub fn new(bound: Duration) -> Self {
        Liveness { bound, out_since: None }
    }

    /// Takes in a report; true once the member has been out of its group, with a broker
    /// answering, for `bound` or longer.
    pub fn observe(&mut self, now: Instant, seen: Observed) -> bool {
        if seen.in_group || !seen.broker_up {
            self.out_since = None;
            return false;
        }
        let since = *self.out_since.get_or_insert(now);
        now.duration_since(since) >= self.bound
    }

    /// A new consumer was made: it gets the whole bound to join.
    pub fn reset(&mut self) {
        self.out_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        l.reset();
        assert!(!l.observe(t + Duration::from_secs(65), OUT), "a new consumer gets the whole bound");
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
