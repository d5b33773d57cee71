//! Batches as they are built on the poll thread (pure).
//!
//! A batch is what one flush worker persists in one transaction. It is made of **units**, one
//! per partition: the partition's COPY rows encoded in place, its dead letters, its hourly
//! counts and the offset range it covers. A unit is the grain of the exactly-once protocol: a
//! fence failure drops a unit and keeps the rest of the batch, and bisection of a poison row
//! splits a unit's rows. Memory is allocated per unit and per batch, never per event.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hashbrown::{Equivalent, HashMap};

use crate::copy;
use crate::event::{Event, Invalid, Reject};
use crate::pipeline::offsets::{Epoch, Fence};
use crate::pipeline::progress::Done;

/// Most of a rejected message kept in its dead letter; the rest is summarised by its size.
pub const DEAD_LETTER_RAW_LIMIT: usize = 64 * 1024;
const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// The start of the hour of `micros` (Unix microseconds): an `event_counts` row's hour.
pub fn hour_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR
}

/// One partition's share of a batch.
#[derive(Debug)]
pub struct Unit {
    pub topic: Arc<str>,
    pub partition: i32,
    pub epoch: Epoch,
    /// Set when the unit is sealed: what `consumer_offsets` must hold for it to commit.
    pub fence: Fence,
    /// One past the last offset in the unit: the `next_offset` its commit records.
    pub next_offset: i64,
    /// Encoded COPY rows, no header or trailer; frozen into [`Unit::frozen`] when sealed.
    rows: BytesMut,
    pub frozen: Bytes,
    pub row_meta: Vec<RowMeta>,
    pub dead: Vec<DeadLetter>,
    pub counts: Vec<Count>,
    count_index: HashMap<CountKey, u32>,
    /// Messages (rows and dead letters) and their bytes, as accounted in the buffer.
    pub messages: usize,
    pub bytes: usize,
}

/// Where a row ends in the unit's rows, which count it adds to, and its times.
#[derive(Debug, Clone, Copy)]
pub struct RowMeta {
    pub end: u32,
    pub count: u32,
    /// Event time and Kafka append (or create) time, Unix microseconds; for latency metrics.
    pub occurred_at: i64,
    pub appended_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub offset: i64,
    /// The message value as received, whole (the buffer accounts for it); `None` for a
    /// tombstone. The table keeps [`DEAD_LETTER_RAW_LIMIT`] of it; a dead-letter topic, all.
    pub raw: Option<Vec<u8>>,
    /// The value's whole size, in bytes.
    pub size: i32,
    /// The message key as received.
    pub key: Option<Vec<u8>>,
    /// Kafka's timestamp (or the time it was taken, when it had none), Unix microseconds;
    /// `None` when Kafka's was no time aurore accepts (see `event::kafka_micros`).
    pub kafka_timestamp: Option<i64>,
    pub reason: Reject,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub service: Box<str>,
    pub event_type: Box<str>,
    /// Start of the event-time hour, Unix microseconds.
    pub hour: i64,
    pub n: i64,
}

#[derive(Debug, PartialEq, Eq)]
struct CountKey {
    service: Box<str>,
    event_type: Box<str>,
    hour: i64,
}

impl Hash for CountKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        CountRef { service: &self.service, event_type: &self.event_type, hour: self.hour }.hash(h)
    }
}

/// Looks a count up without allocating its key.
#[derive(Hash)]
struct CountRef<'a> {
    service: &'a str,
    event_type: &'a str,
    hour: i64,
}

impl Equivalent<CountKey> for CountRef<'_> {
    fn equivalent(&self, k: &CountKey) -> bool {
        self.hour == k.hour && self.service == &*k.service && self.event_type == &*k.event_type
    }
}

impl Unit {
    fn new(topic: Arc<str>, partition: i32, epoch: Epoch, rows: BytesMut) -> Self {
        Unit {
            topic,
            partition,
            epoch,
            fence: Fence::Absent,
            next_offset: 0,
            rows,
            frozen: Bytes::new(),
            row_meta: Vec::new(),
            dead: Vec::new(),
            counts: Vec::new(),
            count_index: HashMap::new(),
            messages: 0,
            bytes: 0,
        }
    }

