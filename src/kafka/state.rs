//! The poll thread's state machine, pure: events in (messages, assignments, revocations, worker
//! reports, ticks), [`Command`]s out (send a batch, commit, seek, pause, resume).
//!
//! No rdkafka, tokio or PostgreSQL in here: [`kafka::poller`](super::poller) and the rebalance
//! callback feed it and execute what it asks, and its reactions are unit-tested beside it. It
//! owns everything the poll side knows about a partition: the fences and positions
//! ([`OffsetTracker`]), the open batches ([`Batcher`]), the units in flight, the progress that
//! Kafka's commits follow ([`Commits`]) and the back-pressure ([`Backpressure`]). It is the only
//! writer of the buffer's accounting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::event::{self, Event, Invalid};
use crate::ids;
use crate::kafka::commits::{Commits, Offset};
use crate::metrics::Metrics;
use crate::pipeline::batch::{Batch, Batcher, Unit};
use crate::pipeline::buffer::{Backpressure, Buffer, Flow};
use crate::pipeline::handoff::{Outcome, Report};
use crate::pipeline::now_micros;
use crate::pipeline::offsets::{Accept, Epoch, OffsetTracker, Start};
use crate::pipeline::progress::Done;

/// A Kafka message as the state sees it, borrowed from the client's buffers.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// Kept only in a dead letter.
    pub key: Option<&'a [u8]>,
    /// Kafka's timestamp (create or log-append time), Unix milliseconds.
    pub timestamp_millis: Option<i64>,
}

/// What the state asks of the Kafka client and the flush workers, in order.
#[derive(Debug)]
pub enum Command {
    /// Hand a sealed batch to flush worker `worker`.
    Send {
        worker: usize,
        batch: Batch,
    },
    /// Commit these offsets to Kafka.
    Commit(Vec<Offset>),
    /// Read the partition from `offset` next (it is paused until resumed).
    Seek {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
    Pause(Vec<(Arc<str>, i32)>),
    Resume(Vec<(Arc<str>, i32)>),
}

/// Something a partition did that the log's bounds explain, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    pub topic: Arc<str>,
    pub partition: i32,
    pub kind: Oddity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oddity {
    /// A message at `got` came when `expected` was next: if `expected` is below the log start,
    /// Kafka deleted what lay between before it was stored (retention).
    Gap { expected: i64, got: i64 },
    /// A message below the stored position came: if that position lies beyond the log end,
    /// the topic was deleted and created again.
    Replay { position: i64, got: i64 },
}

/// How often one partition's bounds are looked up, at most.
pub const CHECK_BOUNDS_EVERY: Duration = Duration::from_secs(10);

/// The settings the state runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    /// Messages per batch.
    pub batch_size: usize,
    /// The longest a batch stays open.
    pub linger: Duration,
    pub max_event_bytes: usize,
    /// The longest a full buffer holds before the assignment is paused ([`Backpressure`]).
    pub hold_max: Duration,
    /// Each worker's progress, to move partitions to an idle worker ([`Batcher::route`]);
    /// empty: partitions never move while a worker has their units.
    pub progress: Vec<Done>,
}

/// A message taken, decoded and waiting for its id, within one burst.
struct Decoded<'a> {
    msg: usize,
    epoch: Epoch,
    event: Result<Event<'a>, Invalid>,
}

