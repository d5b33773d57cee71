//! Kafka's committed offsets follow PostgreSQL's: the one owner of each partition's progress on
//! the poll thread (pure).
//!
//! Per owned partition it keeps the `next_offset` PostgreSQL holds (from a commit of ours, or
//! read on assignment) and the last one Kafka confirmed. Commits are sent after each persisted
//! batch; commits made during a rebalance fail (`ILLEGAL_GENERATION`), and a partition that
//! receives nothing more would never be committed again, so what Kafka has not confirmed is
//! committed again every [`RECOMMIT`]. The `+ 1` of "last processed + 1" is in the units'
//! `next_offset`, nowhere here.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often what Kafka has not confirmed is committed again.
pub const RECOMMIT: Duration = Duration::from_secs(2);

/// `(topic, partition, next_offset)`: an offset to commit to Kafka, as Kafka wants it (the
/// next message to read).
pub type Offset = (Arc<str>, i32, i64);

#[derive(Debug)]
struct Progress {
    topic: Arc<str>,
    partition: i32,
    /// What PostgreSQL holds.
    persisted: i64,
    /// What Kafka last confirmed.
    confirmed: Option<i64>,
}

#[derive(Debug)]
pub struct Commits {
    parts: Vec<Progress>,
    /// Persisted since the last [`Commits::take_due`].
    fresh: Vec<Offset>,
    next_recommit: Instant,
}

impl Default for Commits {
    fn default() -> Self {
        Commits { parts: Vec::new(), fresh: Vec::new(), next_recommit: Instant::now() + RECOMMIT }
    }
}

impl Commits {
    fn get(&mut self, topic: &str, partition: i32) -> Option<&mut Progress> {
        self.parts.iter_mut().find(|p| p.partition == partition && &*p.topic == topic)
    }

    /// PostgreSQL holds `next` for the partition, read on (re)assignment: Kafka must follow, at
    /// the next recommit (the previous owner may have died between its COMMIT and its Kafka
    /// commit).
    pub fn stored(&mut self, topic: &Arc<str>, partition: i32, next: i64) {
        match self.get(topic, partition) {
            Some(p) => p.persisted = next,
            None => self.parts.push(Progress { topic: topic.clone(), partition, persisted: next, confirmed: None }),
        }
    }

    /// A batch of ours committed `next` for the partition: commit it to Kafka now.
    pub fn persisted(&mut self, topic: &Arc<str>, partition: i32, next: i64) {
        self.stored(topic, partition, next);
        self.fresh.push((topic.clone(), partition, next));
    }

    /// Kafka confirmed a commit.
    pub fn confirmed(&mut self, topic: &str, partition: i32, next: i64) {
        if let Some(p) = self.get(topic, partition) {
            p.confirmed = Some(next);
        }
    }

    /// The partition is no longer ours.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.parts.retain(|p| !(p.partition == partition && &*p.topic == topic));
        self.fresh.retain(|(t, p, _)| !(*p == partition && &**t == topic));
    }

    /// What to commit now: the freshly persisted, and every [`RECOMMIT`] what Kafka has not
    /// confirmed.
    pub fn take_due(&mut self, now: Instant) -> Vec<Offset> {
        let mut due = std::mem::take(&mut self.fresh);
        if now >= self.next_recommit {
            self.next_recommit = now + RECOMMIT;
            for p in &self.parts {
                if p.confirmed != Some(p.persisted) && !due.iter().any(|(t, q, _)| *q == p.partition && Arc::ptr_eq(t, &p.topic))
                {
                    due.push((p.topic.clone(), p.partition, p.persisted));
                }
            }
        }
        due
    }

    /// What PostgreSQL holds for these partitions (the commit of a revocation).
    pub fn of(&self, partitions: &[(Arc<str>, i32)]) -> Vec<Offset> {
        self.parts
            .iter()
            .filter(|p| partitions.iter().any(|(t, q)| *q == p.partition && **t == *p.topic))
            .map(|p| (p.topic.clone(), p.partition, p.persisted))
            .collect()
    }

    /// How many owned partitions Kafka has not confirmed at what PostgreSQL holds.
    pub fn unconfirmed(&self) -> usize {
        self.parts.iter().filter(|p| p.confirmed != Some(p.persisted)).count()
    }

    /// What PostgreSQL holds for every owned partition (the final commit).
    pub fn all(&self) -> Vec<Offset> {
        self.parts.iter().map(|p| (p.topic.clone(), p.partition, p.persisted)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_commits_go_out_at_once_and_unconfirmed_ones_again_every_recommit() {
        let mut c = Commits::default();
        let t: Arc<str> = Arc::from("events");
        let now = Instant::now();
        c.stored(&t, 0, 10);
        assert!(c.take_due(now).is_empty(), "a stored start waits for the recommit");
        assert_eq!(c.unconfirmed(), 1);
        c.persisted(&t, 1, 5);
        assert_eq!(c.take_due(now), vec![(t.clone(), 1, 5)]);
        assert!(c.take_due(now).is_empty());
        c.confirmed("events", 1, 5);
        assert_eq!(c.unconfirmed(), 1, "partition 0 is still unconfirmed");
        let later = now + RECOMMIT * 2;
        assert_eq!(c.take_due(later), vec![(t.clone(), 0, 10)], "only the unconfirmed one");
        assert!(c.take_due(later).is_empty(), "not before the next recommit");
        c.forget("events", 0);
        assert!(c.take_due(later + RECOMMIT * 2).is_empty());
        assert_eq!(c.of(&[(t.clone(), 1)]), vec![(t.clone(), 1, 5)]);
        assert_eq!(c.all(), vec![(t, 1, 5)]);
    }
}