    /// Encodes a valid event as a row. `kafka_timestamp` is Unix microseconds.
    pub fn push_event(&mut self, event: &Event<'_>, offset: i64, kafka_timestamp: i64, id: uuid::Uuid, bytes: usize) {
        let occurred_at = event.timestamp_micros.unwrap_or(kafka_timestamp);
        copy::encode_row(
            &mut self.rows,
            &copy::Row {
                topic: &self.topic,
                partition: self.partition,
                offset,
                id,
                service: &event.service,
                event_type: &event.event_type,
                occurred_at,
                payload: event.payload,
                extra: &event.extra,
            },
        );
        let hour = hour_of(occurred_at);
        let key = CountRef { service: &event.service, event_type: &event.event_type, hour };
        let count = match self.count_index.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.counts.len() as u32;
                self.counts.push(Count {
                    service: event.service.as_ref().into(),
                    event_type: event.event_type.as_ref().into(),
                    hour,
                    n: 0,
                });
                self.count_index.insert(
                    CountKey { service: event.service.as_ref().into(), event_type: event.event_type.as_ref().into(), hour },
                    i,
                );
                i
            }
        };
        self.counts[count as usize].n += 1;
        self.row_meta.push(RowMeta { end: self.rows.len() as u32, count, occurred_at, appended_at: kafka_timestamp });
        self.took(offset, bytes);
    }

    /// Records a rejected message. `kafka_timestamp` is Unix microseconds.
    pub fn push_dead(
        &mut self,
        offset: i64,
        raw: Option<&[u8]>,
        key: Option<&[u8]>,
        kafka_timestamp: Option<i64>,
        invalid: Invalid,
    ) {
        let bytes = raw.map_or(0, <[u8]>::len);
        self.dead.push(DeadLetter {
            offset,
            raw: raw.map(<[u8]>::to_vec),
            size: i32::try_from(bytes).unwrap_or(i32::MAX),
            key: key.map(<[u8]>::to_vec),
            kafka_timestamp,
            reason: invalid.reason,
            detail: invalid.detail,
        });
        self.took(offset, bytes);
    }

    /// The partition's progress moves to `next` with no message: the records before it are
    /// invisible (transaction markers, aborted messages).
    pub fn skip_to(&mut self, next: i64) {
        self.next_offset = self.next_offset.max(next);
    }

    fn took(&mut self, offset: i64, bytes: usize) {
        self.next_offset = offset + 1;
        self.messages += 1;
        self.bytes += bytes;
    }

    /// The encoded rows `lo..hi` (indices into `row_meta`).
    pub fn rows(&self, lo: usize, hi: usize) -> Bytes {
        let start = if lo == 0 { 0 } else { self.row_meta[lo - 1].end as usize };
        let end = if hi == 0 { 0 } else { self.row_meta[hi - 1].end as usize };
        self.frozen.slice(start..end)
    }

    pub fn row_count(&self) -> usize {
        self.row_meta.len()
    }

    /// The unit's row memory, sealed or not, for reuse.
    pub fn into_rows(self) -> Bytes {
        if self.frozen.is_empty() { self.rows.freeze() } else { self.frozen }
    }

    fn seal(&mut self, fence: Fence) {
        self.fence = fence;
        self.frozen = std::mem::take(&mut self.rows).freeze();
        self.count_index = HashMap::new();
    }
}

/// Row buffers of committed units, kept for the next units to write into. A unit's rows take a
/// megabyte or so; a fresh buffer page-faults on every page it touches, because glibc returns
/// freed heap tops to the kernel. Owned by the poll thread (through the [`Batcher`]): no lock.
#[derive(Debug, Default)]
pub struct RowBuffers {
    free: Vec<BytesMut>,
    /// The capacity of `free`, in bytes.
    kept_bytes: usize,
}

impl RowBuffers {
    /// Buffers kept; more are freed.
    const KEEP: usize = 16;
    /// Bytes kept, at most: the reserve's share of aurore's memory beside
    /// `--buffer-capacity-bytes` (a unit of large messages grows its buffer far beyond the
    /// usual megabyte; such buffers are freed, not kept).
    pub const KEEP_BYTES: usize = 16 << 20;

    /// An empty buffer of at least `capacity` bytes.
    pub fn take(&mut self, capacity: usize) -> BytesMut {
        match self.free.pop() {
            Some(mut rows) => {
                self.kept_bytes -= rows.capacity();
                rows.reserve(capacity);
                rows
            }
            None => BytesMut::with_capacity(capacity),
        }
    }