pub struct PollerState {
    tracker: OffsetTracker,
    batcher: Batcher,
    commits: Commits,
    buffer: Arc<Buffer>,
    metrics: Arc<Metrics>,
    backpressure: Backpressure,
    /// Whether the assignment is paused, as last commanded.
    paused: bool,
    max_event_bytes: usize,
    /// Units sent to a worker and not reported back, per partition.
    in_flight: Vec<(Arc<str>, i32, usize)>,
    /// Messages (and their bytes) taken and not yet added to the buffer: added once per burst
    /// and before any flush, not per message.
    taken: (usize, usize),
    /// The largest message taken so far, in bytes (see [`PollerState::room`]).
    largest: usize,
    commands: Vec<Command>,
    /// Per-burst scratch, kept to reuse its memory.
    spare: Vec<Decoded<'static>>,
    ids: Vec<Uuid>,
    /// Oddities waiting for a look at the log's bounds, and when each partition was last looked at.
    suspects: Vec<Suspect>,
    checked: Vec<(Arc<str>, i32, Instant)>,
    /// Partitions (re)started since the last [`PollerState::positions`]: their librdkafka
    /// position is not trusted yet.
    fresh: Vec<(Arc<str>, i32)>,
    /// [`Batcher::moves`] as last counted in the metrics.
    moves_counted: u64,
}

impl PollerState {
    pub fn new(settings: Settings, buffer: Arc<Buffer>, metrics: Arc<Metrics>) -> Self {
        PollerState {
            tracker: OffsetTracker::new(),
            // A batch is also full at a quarter of the byte capacity, as the event capacity's
            // default holds four batches: with large messages, batches then fill while others
            // commit instead of waiting out the linger, and one batch never holds all the buffer.
            batcher: {
                let b = Batcher::new(settings.workers, settings.batch_size, settings.linger)
                    .with_batch_bytes(buffer.capacity_bytes / 4);
                if settings.progress.is_empty() { b } else { b.with_progress(settings.progress) }
            },
            commits: Commits::default(),
            buffer,
            metrics,
            backpressure: Backpressure::new(settings.hold_max),
            paused: false,
            max_event_bytes: settings.max_event_bytes,
            in_flight: Vec::new(),
            taken: (0, 0),
            largest: 0,
            commands: Vec::new(),
            spare: Vec::new(),
            ids: Vec::new(),
            suspects: Vec::new(),
            checked: Vec::new(),
            fresh: Vec::new(),
            moves_counted: 0,
        }
    }

    /// The commands produced since the last call, to execute in order.
    pub fn take_commands(&mut self, now: Instant) -> Vec<Command> {
        let due = self.commits.take_due(now);
        if !due.is_empty() {
            self.commands.push(Command::Commit(due));
        }
        std::mem::take(&mut self.commands)
    }

    /// Partitions whose log start and end should be looked up now ([`PollerState::bounds`]):
    /// something was out of the ordinary; each partition at most once per
    /// [`CHECK_BOUNDS_EVERY`]. The poll loop looks them up, never the rebalance callback.
    pub fn take_suspects(&mut self, now: Instant) -> Vec<Suspect> {
        let mut check = Vec::new();
        if !self.suspects.is_empty() {
            let checked = &mut self.checked;
            self.suspects.retain(|s| {
                let last = checked.iter_mut().find(|(t, p, _)| *p == s.partition && Arc::ptr_eq(t, &s.topic));
                match last {
                    Some((_, _, at)) if now < *at + CHECK_BOUNDS_EVERY => true,
                    Some((_, _, at)) => {
                        *at = now;
                        check.push(s.clone());
                        false
                    }
                    None => {
                        checked.push((s.topic.clone(), s.partition, now));
                        check.push(s.clone());
                        false
                    }
                }
            });
        }
        check
    }

    /// A suspect whose bounds could not be read (the broker did not answer): asked again later.
    pub fn suspect_again(&mut self, s: Suspect) {
        self.suspect(&s.topic.clone(), s.partition, s.kind);
    }

    /// Notes an oddity, once per partition and kind until it is looked at.
    fn suspect(&mut self, topic: &str, partition: i32, kind: Oddity) {
        let same = |s: &Suspect| {
            s.partition == partition && &*s.topic == topic && std::mem::discriminant(&s.kind) == std::mem::discriminant(&kind)
        };
        if !self.suspects.iter().any(same) {
            let topic = self.tracker.topic(topic).clone();
            self.suspects.push(Suspect { topic, partition, kind });
        }
    }

