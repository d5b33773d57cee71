//! Per-partition offset bookkeeping for the exactly-once protocol (pure; owned by the poll thread).
//!
//! PostgreSQL's `consumer_offsets` is the source of truth. For each assigned partition the
//! tracker knows:
//! - the **fence**: the `next_offset` PostgreSQL will hold once every unit sent so far has
//!   committed. A new unit carries it, and its transaction only commits if the table still says
//!   exactly that (someone else moved the partition on otherwise);
//! - the **position**: the next offset wanted from Kafka; anything below it is a replay of a
//!   message already taken, and is dropped;
//! - the **epoch**: bumped on every (re)assignment, so that late answers about an older
//!   incarnation of the partition are recognised and ignored.

use std::fmt;
use std::sync::Arc;

/// A partition's incarnation in this process: bumped on every (re)assignment.
pub type Epoch = u64;

/// Where an assigned partition starts, as PostgreSQL's `consumer_offsets` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The table holds this `next_offset`: read from exactly there, whatever Kafka committed.
    Stored(i64),
    /// The table has no row: Kafka's committed offset, else `auto.offset.reset`, decides.
    Kafka,
    /// PostgreSQL could not be asked: the partition takes no message (and stays paused) until
    /// it can.
    Unresolved,
    /// The topic was deleted and created again since its rows were stored (Kafka's topic id
    /// changed): the partition is refused until an operator archives the old rows.
    Recreated,
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Start::Stored(n) => write!(f, "{n} (stored)"),
            Start::Kafka => f.write_str("Kafka's committed offset (nothing stored)"),
            Start::Unresolved => f.write_str("unknown (PostgreSQL unreachable)"),
            Start::Recreated => f.write_str("refused (the topic was created again)"),
        }
    }
}

/// What a unit's transaction expects to find in `consumer_offsets` for its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// No row yet: the partition has never been persisted (by any group).
    Absent,
    /// The row holds this `next_offset`.
    At(i64),
}

/// The verdict on one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    Take(Epoch),
    /// Taken, beyond the next offset `expected`: the offsets in between are transaction markers,
    /// compacted away, or deleted by retention before they were read (worth a look at the log
    /// start).
    Gap {
        epoch: Epoch,
        expected: i64,
    },
    /// Below the position: already taken (or persisted before a restart), or the topic was
    /// created again under the stored position (worth a look at the log end).
    Replay {
        position: i64,
    },
    /// Not assigned to us, its start offset is not known yet, or it is refused.
    NotAssigned,
}

#[derive(Debug)]
struct PartitionState {
    epoch: Epoch,
    fence: Fence,
    position: Option<i64>,
    /// False while the start offset could not be read from PostgreSQL: messages are refused.
    resolved: bool,
    /// The stored position lies beyond the partition's log end: nothing is taken until an
    /// operator resolves it ([`OffsetTracker::refuse`]).
    refused: bool,
}

#[derive(Debug, Default)]
pub struct OffsetTracker {
    topics: Vec<(Arc<str>, Vec<Option<PartitionState>>)>,
    last_epoch: Epoch,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The interned name of `topic`, shared by every unit of its partitions.
    pub fn topic(&mut self, topic: &str) -> &Arc<str> {
        &self.topic_slot(topic).0
    }

    fn topic_slot(&mut self, topic: &str) -> &mut (Arc<str>, Vec<Option<PartitionState>>) {
        let i = match self.topics.iter().position(|(t, _)| &**t == topic) {
            Some(i) => i,
            None => {
                self.topics.push((Arc::from(topic), Vec::new()));
                self.topics.len() - 1
            }
        };
        &mut self.topics[i]
    }