    /// Takes a unit's rows back, if nothing else holds them (a COPY still running would).
    pub fn give(&mut self, rows: Bytes) {
        let Ok(mut rows) = rows.try_into_mut() else { return };
        rows.clear();
        if self.free.len() < Self::KEEP && rows.capacity() > 0 && self.kept_bytes + rows.capacity() <= Self::KEEP_BYTES {
            self.kept_bytes += rows.capacity();
            self.free.push(rows);
        }
    }

    /// How many are kept for reuse.
    pub fn kept(&self) -> usize {
        self.free.len()
    }
}

/// What a flush worker receives.
#[derive(Debug)]
pub struct Batch {
    pub units: Vec<Unit>,
    /// The batch's number among those sent to its worker: 1, 2, … (see [`Done`]).
    pub seq: u64,
    /// Batches of other workers (worker, `seq`) whose transactions must end before this one
    /// begins: they hold the units before this batch's of a partition that moved here
    /// ([`Batcher::route`]). Empty unless a partition moved.
    pub after: Vec<(usize, u64)>,
}

#[derive(Debug, Default)]
struct Open {
    units: Vec<Unit>,
    messages: usize,
    /// Message bytes of the units, as [`Unit::bytes`].
    bytes: usize,
    opened: Option<Instant>,
    last: usize,
    /// The partitions that moved here, each with the batch it must wait for.
    after: Vec<Wait>,
}

/// A partition that moved to another worker waits for its last batch at the first:
/// [`Batch::after`].
#[derive(Debug)]
struct Wait {
    topic: Arc<str>,
    partition: i32,
    worker: usize,
    seq: u64,
}

/// Where a partition's units go.
#[derive(Debug, Clone, Copy)]
struct Route {
    worker: usize,
    /// Whether the partition has a unit in `worker`'s open batch: it stays there until sent.
    open: bool,
    /// The last batch sent with a unit of the partition, as (worker, `seq`); `None` before its
    /// first. Not always `worker`'s: a unit opened at another worker may have been discarded
    /// (revoked, fence lost) before it was sent.
    last: Option<(usize, u64)>,
}

/// The open batch of every flush worker, and which worker each partition's units go to.
#[derive(Debug)]
pub struct Batcher {
    open: Vec<Open>,
    batch_size: usize,
    batch_bytes: usize,
    linger: Duration,
    unit_capacity: usize,
    row_buffers: RowBuffers,
    /// Each topic's routes, by partition: a lookup per message costs the same whatever the
    /// number of partitions.
    routes: Vec<(Arc<str>, Vec<Route>)>,
    /// The topic looked up last (its index in `routes`): bursts mostly come a topic at a time.
    hot: usize,
    /// Batches sent to each worker so far (the last `seq`).
    sent: Vec<u64>,
    /// Each worker's progress; none given, every batch sent counts as done.
    done: Vec<Done>,
    moves: u64,
}

impl Batcher {
    pub fn new(workers: usize, batch_size: usize, linger: Duration) -> Self {
        Batcher {
            open: (0..workers).map(|_| Open::default()).collect(),
            batch_size,
            batch_bytes: usize::MAX,
            linger,
            // ~450 bytes a typical row; a unit rarely holds a whole batch.
            unit_capacity: (batch_size * 450 / workers.max(1)).min(4 << 20),
            row_buffers: RowBuffers::default(),
            routes: Vec::new(),
            hot: 0,
            sent: vec![0; workers],
            done: Vec::new(),
            moves: 0,
        }
    }

    /// Each worker's progress (one [`Done`] a worker, in order), which lets partitions move
    /// to a worker that has nothing to do ([`Batcher::route`]).
    pub fn with_progress(mut self, done: Vec<Done>) -> Self {
        assert_eq!(done.len(), self.open.len(), "one progress a worker");
        self.done = done;
        self
    }