    /// The log of a suspect partition starts at `low` and ends at `high` (its high watermark).
    /// A gap that starts below `low`: the offsets up to `low` (or the message that came, if
    /// earlier) were deleted before they were stored: counted and logged, and reading goes on. A
    /// replay under a position beyond `high`: the topic was created again; the partition is
    /// refused (paused, not committed, `/health` down) until an operator resolves it
    /// (`aurore archive-topic`).
    pub fn bounds(&mut self, suspect: &Suspect, low: i64, high: i64) {
        let (topic, partition) = (&suspect.topic, suspect.partition);
        match suspect.kind {
            Oddity::Gap { expected, got } if expected < low => {
                let lost = got.min(low) - expected;
                let p = partition.to_string();
                self.metrics.kafka_offsets_lost_total.with_label_values(&[topic.as_ref(), p.as_str()]).inc_by(lost as u64);
                tracing::warn!(
                    %topic,
                    partition,
                    from = expected,
                    to = got.min(low) - 1,
                    lost,
                    log_start = low,
                    "offsets deleted by Kafka (retention) before aurore stored them: lost; reading goes on from the log start"
                );
            }
            Oddity::Replay { position, .. } if position > high => {
                if self.tracker.refuse(topic, partition) {
                    self.commits.forget(topic, partition);
                    self.commands.push(Command::Pause(vec![(topic.clone(), partition)]));
                    self.metrics.kafka_partitions_refused.set(self.tracker.refused().len() as i64);
                    tracing::error!(
                        %topic,
                        partition,
                        stored = position,
                        log_end = high,
                        "the position stored in PostgreSQL lies beyond the partition's log end: the topic was deleted and created again. \
                         The partition is refused (nothing lost: its messages wait in Kafka). To store the new topic's messages, \
                         archive the old ones: aurore archive-topic --topic {topic}"
                    );
                }
            }
            Oddity::Replay { position, got } => tracing::warn!(
                %topic,
                partition,
                stored = position,
                from = got,
                "messages below the stored position came, and were skipped as already stored"
            ),
            Oddity::Gap { .. } => {}
        }
    }

    /// Kafka's topic id of `topic` changed while its partitions were read: the topic was
    /// created again without a rebalance. Every assigned partition of it is refused.
    pub fn topic_recreated(&mut self, topic: &str) {
        let parts: Vec<(Arc<str>, i32)> = self.assignment().into_iter().filter(|(t, _)| &**t == topic).collect();
        let mut pause = Vec::new();
        for (t, p) in parts {
            if self.tracker.refuse(&t, p) {
                self.commits.forget(&t, p);
                pause.push((t, p));
            }
        }
        if !pause.is_empty() {
            self.commands.push(Command::Pause(pause));
            self.metrics.kafka_partitions_refused.set(self.tracker.refused().len() as i64);
        }
    }

    /// Refused partitions: the poll thread looks again at what PostgreSQL holds for them.
    pub fn refused(&self) -> Vec<(Arc<str>, i32)> {
        self.tracker.refused()
    }

    /// A refused partition, looked at again: once PostgreSQL holds no position for it (the old
    /// topic's rows were archived) or one within the log, it is read again from there (from the
    /// log start `low` when nothing is stored).
    pub fn recheck(&mut self, topic: &str, partition: i32, start: Start, low: i64, _high: i64) {
        // Only the archive (no row left) ends a refusal: a stored position the new log has
        // grown past still belongs to the old topic.
        if start != Start::Kafka || !self.tracker.refused().iter().any(|(t, p)| *p == partition && &**t == topic) {
            return;
        }
        let from = low;
        if let Some(u) = self.batcher.discard(topic, partition) {
            self.release(u);
        }
        self.tracker.assign(topic, partition, start);
        let topic = self.tracker.topic(topic).clone();
        self.fresh.push((topic.clone(), partition));
        // Kafka may still hold the old topic's committed offset for this group: the new log's
        // start replaces it at once.
        self.commits.forget(&topic, partition);
        self.commits.persisted(&topic, partition, from);
        self.metrics.kafka_partitions_refused.set(self.tracker.refused().len() as i64);
        tracing::info!(%topic, partition, from, "refused partition read again");
        self.commands.push(Command::Seek { topic: topic.clone(), partition, offset: from });
        if !self.paused {
            self.commands.push(Command::Resume(vec![(topic, partition)]));
        }
    }

