//! The one return path from the flush workers to the poll thread.
//!
//! A worker hands every unit it was given back in a [`Report`], whatever became of it. The poll
//! thread alone then frees the unit's buffer space, takes its row buffer back for reuse, records
//! the partition's progress and commits it to Kafka; a worker never touches the poll side's state
//! and never asks PostgreSQL where a fenced partition stands (the poll thread does).

use std::sync::mpsc;

use crate::pipeline::batch::Unit;

/// What became of a report's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed to PostgreSQL: each unit's `next_offset` is now its partition's stored position.
    Persisted,
    /// Rolled back: `consumer_offsets` no longer held the unit's fence (another consumer moved
    /// the partition on). The events were not stored by this transaction.
    Fenced,
    /// Committed, but not confirmed durable: PostgreSQL may have lost it before it reached the
    /// disk (a restart, or the confirming connection lost; the batch had committed
    /// asynchronously, [`sink::durability`](crate::sink::durability)): as for
    /// [`Outcome::Fenced`], the partition's position is read again from `consumer_offsets`.
    NotDurable,
    /// Not persisted by this process (fatal error, or the shutdown timeout passed): the events
    /// stay in Kafka, uncommitted, for the next owner.
    Abandoned,
}

/// Units a worker is done with, all with the same outcome.
#[derive(Debug)]
pub struct Report {
    pub units: Vec<Unit>,
    pub outcome: Outcome,
}

/// The workers' end of the return path (unbounded: a report is a handful per batch).
pub type Reporter = mpsc::Sender<Report>;
/// The poll thread's end.
pub type Reports = mpsc::Receiver<Report>;

/// A new return path.
pub fn channel() -> (Reporter, Reports) {
    mpsc::channel()
}