    /// Batches are also full at `bytes` of message values (by default only their event count
    /// fills them): large messages then flush in batches of a bounded size, each worker
    /// committing one while the next fills, instead of waiting out the linger.
    pub fn with_batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes.max(1);
        self
    }

    /// Counts `bytes` of message values into `worker`'s open batch (after a push into one of
    /// its units).
    pub fn add_bytes(&mut self, worker: usize, bytes: usize) {
        self.open[worker].bytes += bytes;
    }

    /// Takes a finished unit's rows back for new units to write into.
    pub fn recycle(&mut self, rows: Bytes) {
        self.row_buffers.give(rows);
    }

    /// Row buffers kept for reuse.
    pub fn kept_row_buffers(&self) -> usize {
        self.row_buffers.kept()
    }

    /// The worker that persists `partition`'s next messages, to call before [`Batcher::unit`]
    /// (the hot path: a lookup, unless the partition has no open unit).
    ///
    /// A partition's batches must commit in order, each finding in `consumer_offsets` where the
    /// one before left it, so a partition stays with one worker while that worker has any of
    /// its units (open, or sent and not done) and has no backlog. When the partition needs a
    /// new unit:
    /// - if no worker has any of its units, the least busy worker (fewest batches sent and not
    ///   done; its own on a tie) takes it;
    /// - if its worker has a backlog (a batch waiting behind the one it is persisting) while
    ///   another has nothing to do, it moves there: that worker's batch then waits for the
    ///   partition's last batch to end ([`Batch::after`]) before it begins. This is what keeps
    ///   both workers busy when a backlog's partitions are uneven (a keyless producer's sticky
    ///   partitioner makes them so: one worker had 57 % of a 1 M backlog and spent its end
    ///   alone, README "Performance").
    pub fn route(&mut self, topic: &Arc<str>, partition: i32) -> usize {
        let p = usize::try_from(partition).expect("Kafka partitions are non-negative");
        let t = match self.routes.get(self.hot) {
            Some((name, _)) if Arc::ptr_eq(name, topic) => self.hot,
            _ => self.routes.iter().position(|(name, _)| Arc::ptr_eq(name, topic)).unwrap_or_else(|| {
                self.routes.push((topic.clone(), Vec::new()));
                self.routes.len() - 1
            }),
        };
        self.hot = t;
        let workers = self.open.len();
        let parts = &mut self.routes[t].1;
        if parts.len() <= p {
            // First seen: spread by name, as every partition was before routes moved.
            let topic_hash = topic.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
            let new = |q: usize| Route { worker: topic_hash.wrapping_add(q) % workers, open: false, last: None };
            parts.extend((parts.len()..=p).map(new));
        }
        let Route { worker: own, open, last } = parts[p];
        if open {
            return own;
        }
        let queued = |w: usize| self.queued(w);
        let workers = 0..self.open.len();
        let (to, after) = match last {
            // Its last batch has not ended: behind it in that worker's queue, unless that worker
            // has a backlog and another has nothing to do.
            Some((from, last)) if self.done(from) < last => {
                match workers.filter(|&w| queued(w) == 0).min_by_key(|&w| self.open[w].messages) {
                    Some(to) if queued(from) >= 2 => (to, Some((from, last))),
                    _ => (from, None),
                }
            }
            _ => (workers.min_by_key(|&w| (queued(w), w != own, self.open[w].messages)).unwrap_or(own), None),
        };
        if let Some((w, seq)) = after {
            // A batch waits only on batches sent before it: no two workers wait on each other.
            debug_assert!(w != to && seq <= self.sent[w], "a wait on a batch not sent");
            self.moves += 1;
            self.open[to].after.push(Wait { topic: topic.clone(), partition, worker: w, seq });
        }
        let r = &mut self.routes[t].1[p];
        r.worker = to;
        r.open = true;
        to
    }

    /// How many times a partition with units at one worker moved to another, so far.
    pub fn moves(&self) -> u64 {
        self.moves
    }

    fn done(&self, worker: usize) -> u64 {
        self.done.get(worker).map_or(self.sent[worker], |d| *d.borrow())
    }

    /// Batches sent to `worker` that it has not ended.
    fn queued(&self, worker: usize) -> u64 {
        self.sent[worker] - self.done(worker).min(self.sent[worker])
    }

    /// The partition's open unit is gone: sent in batch `sent` (worker, `seq`), or discarded.
    fn closed(&mut self, topic: &Arc<str>, partition: i32, sent: Option<(usize, u64)>) {
        let parts = self.routes.iter_mut().find(|(name, _)| Arc::ptr_eq(name, topic)).map(|(_, parts)| parts);
        if let Some(r) = parts.and_then(|parts| parts.get_mut(usize::try_from(partition).ok()?)) {
            r.open = false;
            if sent.is_some() {
                r.last = sent;
            }
        }
    }

    /// The open unit of `partition` in `worker`'s batch, created if needed, moved past
    /// invisible records to `next` ([`Unit::skip_to`]); counted as no message.
    pub fn skip_to(&mut self, worker: usize, topic: &Arc<str>, partition: i32, epoch: Epoch, next: i64) {
        self.unit(worker, topic, partition, epoch).skip_to(next);
        self.open[worker].messages -= 1;
    }

    /// The open unit of `partition` in `worker`'s batch, created if needed.
    pub fn unit(&mut self, worker: usize, topic: &Arc<str>, partition: i32, epoch: Epoch) -> &mut Unit {
        let open = &mut self.open[worker];
        let hit = |u: &Unit| u.partition == partition && Arc::ptr_eq(&u.topic, topic);
        let i = if open.units.get(open.last).is_some_and(hit) {
            open.last
        } else if let Some(i) = open.units.iter().position(hit) {
            i
        } else {
            open.units.push(Unit::new(topic.clone(), partition, epoch, self.row_buffers.take(self.unit_capacity)));
            open.units.len() - 1
        };
        open.last = i;
        open.opened.get_or_insert_with(Instant::now);
        open.messages += 1;
        &mut open.units[i]
    }

    pub fn is_full(&self, worker: usize) -> bool {
        let open = &self.open[worker];
        open.messages >= self.batch_size || open.bytes >= self.batch_bytes
    }

    /// Whether `worker` has an open batch and has ended every batch sent to it: were its batch
    /// sent now, it would begin it at once (or, if a partition of it moved there, once the
    /// partition's last batch at its other worker ends: [`Batch::after`]).
    pub fn is_idle(&self, worker: usize) -> bool {
        self.open[worker].opened.is_some() && self.queued(worker) == 0
    }

    /// Whether `worker`'s batch has waited `linger`.
    pub fn is_due(&self, worker: usize, now: Instant) -> bool {
        self.open[worker].opened.is_some_and(|t| now >= t + self.linger)
    }

    /// When the next batch falls due, if any is open.
    pub fn next_due(&self) -> Option<Instant> {
        self.open.iter().filter_map(|o| o.opened).min().map(|t| t + self.linger)
    }

    /// Takes `worker`'s open batch, sealing every unit with the fence `fence_of` gives it
    /// (`None`: the unit's epoch is stale, and the unit is handed back among the discarded).
    pub fn take(&mut self, worker: usize, mut fence_of: impl FnMut(&Unit) -> Option<Fence>) -> (Option<Batch>, Vec<Unit>) {
        let open = std::mem::take(&mut self.open[worker]);
        let mut units = Vec::with_capacity(open.units.len());
        let mut stale = Vec::new();
        for mut unit in open.units {
            match fence_of(&unit) {
                Some(fence) => {
                    unit.seal(fence);
                    units.push(unit);
                }
                None => stale.push(unit),
            }
        }
        let seq = self.sent[worker] + u64::from(!units.is_empty());
        for u in &units {
            self.closed(&u.topic.clone(), u.partition, Some((worker, seq)));
        }
        for u in &stale {
            self.closed(&u.topic.clone(), u.partition, None);
        }
        if units.is_empty() {
            return (None, stale);
        }
        self.sent[worker] = seq;
        // The waits of the units sent (not of stale ones), the latest batch of each worker.
        let mut after: Vec<(usize, u64)> = Vec::new();
        for w in open.after {
            if units.iter().any(|u| u.partition == w.partition && Arc::ptr_eq(&u.topic, &w.topic)) {
                match after.iter_mut().find(|(aw, _)| *aw == w.worker) {
                    Some(a) => a.1 = a.1.max(w.seq),
                    None => after.push((w.worker, w.seq)),
                }
            }
        }
        (Some(Batch { units, seq, after }), stale)
    }

    /// Removes the open unit of a partition (revoked, or its fence was lost).
    pub fn discard(&mut self, topic: &str, partition: i32) -> Option<Unit> {
        let unit = self.open.iter_mut().find_map(|open| {
            let i = open.units.iter().position(|u| u.partition == partition && &*u.topic == topic)?;
            let unit = open.units.swap_remove(i);
            open.messages -= unit.messages;
            open.bytes -= unit.bytes;
            open.last = 0;
            if open.units.is_empty() {
                open.opened = None;
            }
            // What it had to wait for goes with it.
            open.after.retain(|w| !(w.partition == partition && &*w.topic == topic));
            Some(unit)
        })?;
        self.closed(&unit.topic.clone(), unit.partition, None);
        Some(unit)
    }

    pub fn workers(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