    /// Partitions were assigned (the client assigns them before this is called).
    pub fn assigned(&mut self, partitions: &[(String, i32, Start)]) {
        let mut pause = Vec::new();
        for (topic, partition, start) in partitions {
            // Never expected (a partition is revoked before it is assigned again), but an open
            // unit of an older epoch would take the new epoch's messages and be dropped as stale.
            if let Some(u) = self.batcher.discard(topic, *partition) {
                self.release(u);
            }
            self.tracker.assign(topic, *partition, *start);
            let topic = self.tracker.topic(topic).clone();
            self.fresh.push((topic.clone(), *partition));
            if let Start::Stored(n) = start {
                self.commits.stored(&topic, *partition, *n);
            }
            if matches!(start, Start::Unresolved | Start::Recreated) || self.paused {
                pause.push((topic, *partition));
            }
        }
        if !pause.is_empty() {
            self.commands.push(Command::Pause(pause));
        }
        self.metrics.kafka_partitions_refused.set(self.tracker.refused().len() as i64);
    }

    /// Every assigned partition.
    pub fn assignment(&self) -> Vec<(Arc<str>, i32)> {
        self.tracker.assigned().map(|(t, p, _)| (t.clone(), p)).collect()
    }

    /// Whether any of `partitions` has a unit at a worker (a revocation waits for them).
    pub fn in_flight(&self, partitions: &[(Arc<str>, i32)]) -> bool {
        self.in_flight.iter().any(|(t, p, n)| *n > 0 && partitions.iter().any(|(rt, rp)| rp == p && rt == t))
    }

    pub fn in_flight_total(&self) -> usize {
        self.in_flight.iter().map(|(_, _, n)| n).sum()
    }

    /// What PostgreSQL holds for `partitions`: a revocation commits it.
    pub fn commits_of(&self, partitions: &[(Arc<str>, i32)]) -> Vec<Offset> {
        self.commits.of(partitions)
    }

    /// What PostgreSQL holds for every owned partition: the final commit.
    pub fn final_commits(&self) -> Vec<Offset> {
        self.commits.all()
    }

    /// How many owned partitions Kafka has not confirmed at what PostgreSQL holds.
    pub fn unconfirmed_commits(&self) -> usize {
        self.commits.unconfirmed()
    }

    /// Partitions were revoked: what is buffered of them is dropped (it was never committed;
    /// the next owner reads it again).
    pub fn revoked(&mut self, partitions: &[(Arc<str>, i32)]) {
        for (topic, partition) in partitions {
            if let Some(u) = self.batcher.discard(topic, *partition) {
                self.release(u);
            }
            self.tracker.revoke(topic, *partition);
            self.commits.forget(topic, *partition);
            self.suspects.retain(|s| !(s.partition == *partition && s.topic == *topic));
        }
        self.metrics.kafka_partitions_refused.set(self.tracker.refused().len() as i64);
    }

    /// Kafka confirmed a commit.
    pub fn confirmed(&mut self, topic: &str, partition: i32, next: i64) {
        self.commits.confirmed(topic, partition, next);
    }