    fn state(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionState> {
        let (_, parts) = self.topics.iter_mut().find(|(t, _)| &**t == topic)?;
        parts.get_mut(usize::try_from(partition).ok()?)?.as_mut()
    }

    /// (Re)starts a partition from `start`, under a new epoch.
    pub fn assign(&mut self, topic: &str, partition: i32, start: Start) -> Epoch {
        self.last_epoch += 1;
        let epoch = self.last_epoch;
        let (fence, position) = match start {
            Start::Stored(n) => (Fence::At(n), Some(n)),
            Start::Kafka | Start::Unresolved | Start::Recreated => (Fence::Absent, None),
        };
        let refused = start == Start::Recreated;
        let state = PartitionState { epoch, fence, position, resolved: start != Start::Unresolved, refused };
        let (_, parts) = self.topic_slot(topic);
        let i = usize::try_from(partition).expect("Kafka partitions are non-negative");
        if parts.len() <= i {
            parts.resize_with(i + 1, || None);
        }
        parts[i] = Some(state);
        epoch
    }

    /// Every assigned partition, and whether it is read: its start is known and it is not
    /// refused.
    pub fn assigned(&self) -> impl Iterator<Item = (&Arc<str>, i32, bool)> {
        self.topics.iter().flat_map(|(topic, parts)| {
            parts.iter().enumerate().filter_map(move |(p, s)| {
                let s = s.as_ref()?;
                Some((topic, p as i32, s.resolved && !s.refused))
            })
        })
    }

    /// Assigned partitions whose start is not known yet.
    pub fn unresolved(&self) -> Vec<(Arc<str>, i32)> {
        self.partitions_where(|s| !s.resolved)
    }

    fn partitions_where(&self, pick: impl Fn(&PartitionState) -> bool) -> Vec<(Arc<str>, i32)> {
        self.topics
            .iter()
            .flat_map(|(topic, parts)| {
                parts.iter().enumerate().filter(|(_, s)| s.as_ref().is_some_and(&pick)).map(|(p, _)| (topic.clone(), p as i32))
            })
            .collect()
    }

    /// Whether any partition is read: messages may come.
    pub fn any_resolved(&self) -> bool {
        self.assigned().any(|(_, _, read)| read)
    }

    /// The next offset wanted from a partition, if known.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        let (_, parts) = self.topics.iter().find(|(t, _)| &**t == topic)?;
        parts.get(usize::try_from(partition).ok()?)?.as_ref()?.position
    }

    pub fn revoke(&mut self, topic: &str, partition: i32) {
        if let Some((_, parts)) = self.topics.iter_mut().find(|(t, _)| &**t == topic)
            && let Some(slot) = usize::try_from(partition).ok().and_then(|i| parts.get_mut(i))
        {
            *slot = None;
        }
    }

    pub fn is_assigned(&self, topic: &str, partition: i32, epoch: Epoch) -> bool {
        self.topics.iter().find(|(t, _)| &**t == topic).is_some_and(|(_, parts)| {
            usize::try_from(partition)
                .ok()
                .and_then(|i| parts.get(i))
                .is_some_and(|s| s.as_ref().is_some_and(|s| s.epoch == epoch))
        })
    }

    /// Takes a message at `offset`, or says why not.
    pub fn accept(&mut self, topic: &str, partition: i32, offset: i64) -> Accept {
        let Some(s) = self.state(topic, partition) else { return Accept::NotAssigned };
        if !s.resolved || s.refused {
            return Accept::NotAssigned;
        }
        let verdict = match s.position {
            Some(p) if offset < p => return Accept::Replay { position: p },
            // Kafka offsets are not contiguous (transaction markers, compaction): only monotonic.
            Some(p) if offset > p => Accept::Gap { epoch: s.epoch, expected: p },
            _ => Accept::Take(s.epoch),
        };
        s.position = Some(offset + 1);
        verdict
    }

    /// Takes nothing more from the partition until it is assigned again; what was taken still
    /// seals. `false` if it is not assigned or already refused.
    pub fn refuse(&mut self, topic: &str, partition: i32) -> bool {
        match self.state(topic, partition) {
            Some(s) if !s.refused => {
                s.refused = true;
                true
            }
            _ => false,
        }
    }

    pub fn is_refused(&self, topic: &str, partition: i32) -> bool {
        self.topics.iter().find(|(t, _)| &**t == topic).is_some_and(|(_, parts)| {
            usize::try_from(partition).ok().and_then(|i| parts.get(i)).is_some_and(|s| s.as_ref().is_some_and(|s| s.refused))
        })
    }

    /// Refused partitions.
    pub fn refused(&self) -> Vec<(Arc<str>, i32)> {
        self.partitions_where(|s| s.refused)
    }

    /// librdkafka's application position of a partition is `next`, beyond what it took: the
    /// records in between are transaction markers (or aborted messages), which are never handed
    /// out. Moves the position there and returns the epoch whose unit must carry the partition's
    /// progress past them; `None` if nothing lies in between or the partition's start is not
    /// known (a position seen before any message of this epoch is not trusted).
    pub fn skip_to(&mut self, topic: &str, partition: i32, next: i64) -> Option<Epoch> {
        let s = self.state(topic, partition).filter(|s| s.resolved)?;
        match s.position {
            Some(p) if p < next => {
                s.position = Some(next);
                Some(s.epoch)
            }
            _ => None,
        }
    }

    /// Seals a unit of `epoch` that ends before `next_offset`: returns the fence its
    /// transaction must find, and moves the fence past it. `None` if the epoch is stale.
    pub fn seal(&mut self, topic: &str, partition: i32, epoch: Epoch, next_offset: i64) -> Option<Fence> {
        let s = self.state(topic, partition).filter(|s| s.epoch == epoch)?;
        Some(std::mem::replace(&mut s.fence, Fence::At(next_offset)))
    }
}

#[cfg(test)]
#[path = "offsets_tests.rs"]
mod tests;
