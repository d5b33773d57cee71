//! What flush workers tell the poll thread, and the in-flight bookkeeping that lets a
//! revocation wait (with a timeout) for the revoked partitions' batches to commit.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::batch::Unit;
use crate::kafka::offsets::Epoch;

/// A unit's outcome, sent by a worker after its transaction ended.
#[derive(Debug)]
pub enum Ack {
    /// Committed to PostgreSQL: `next_offset` may be committed to Kafka.
    Persisted { topic: Arc<str>, partition: i32, epoch: Epoch, next_offset: i64 },
    /// Rolled back: consumer_offsets had moved on. `stored` is what it holds now (outer
    /// `None`: it could not be read).
    Fenced { topic: Arc<str>, partition: i32, epoch: Epoch, stored: Option<Option<i64>> },
}

#[derive(Debug, Default)]
struct Flight {
    in_flight: usize,
    persisted: Option<i64>,
}

/// Units sent to workers and not yet finished, per partition (updated per unit, not per event).
#[derive(Debug, Default)]
pub struct Handoff {
    flights: Mutex<HashMap<(Arc<str>, i32), Flight>>,
    done: Condvar,
}

impl Handoff {
    pub fn sent(&self, units: &[Unit]) {
        let mut f = self.flights.lock().expect("handoff lock");
        for u in units {
            f.entry((u.topic.clone(), u.partition)).or_default().in_flight += 1;
        }
    }

    /// A unit finished; `persisted` is its `next_offset` if it committed.
    pub fn done(&self, topic: &Arc<str>, partition: i32, persisted: Option<i64>) {
        let mut f = self.flights.lock().expect("handoff lock");
        if let Some(flight) = f.get_mut(&(topic.clone(), partition)) {
            flight.in_flight = flight.in_flight.saturating_sub(1);
            if persisted.is_some() {
                flight.persisted = persisted;
            }
        }
        self.done.notify_all();
    }

    /// Waits until none of `partitions` has a unit in flight, or `timeout`; forgets them and
    /// returns the last persisted `next_offset` of each that has one.
    pub fn drain(&self, partitions: &[(Arc<str>, i32)], timeout: Duration) -> (Vec<(Arc<str>, i32, i64)>, bool) {
        let deadline = Instant::now() + timeout;
        let mut f = self.flights.lock().expect("handoff lock");
        let busy = |f: &HashMap<(Arc<str>, i32), Flight>| partitions.iter().any(|k| f.get(k).is_some_and(|x| x.in_flight > 0));
        while busy(&f) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            f = self.done.wait_timeout(f, left).expect("handoff lock").0;
        }
        let drained = !busy(&f);
        let mut persisted = Vec::new();
        for k in partitions {
            if let Some(Flight { persisted: Some(n), .. }) = f.remove(k) {
                persisted.push((k.0.clone(), k.1, n));
            }
        }
        (persisted, drained)
    }

    pub fn total_in_flight(&self) -> usize {
        self.flights.lock().expect("handoff lock").values().map(|f| f.in_flight).sum()
    }
}