    /// A worker reported back: every unit frees its buffer space and row buffer; progress is
    /// recorded only for the partition's current epoch.
    pub fn completed(&mut self, report: Report) {
        for u in report.units {
            if let Some(slot) = self.in_flight.iter_mut().find(|(t, p, _)| *p == u.partition && Arc::ptr_eq(t, &u.topic)) {
                slot.2 = slot.2.saturating_sub(1);
            }
            // A refused partition's progress is the old topic's: never committed to Kafka.
            if self.tracker.is_assigned(&u.topic, u.partition, u.epoch) && !self.tracker.is_refused(&u.topic, u.partition) {
                match report.outcome {
                    Outcome::Persisted => self.commits.persisted(&u.topic, u.partition, u.next_offset),
                    Outcome::Fenced | Outcome::NotDurable => self.lost_fence(&u.topic.clone(), u.partition),
                    Outcome::Abandoned => {}
                }
            }
            self.release(u);
        }
        self.in_flight.retain(|(_, _, n)| *n > 0);
    }

    /// Someone else moved the partition on: drop what is buffered of it, and stop reading it
    /// until PostgreSQL says where it stands ([`PollerState::resolved`]).
    fn lost_fence(&mut self, topic: &Arc<str>, partition: i32) {
        if let Some(u) = self.batcher.discard(topic, partition) {
            self.release(u);
        }
        self.tracker.assign(topic, partition, Start::Unresolved);
        self.commands.push(Command::Pause(vec![(topic.clone(), partition)]));
    }

    /// Assigned partitions whose start PostgreSQL has not told yet.
    pub fn unresolved(&self) -> Vec<(Arc<str>, i32)> {
        self.tracker.unresolved()
    }

    /// PostgreSQL told where an unresolved partition starts: seek there and read it.
    pub fn resolved(&mut self, topic: &str, partition: i32, start: Start) {
        let still = self.tracker.unresolved().iter().any(|(t, p)| *p == partition && &**t == topic);
        if start == Start::Unresolved || !still {
            return;
        }
        self.tracker.assign(topic, partition, start);
        let topic = self.tracker.topic(topic).clone();
        self.fresh.push((topic.clone(), partition));
        if start == Start::Recreated {
            // Stays paused, refused.
            self.metrics.kafka_partitions_refused.set(self.tracker.refused().len() as i64);
            return;
        }
        if let Start::Stored(offset) = start {
            self.commits.stored(&topic, partition, offset);
            self.commands.push(Command::Seek { topic: topic.clone(), partition, offset });
        }
        if !self.paused {
            self.commands.push(Command::Resume(vec![(topic, partition)]));
        }
    }

    /// A seek commanded by [`PollerState::resolved`] failed: the partition is unresolved again.
    pub fn seek_failed(&mut self, topic: &Arc<str>, partition: i32) {
        self.lost_fence(topic, partition);
    }

    /// librdkafka's application positions (`rd_kafka_position`: past the last record handed out,
    /// transaction markers and aborted messages included, which never are). Where a partition's
    /// position is beyond the messages it took, only such records lie in between: its progress
    /// moves past them in a unit of no message, so that once what came before is stored, the
    /// committed offset (PostgreSQL's and Kafka's) reaches the log end and the lag reads 0.
    pub fn positions(&mut self, positions: &[(String, i32, i64)]) {
        // librdkafka resets a partition's position when it (re)starts fetching it, a moment
        // after the assignment or seek: until the next look, its position may be an older one.
        let fresh = std::mem::take(&mut self.fresh);
        for (topic, partition, next) in positions {
            if fresh.iter().any(|(t, p)| p == partition && **t == **topic) {
                continue;
            }
            if let Some(epoch) = self.tracker.skip_to(topic, *partition, *next) {
                let topic = self.tracker.topic(topic);
                let worker = self.batcher.route(topic, *partition);
                self.batcher.skip_to(worker, topic, *partition, epoch, *next);
            }
        }
    }

    /// Time passed: batches that waited `linger` are sent, back-pressure is re-evaluated.
    pub fn tick(&mut self, now: Instant, breaker_open: bool) {
        for w in 0..self.batcher.workers() {
            if self.batcher.is_due(w, now) {
                self.flush(w);
            }
        }
        let moves = self.batcher.moves();
        self.metrics.worker_partition_moves_total.inc_by(moves - self.moves_counted);
        self.moves_counted = moves;
        let flow = self.backpressure.update(&self.buffer, breaker_open, now);
        if flow != Flow::Fetch && !breaker_open {
            // The buffer is full: nothing more comes until batches are acknowledged (and fetching
            // resumes only below the resume mark), so a worker with nothing to do gets its open
            // batch now rather than after the linger, and PostgreSQL does not wait on the buffer.
            // (With the breaker open, PostgreSQL is down: nothing to gain.)
            for w in 0..self.batcher.workers() {
                if self.batcher.is_idle(w) {
                    self.flush(w);
                }
            }
        }
        self.metrics.kafka_fetch_paused.set((flow != Flow::Fetch) as i64);
        let pause = flow == Flow::Pause;
        if pause != self.paused {
            self.paused = pause;
            // Unresolved partitions stay paused either way.
            let parts: Vec<(Arc<str>, i32)> =
                self.tracker.assigned().filter(|(_, _, resolved)| pause || *resolved).map(|(t, p, _)| (t.clone(), p)).collect();
            if !parts.is_empty() {
                self.commands.push(if pause { Command::Pause(parts) } else { Command::Resume(parts) });
            }
        }
    }

    pub fn flow(&self) -> Flow {
        self.backpressure.flow()
    }

    /// Whether messages may come: not paused, and some partition has a known start.
    pub fn reading(&self) -> bool {
        !self.paused && self.tracker.any_resolved()
    }

    /// When the next open batch falls due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.batcher.next_due()
    }

    /// How many messages may be taken now, at most `burst`. A burst is taken whole, so it must
    /// fit: in events exactly, in bytes assuming messages no larger than the largest seen (the
    /// last one may cross the bound, as with one message at a time).
    pub fn room(&self, burst: usize) -> usize {
        let events = self.buffer.capacity_events.saturating_sub(self.buffer.events() + self.taken.0);
        let bytes = self.buffer.capacity_bytes.saturating_sub(self.buffer.bytes() + self.taken.1);
        let by_bytes = if bytes == 0 { 0 } else { bytes / self.largest.max(1) + 1 };
        events.min(by_bytes).min(burst)
    }

    /// Whether the buffer is full, counting what was taken and not yet added.
    pub fn full(&self) -> bool {
        self.buffer.is_full_with(self.taken.0, self.taken.1)
    }

    /// The hot path: decodes a burst of messages into the open batches. Ids are derived, all
    /// at once, only for the events that carry none.
    pub fn take(&mut self, burst: &[Msg<'_>]) {
        let mut decoded: Vec<Decoded<'_>> = reuse(std::mem::take(&mut self.spare));
        let mut keys = 0;
        let mut replays = 0;
        for (i, m) in burst.iter().enumerate() {
            let epoch = match self.tracker.accept(m.topic, m.partition, m.offset) {
                Accept::Take(epoch) => epoch,
                Accept::Gap { epoch, expected } => {
                    self.suspect(m.topic, m.partition, Oddity::Gap { expected, got: m.offset });
                    epoch
                }
                Accept::Replay { position } => {
                    replays += 1;
                    self.suspect(m.topic, m.partition, Oddity::Replay { position, got: m.offset });
                    continue;
                }
                Accept::NotAssigned => continue,
            };
            let event = event::decode(m.value, self.max_event_bytes);
            keys += matches!(event, Ok(Event { id: None, .. })) as usize;
            decoded.push(Decoded { msg: i, epoch, event });
        }
        if replays > 0 {
            self.metrics.events_replayed_skipped_total.inc_by(replays);
        }
        if keys > 0 {
            self.ids.resize(keys, Uuid::nil());
            let needs = decoded.iter().filter(|d| matches!(d.event, Ok(Event { id: None, .. })));
            ids::derive_ids(
                Counted(needs.map(|d| (burst[d.msg].topic, burst[d.msg].partition, burst[d.msg].offset)), keys),
                &mut self.ids,
            );
        }
        let ids = std::mem::take(&mut self.ids);
        let mut derived = ids.iter();
        for d in decoded.drain(..) {
            let m = &burst[d.msg];
            let bytes = m.value.map_or(0, <[u8]>::len);
            self.largest = self.largest.max(bytes);
            // Kafka's timestamp, when it is a time at all; the time it was taken otherwise.
            let kafka_time = m.timestamp_millis.map(|ms| (ms, event::kafka_micros(ms)));
            let appended_at = match kafka_time {
                Some((_, Some(t))) => t,
                _ => now_micros(),
            };
            let topic = self.tracker.topic(m.topic);
            let worker = self.batcher.route(topic, m.partition);
            let unit = self.batcher.unit(worker, topic, m.partition, d.epoch);
            match d.event {
                Ok(ev) => {
                    let id = ev.id.unwrap_or_else(|| *derived.next().expect("an id derived for each event without one"));
                    match kafka_time {
                        Some((ms, None)) if ev.timestamp_micros.is_none() => {
                            unit.push_dead(m.offset, m.value, m.key, None, Invalid::kafka_timestamp_out_of_range(ms))
                        }
                        _ => unit.push_event(&ev, m.offset, appended_at, id, bytes),
                    }
                }
                Err(invalid) => {
                    let time = kafka_time.map_or(Some(appended_at), |(_, t)| t);
                    unit.push_dead(m.offset, m.value, m.key, time, invalid)
                }
            }
            self.taken = (self.taken.0 + 1, self.taken.1 + bytes);
            self.batcher.add_bytes(worker, bytes);
            if self.batcher.is_full(worker) {
                self.account_taken();
                self.flush(worker);
            }
        }
        self.ids = ids;
        self.spare = reuse(decoded);
        self.account_taken();
    }

    /// Stopping: every open batch is sent.
    pub fn flush_all(&mut self) {
        for w in 0..self.batcher.workers() {
            self.flush(w);
        }
    }

    /// Messages in the buffer: taken and not yet persisted.
    pub fn buffered(&self) -> usize {
        self.buffer.events()
    }

    fn account_taken(&mut self) {
        let (events, bytes) = std::mem::take(&mut self.taken);
        if events > 0 {
            self.buffer.add(events, bytes);
            self.metrics.buffer_events_enqueued_total.inc_by(events as u64);
        }
    }

    fn flush(&mut self, worker: usize) {
        let tracker = &mut self.tracker;
        let (batch, stale) = self.batcher.take(worker, |u| tracker.seal(&u.topic, u.partition, u.epoch, u.next_offset));
        for u in stale {
            self.release(u);
        }
        if let Some(batch) = batch {
            for u in &batch.units {
                match self.in_flight.iter_mut().find(|(t, p, _)| *p == u.partition && Arc::ptr_eq(t, &u.topic)) {
                    Some(slot) => slot.2 += 1,
                    None => self.in_flight.push((u.topic.clone(), u.partition, 1)),
                }
            }
            self.commands.push(Command::Send { worker, batch });
        }
    }

    /// A unit is done with: its buffer space is free, its row buffer goes back for reuse.
    fn release(&mut self, u: Unit) {
        self.buffer.release(u.messages, u.bytes);
        self.batcher.recycle(u.into_rows());
    }
}

/// An iterator whose length is known ([`ids::derive_ids`] takes one).
struct Counted<I>(I, usize);

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let item = self.0.next()?;
        self.1 -= 1;
        Some(item)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.1, Some(self.1))
    }
}

impl<I: Iterator> ExactSizeIterator for Counted<I> {}

/// An empty vector of another lifetime in `v`'s memory: the standard library collects a
/// `map` over `into_iter` in place when the layouts match, so a burst allocates nothing.
fn reuse<'a, 'b>(mut v: Vec<Decoded<'a>>) -> Vec<Decoded<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
