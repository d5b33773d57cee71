//! The Kafka side: the consumer's configuration, its context (rebalances, statistics, errors)
//! and the blocking poll loop that decodes messages into batches for the flush workers.
//!
//! One thread polls. It never waits on PostgreSQL: when the buffer is full or the circuit
//! breaker is open it pauses the assignment and keeps polling, so heartbeats, rebalances and
//! `max.poll.interval.ms` are served and the group never evicts it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;

use crate::batch::{Batch, Batcher, RowBuffers};
use crate::buffer::{Backpressure, Buffer, Flow};
use crate::config::RunArgs;
use crate::db;
use crate::event;
use crate::ids;
use crate::health::{Health, KafkaState};
use crate::kafka::handoff::{Ack, Handoff};
use crate::kafka::offsets::{Accept, OffsetTracker};
use crate::kafka::queue::{Forwarder, MessageQueue, Messages, BURST};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sink::breaker::{Breaker, State as BreakerState};

/// The librdkafka configuration: aurore's own settings, then the user's `--kafka-config`.
pub fn client_config(args: &RunArgs) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.kafka_brokers)
        .set("group.id", &args.group_id)
        .set("client.id", "aurore")
        // Offsets are committed explicitly, after PostgreSQL has committed the rows.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.partition.eof", "false")
        // A pipeline that starts on an existing topic must not skip what is already there.
        .set("auto.offset.reset", "earliest")
        // What librdkafka prefetches while the buffer holds (see Poller::update_pause): enough
        // for several batches, small enough for the memory budget.
        .set("queued.max.messages.kbytes", "16384")
        // Consumer lag (kafka_consumer_lag) comes from the statistics callback.
        .set("statistics.interval.ms", "5000")
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set_log_level(RDKafkaLogLevel::Warning);
    for (k, v) in &args.kafka_config {
        c.set(k, v);
    }
    c
}

/// A change of assignment, made in the rebalance callback and applied by the poll loop
/// before it looks at another message.
#[derive(Debug)]
enum Change {
    /// Partitions and their start: `Some(n)` from consumer_offsets, `None` no row there,
    /// outer `None` PostgreSQL could not be asked (the partition stays paused until it is).
    Assigned(Vec<(String, i32, Option<Option<i64>>)>),
    Revoked(Vec<(String, i32)>),
}

pub struct Context {
    pool: Pool,
    runtime: Handle,
    group: Arc<str>,
    handoff: Arc<Handoff>,
    drain_timeout: Duration,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    changes: Mutex<Vec<Change>>,
    changed: AtomicBool,
    /// Offsets Kafka has confirmed, per partition (updated per commit, not per event).
    confirmed: Mutex<HashMap<(Arc<str>, i32), i64>>,
    /// Sends newly assigned partitions' messages to the poll loop's [`MessageQueue`].
    messages: Forwarder,
}

impl ClientContext for Context {
    fn stats(&self, stats: Statistics) {
        let mut sum = 0;
        for (topic, t) in &stats.topics {
            for (&p, part) in &t.partitions {
                // Partition -1 is librdkafka's internal unassigned queue; lag -1 is unknown.
                if p < 0 || part.consumer_lag < 0 || !part.desired {
                    continue;
                }
                self.metrics.kafka_consumer_lag.with_label_values(&[topic, &p.to_string()]).set(part.consumer_lag);
                sum += part.consumer_lag;
            }
        }
        self.metrics.kafka_consumer_lag_sum.set(sum);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.set_kafka(KafkaState::BrokersDown);
        }
        tracing::warn!(%error, reason, "Kafka client error");
    }
}

impl ConsumerContext for Context {
    // Runs on the poll thread, inside poll(): nothing here may wait on the poll thread.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        self.metrics.kafka_rebalances_total.inc();
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let partitions: Vec<(String, i32)> = tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let starts = self.stored_starts(&partitions);
                let mut unknown = TopicPartitionList::new();
                for ((topic, p), start) in partitions.iter().zip(&starts) {
                    // Before the assign starts fetching it.
                    if !self.messages.forward(consumer, topic, *p) {
                        tracing::warn!(topic, partition = p, "partition not forwarded to the burst queue; its messages come one by one, at a higher CPU cost");
                    }
                    match start {
                        Some(Some(next)) => {
                            // Resume exactly where PostgreSQL says, whatever Kafka committed.
                            let _ = tpl.set_partition_offset(topic, *p, Offset::Offset(*next));
                        }
                        Some(None) => {} // Kafka's committed offset, else auto.offset.reset
                        None => {
                            let _ = unknown.add_partition(topic, *p);
                        }
                    }
                }
                tracing::info!(partitions = ?partitions, starts = ?starts, "partitions assigned");
                let assigned_any = !partitions.is_empty();
                self.push(Change::Assigned(partitions.into_iter().zip(starts).map(|((t, p), s)| (t, p, s)).collect()));
                let r = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if unknown.count() > 0 {
                    let _ = consumer.pause(&unknown);
                }
                self.health.joined.store(true, Ordering::Relaxed);
                if assigned_any && self.health.kafka() == KafkaState::BrokersDown {
                    self.health.set_kafka(KafkaState::Ok);
                }
                r
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Let in-flight batches of these partitions commit (bounded), so the next
                // owner starts after them, and make Kafka's committed offsets follow.
                let keys: Vec<(Arc<str>, i32)> = partitions.iter().map(|(t, p)| (Arc::from(t.as_str()), *p)).collect();
                let (persisted, drained) = self.handoff.drain(&keys, self.drain_timeout);
                if !drained {
                    tracing::warn!(timeout = ?self.drain_timeout, "revoked partitions still had batches in flight; the offset fence keeps them exact");
                }
                if !persisted.is_empty() && !consumer.assignment_lost() {
                    let mut commit = TopicPartitionList::new();
                    for (t, p, n) in &persisted {
                        let _ = commit.add_partition_offset(t, *p, Offset::Offset(*n));
                    }
                    if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                        tracing::debug!(error = %e, "committing revoked partitions' offsets to Kafka failed (PostgreSQL has them)");
                    }
                }
                tracing::info!(partitions = ?partitions, "partitions revoked");
                self.push(Change::Revoked(partitions));
                if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                if cooperative { Ok(()) } else { consumer.unassign() }
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "applying a rebalance failed");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = &result {
            // Commits made during a rebalance fail (ILLEGAL_GENERATION); the poll loop commits
            // again what Kafka has not confirmed. PostgreSQL holds the truth meanwhile.
            tracing::debug!(error = %e, partitions = offsets.count(), "Kafka offset commit failed; it will be retried");
            return;
        }
        let mut confirmed = self.confirmed.lock().expect("confirmed lock");
        for e in offsets.elements() {
            if let (Ok(()), Offset::Offset(n)) = (e.error(), e.offset()) {
                confirmed.insert((Arc::from(e.topic()), e.partition()), n);
            }
        }
    }
}

impl Context {
    fn push(&self, change: Change) {
        self.changes.lock().expect("changes lock").push(change);
        self.changed.store(true, Ordering::Release);
    }

    /// consumer_offsets' `next_offset` for each partition (see [`Change::Assigned`]).
    fn stored_starts(&self, partitions: &[(String, i32)]) -> Vec<Option<Option<i64>>> {
        let mut by_topic: HashMap<&str, Vec<i32>> = HashMap::new();
        for (t, p) in partitions {
            by_topic.entry(t).or_default().push(*p);
        }
        let lookup = self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                let mut found = HashMap::new();
                for (topic, ps) in &by_topic {
                    for (p, n) in db::load_offsets(&self.pool, &self.group, topic, ps).await? {
                        found.insert((topic.to_string(), p), n);
                    }
                }
                Ok::<_, db::DbError>(found)
            })
            .await
        });
        match lookup {
            Ok(Ok(found)) => partitions.iter().map(|k| Some(found.get(k).copied())).collect(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read consumer_offsets; new partitions stay paused until it can be");
                vec![None; partitions.len()]
            }
            Err(_) => {
                tracing::warn!("reading consumer_offsets timed out; new partitions stay paused until it can be");
                vec![None; partitions.len()]
            }
        }
    }
}

/// Everything the poll loop needs.
pub struct Parts {
    pub row_buffers: Arc<RowBuffers>,
    pub args: RunArgs,
    pub pool: Pool,
    pub runtime: Handle,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub buffer: Arc<Buffer>,
    pub breaker: Arc<Breaker>,
    pub handoff: Arc<Handoff>,
    pub workers: Vec<UnboundedSender<Batch>>,
    pub acks: Receiver<Ack>,
    pub shutdown: Shutdown,
    pub abort: Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("invalid Kafka configuration: {0}")]
    Config(KafkaError),
    #[error("Kafka: {0}")]
    Kafka(KafkaError),
    #[error("shutdown timed out with {0} batches not persisted; they will be read again from Kafka")]
    ShutdownTimeout(usize),
}

pub struct Poller {
    /// Declared before `consumer`: it must be destroyed first.
    messages: MessageQueue,
    /// Shared with nothing; an Arc only so that a message borrowed from it does not borrow
    /// the whole poller.
    consumer: Arc<BaseConsumer<Context>>,
    tracker: OffsetTracker,
    batcher: Batcher,
    workers: Vec<UnboundedSender<Batch>>,
    acks: Receiver<Ack>,
    pool: Pool,
    runtime: Handle,
    group: Arc<str>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    buffer: Arc<Buffer>,
    breaker: Arc<Breaker>,
    handoff: Arc<Handoff>,
    shutdown: Shutdown,
    abort: Shutdown,
    max_event_bytes: usize,
    shutdown_timeout: Duration,
    topics: Vec<String>,
    /// Whether the assignment is paused, as librdkafka was last told.
    paused: bool,
    backpressure: Backpressure,
    /// Messages (and their bytes) taken in this burst: added to the buffer and its counter
    /// once per burst and before any flush, not per message.
    taken: (usize, usize),
    /// The largest message taken so far, in bytes (see [`Poller::room`]).
    largest: usize,
    next_resolve: Instant,
    next_recommit: Instant,
    next_topic_check: Instant,
    last_error: Option<(String, Instant)>,
    /// Last `next_offset` persisted per owned partition: what Kafka's committed offset must
    /// reach (see [`Poller::recommit`]) and what the final synchronous commit sends.
    persisted: HashMap<(Arc<str>, i32), i64>,
}

impl Poller {
    pub fn new(p: Parts) -> Result<Self, ConsumerError> {
        let context = Context {
            pool: p.pool.clone(),
            runtime: p.runtime.clone(),
            group: Arc::from(p.args.group_id.as_str()),
            handoff: p.handoff.clone(),
            drain_timeout: p.args.rebalance_drain_timeout,
            metrics: p.metrics.clone(),
            health: p.health.clone(),
            changes: Mutex::new(Vec::new()),
            changed: AtomicBool::new(false),
            confirmed: Mutex::new(HashMap::new()),
            messages: Forwarder::none(),
        };
        let consumer: BaseConsumer<Context> = client_config(&p.args).create_with_context(context).map_err(ConsumerError::Config)?;
        let messages = MessageQueue::new(&consumer);
        consumer.context().messages.set(&messages);
        Ok(Poller {
            messages,
            consumer: Arc::new(consumer),
            tracker: OffsetTracker::new(),
            batcher: Batcher::new(p.workers.len(), p.args.batch_size, p.args.linger).recycling(p.row_buffers),
            workers: p.workers,
            acks: p.acks,
            pool: p.pool,
            runtime: p.runtime,
            group: Arc::from(p.args.group_id.as_str()),
            metrics: p.metrics,
            health: p.health,
            buffer: p.buffer,
            breaker: p.breaker,
            handoff: p.handoff,
            shutdown: p.shutdown,
            abort: p.abort,
            max_event_bytes: p.args.max_event_bytes,
            shutdown_timeout: p.args.shutdown_timeout,
            topics: p.args.topics.clone(),
            paused: false,
            backpressure: Backpressure::new(HOLD_MAX),
            taken: (0, 0),
            largest: 0,
            next_resolve: Instant::now(),
            next_recommit: Instant::now(),
            next_topic_check: Instant::now() + Duration::from_secs(5),
            last_error: None,
            persisted: HashMap::new(),
        })
    }

    /// Polls until shutdown; then flushes, commits and leaves the group.
    pub fn run(mut self) -> Result<(), ConsumerError> {
        self.check_topics();
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&topics).map_err(ConsumerError::Kafka)?;
        tracing::info!(topics = ?self.topics, group = %self.group, "consuming");
        let consumer = self.consumer.clone();
        let mut burst = Messages::default();
        let mut derived = [uuid::Uuid::nil(); BURST];
        while !self.shutdown.is_cancelled() {
            self.process_acks(None);
            self.process_changes();
            self.recommit();
            self.recheck_topics();
            self.resolve_unresolved();
            self.update_pause();
            self.flush_due();
            let timeout = self.poll_timeout();
            if self.backpressure.flow() == Flow::Hold {
                // Holding: no poll; the next persisted batch frees room.
                match self.acks.recv_timeout(timeout) {
                    Ok(ack) => self.process_acks(Some(ack)),
                    Err(RecvTimeoutError::Timeout) => {}
                    // The workers are gone: the app is stopping; do not spin until it has.
                    Err(RecvTimeoutError::Disconnected) => std::thread::sleep(timeout),
                }
                continue;
            }
            // Events first (rebalances, commit results, errors; and the messages of a partition
            // that could not be forwarded), then a burst of messages from the batch queue. With
            // nothing to read there, wait on the events instead.
            let reading = !self.paused && self.tracker.any_resolved();
            let mut wait = if reading { Duration::ZERO } else { timeout };
            for _ in 0..BURST {
                match consumer.poll(wait) {
                    None => break,
                    Some(Ok(msg)) => {
                        let id = || event::derived_id(msg.topic(), msg.partition(), msg.offset());
                        self.process_message(msg.topic(), msg.partition(), msg.offset(), msg.payload(), msg.timestamp().to_millis(), id)
                    }
                    Some(Err(e)) => self.process_error(e),
                }
                if self.buffer.is_full_with(self.taken.0, self.taken.1) {
                    break;
                }
                wait = Duration::ZERO;
            }
            // A rebalance callback may have run: apply it before taking more.
            self.process_changes();
            if reading {
                self.messages.take(timeout, self.room(), &mut burst);
                // The ids of events that carry none, for the whole burst at once (ids.rs).
                ids::derive_ids(burst.iter().map(|m| (m.topic(), m.partition(), m.offset())), &mut derived);
                for (msg, &id) in burst.iter().zip(&derived) {
                    match msg.error() {
                        None => self.process_message(msg.topic(), msg.partition(), msg.offset(), msg.payload(), msg.timestamp_millis(), || id),
                        Some(e) => self.process_error(e),
                    }
                }
                burst.clear();
            }
            self.account_taken();
        }
        self.drain_and_close(consumer)
    }

    /// A missing topic is an operator's error to report, not a reason to crash-loop: say so
    /// and keep waiting for it (librdkafka picks it up once it exists).
    fn check_topics(&self) {
        match self.consumer.fetch_metadata(None, Duration::from_secs(5)) {
            Ok(md) => {
                let missing: Vec<&String> = self.topics.iter().filter(|t| !md.topics().iter().any(|m| m.name() == t.as_str() && m.error().is_none())).collect();
                if missing.is_empty() {
                    if self.health.kafka() != KafkaState::Ok {
                        tracing::info!(topics = ?self.topics, "every topic exists");
                    }
                    self.health.set_kafka(KafkaState::Ok);
                } else {
                    if self.health.kafka() != KafkaState::TopicMissing {
                        tracing::error!(topics = ?missing, "topic does not exist; create it (scripts/stack up creates those in kafka/topics.conf). Waiting for it");
                    }
                    self.health.set_kafka(KafkaState::TopicMissing);
                }
            }
            Err(e) => {
                if self.health.kafka() != KafkaState::BrokersDown {
                    tracing::error!(error = %e, "cannot reach the Kafka brokers; retrying");
                }
                self.health.set_kafka(KafkaState::BrokersDown);
            }
        }
    }

    /// While a topic is missing (or the brokers were unreachable), look again every 5 s.
    fn recheck_topics(&mut self) {
        if self.health.kafka() == KafkaState::Ok || Instant::now() < self.next_topic_check {
            return;
        }
        self.next_topic_check = Instant::now() + Duration::from_secs(5);
        self.check_topics();
    }

    fn poll_timeout(&self) -> Duration {
        let max = Duration::from_millis(100);
        match self.batcher.next_due() {
            Some(due) => due.saturating_duration_since(Instant::now()).min(max),
            None => max,
        }
    }

    /// How many messages may be taken now, up to a burst. A burst is taken whole, so it must
    /// fit: in events exactly, in bytes assuming messages no larger than the largest seen.
    fn room(&self) -> usize {
        let events = self.buffer.capacity_events.saturating_sub(self.buffer.events() + self.taken.0);
        let bytes = self.buffer.capacity_bytes.saturating_sub(self.buffer.bytes() + self.taken.1);
        // The last one may cross the bound, as with one message at a time.
        let by_bytes = if bytes == 0 { 0 } else { bytes / self.largest.max(1) + 1 };
        events.min(by_bytes).min(BURST)
    }

    /// `derived_id` gives the id of an event that carries none.
    fn process_message(&mut self, topic: &str, partition: i32, offset: i64, value: Option<&[u8]>, timestamp_millis: Option<i64>, derived_id: impl FnOnce() -> uuid::Uuid) {
        let epoch = match self.tracker.accept(topic, partition, offset) {
            Accept::Take(epoch) => epoch,
            Accept::Replay => {
                self.metrics.events_replayed_skipped_total.inc();
                return;
            }
            Accept::NotAssigned => return,
        };
        if self.health.kafka() == KafkaState::BrokersDown {
            self.health.set_kafka(KafkaState::Ok);
        }
        let bytes = value.map_or(0, <[u8]>::len);
        self.largest = self.largest.max(bytes);
        let appended_at = timestamp_millis.map_or_else(now_micros, |ms| ms * 1000);
        let worker = self.batcher.worker_of(topic, partition);
        let topic_name = self.tracker.topic(topic);
        let unit = self.batcher.unit(worker, topic_name, partition, epoch);
        match event::decode(value, self.max_event_bytes) {
            Ok(ev) => {
                let id = ev.id.unwrap_or_else(derived_id);
                unit.push_event(&ev, offset, appended_at, id, bytes);
            }
            Err(invalid) => unit.push_dead(offset, value, invalid),
        }
        self.taken = (self.taken.0 + 1, self.taken.1 + bytes);
        if self.batcher.is_full(worker) {
            self.account_taken();
            self.flush(worker);
        }
    }

    fn account_taken(&mut self) {
        let (events, bytes) = std::mem::take(&mut self.taken);
        if events > 0 {
            self.buffer.add(events, bytes);
            self.metrics.buffer_events_enqueued_total.inc_by(events as u64);
        }
    }

    fn process_error(&mut self, e: KafkaError) {
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => self.health.set_kafka(KafkaState::TopicMissing),
            Some(RDKafkaErrorCode::AllBrokersDown) => self.health.set_kafka(KafkaState::BrokersDown),
            _ => {}
        }
        // The same error every poll would flood the log: say it once per 10 s.
        let text = e.to_string();
        let now = Instant::now();
        if self.last_error.as_ref().is_none_or(|(t, at)| *t != text || now.duration_since(*at) > Duration::from_secs(10)) {
            tracing::warn!(error = %text, "Kafka consumer error");
            self.last_error = Some((text, now));
        }
    }

    fn flush(&mut self, worker: usize) {
        let tracker = &mut self.tracker;
        let (batch, stale) = self.batcher.take(worker, |u| tracker.seal(&u.topic, u.partition, u.epoch, u.next_offset));
        for u in stale {
            self.buffer.release(u.messages, u.bytes);
        }
        if let Some(batch) = batch {
            self.handoff.sent(&batch.units);
            if let Err(returned) = self.workers[worker].send(batch) {
                // The worker has stopped (fatal error); the app is shutting down.
                for u in returned.0.units {
                    self.buffer.release(u.messages, u.bytes);
                    self.handoff.done(&u.topic, u.partition, None);
                }
            }
        }
    }

    fn flush_due(&mut self) {
        let due: Vec<usize> = self.batcher.due(Instant::now()).collect();
        for w in due {
            self.flush(w);
        }
    }

    /// Handles `first` (an ack already received) and every ack waiting.
    fn process_acks(&mut self, first: Option<Ack>) {
        let mut commit = TopicPartitionList::new();
        let mut next = first;
        while let Some(ack) = next.take().or_else(|| self.acks.try_recv().ok()) {
            match ack {
                Ack::Persisted { topic, partition, epoch, next_offset } => {
                    if self.tracker.is_assigned(&topic, partition, epoch) {
                        // Kafka wants the offset of the next message to read: last + 1.
                        let _ = commit.add_partition_offset(&topic, partition, Offset::Offset(next_offset));
                        self.persisted.insert((topic, partition), next_offset);
                    }
                }
                Ack::Fenced { topic, partition, epoch, stored } => self.process_fenced(&topic, partition, epoch, stored),
            }
        }
        if commit.count() > 0
            && let Err(e) = self.consumer.commit(&commit, CommitMode::Async)
        {
            tracing::debug!(error = %e, "Kafka offset commit not sent");
        }
    }

    /// Someone else moved the partition on: drop what we hold of it and, if it is still ours,
    /// start again from what PostgreSQL holds.
    fn process_fenced(&mut self, topic: &str, partition: i32, epoch: u64, stored: Option<Option<i64>>) {
        if !self.tracker.is_assigned(topic, partition, epoch) {
            return;
        }
        if let Some(u) = self.batcher.discard(topic, partition) {
            self.buffer.release(u.messages, u.bytes);
        }
        match stored {
            Some(Some(next)) => {
                self.tracker.assign(topic, partition, Some(next));
                if let Err(e) = self.consumer.seek(topic, partition, Offset::Offset(next), Duration::from_secs(5)) {
                    tracing::warn!(topic, partition, error = %e, "seek after a fence conflict failed; retrying");
                    self.unresolve(topic, partition);
                }
            }
            _ => self.unresolve(topic, partition),
        }
    }

    fn unresolve(&mut self, topic: &str, partition: i32) {
        self.tracker.assign_unresolved(topic, partition);
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition(topic, partition);
        let _ = self.consumer.pause(&tpl);
    }

    fn process_changes(&mut self) {
        if !self.consumer.context().changed.swap(false, Ordering::Acquire) {
            return;
        }
        let changes = std::mem::take(&mut *self.consumer.context().changes.lock().expect("changes lock"));
        for change in changes {
            match change {
                Change::Assigned(parts) => {
                    let mut new = TopicPartitionList::new();
                    for (topic, p, start) in parts {
                        match start {
                            Some(start) => {
                                self.tracker.assign(&topic, p, start);
                                let _ = new.add_partition(&topic, p);
                                // Kafka follows PostgreSQL: the previous owner may have died
                                // between its COMMIT and its Kafka commit.
                                if let Some(next) = start {
                                    self.persisted.insert((Arc::from(topic.as_str()), p), next);
                                }
                            }
                            None => self.tracker.assign_unresolved(&topic, p),
                        }
                    }
                    if self.paused && new.count() > 0 {
                        let _ = self.consumer.pause(&new);
                    }
                }
                Change::Revoked(parts) => {
                    for (topic, p) in parts {
                        if let Some(u) = self.batcher.discard(&topic, p) {
                            self.buffer.release(u.messages, u.bytes);
                        }
                        self.tracker.revoke(&topic, p);
                        let key = (Arc::from(topic.as_str()), p);
                        self.persisted.remove(&key);
                        self.consumer.context().confirmed.lock().expect("confirmed lock").remove(&key);
                        let _ = self.metrics.kafka_consumer_lag.remove_label_values(&[&topic, &p.to_string()]);
                    }
                }
            }
        }
        self.metrics.kafka_assigned_partitions.set(self.consumer.assignment().map_or(0, |a| a.count() as i64));
    }

    /// Every 2 s, commits again what PostgreSQL holds and Kafka has not confirmed: commits made
    /// during a rebalance fail, and a partition that receives nothing more would otherwise
    /// never be committed again.
    fn recommit(&mut self) {
        let now = Instant::now();
        if now < self.next_recommit {
            return;
        }
        self.next_recommit = now + Duration::from_secs(2);
        let mut commit = TopicPartitionList::new();
        {
            let confirmed = self.consumer.context().confirmed.lock().expect("confirmed lock");
            for (key, n) in &self.persisted {
                if confirmed.get(key) != Some(n) {
                    let _ = commit.add_partition_offset(&key.0, key.1, Offset::Offset(*n));
                }
            }
        }
        if commit.count() > 0
            && let Err(e) = self.consumer.commit(&commit, CommitMode::Async)
        {
            tracing::debug!(error = %e, "Kafka offset re-commit not sent");
        }
    }

    /// Partitions assigned while PostgreSQL could not say where they start: ask again.
    fn resolve_unresolved(&mut self) {
        if Instant::now() < self.next_resolve {
            return;
        }
        self.next_resolve = Instant::now() + Duration::from_secs(1);
        for (topic, p) in self.tracker.unresolved() {
            let stored = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), db::load_offsets(&self.pool, &self.group, &topic, &[p])).await
            });
            let Ok(Ok(found)) = stored else { continue };
            let start = found.get(&p).copied();
            if let Some(next) = start
                && let Err(e) = self.consumer.seek(&topic, p, Offset::Offset(next), Duration::from_secs(5))
            {
                tracing::debug!(%topic, p, error = %e, "seek failed; will retry");
                continue;
            }
            self.tracker.assign(&topic, p, start);
            if !self.paused {
                let mut tpl = TopicPartitionList::new();
                let _ = tpl.add_partition(&topic, p);
                let _ = self.consumer.resume(&tpl);
            }
            tracing::info!(%topic, partition = p, start = ?start, "partition start resolved from PostgreSQL");
        }
    }

    /// Back-pressure in two steps ([`Backpressure`]). A full buffer first *holds*: the loop
    /// stops taking messages but librdkafka keeps prefetching into its own queue (up to
    /// queued.max.messages.kbytes), so consumption restarts at once when a batch commits.
    /// Pausing instead makes librdkafka drop what it prefetched and fetch it again, which cost
    /// ~0.5 s per cycle (measured: a quarter of the throughput). Holding does not poll, so it
    /// is bounded by [`HOLD_MAX`]: past it, or with the circuit breaker open, the assignment is
    /// paused and polling goes on, serving rebalances and staying far inside
    /// max.poll.interval.ms.
    fn update_pause(&mut self) {
        let breaker_open = self.breaker.state() == BreakerState::Open;
        let flow = self.backpressure.update(&self.buffer, breaker_open, Instant::now());
        self.metrics.kafka_fetch_paused.set((flow != Flow::Fetch) as i64);
        let want_paused = flow == Flow::Pause;
        if want_paused == self.paused {
            return;
        }
        let Ok(assignment) = self.consumer.assignment() else { return };
        let result = if want_paused {
            self.consumer.pause(&assignment)
        } else {
            let mut resume = TopicPartitionList::new();
            let unresolved = self.tracker.unresolved();
            for e in assignment.elements() {
                if !unresolved.iter().any(|(t, p)| &**t == e.topic() && *p == e.partition()) {
                    let _ = resume.add_partition(e.topic(), e.partition());
                }
            }
            self.consumer.resume(&resume)
        };
        match result {
            Ok(()) => {
                self.paused = want_paused;
                tracing::debug!(paused = want_paused, buffered = self.buffer.events(), breaker_open, "fetching {}", if want_paused { "paused" } else { "resumed" });
            }
            Err(e) => tracing::warn!(error = %e, "pause/resume failed"),
        }
    }

    /// Stop fetching, flush what is buffered, wait for it to commit, commit to Kafka, leave.
    fn drain_and_close(mut self, consumer: Arc<BaseConsumer<Context>>) -> Result<(), ConsumerError> {
        tracing::info!(buffered = self.buffer.events(), "stopping: flushing what is buffered");
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
        for w in 0..self.batcher.workers() {
            self.flush(w);
        }
        let deadline = Instant::now() + self.shutdown_timeout;
        while self.handoff.total_in_flight() > 0 && Instant::now() < deadline && !self.abort.is_cancelled() {
            // Keep serving the group; messages still arriving are not taken (not committed).
            let _ = self.consumer.poll(Duration::from_millis(20));
            self.process_acks(None);
        }
        self.process_acks(None);
        let left = self.handoff.total_in_flight();
        let mut commit = TopicPartitionList::new();
        for ((t, p), n) in &self.persisted {
            let _ = commit.add_partition_offset(t, *p, Offset::Offset(*n));
        }
        if commit.count() > 0
            && let Err(e) = self.consumer.commit(&commit, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "final Kafka offset commit failed (PostgreSQL has the offsets)");
        }
        self.workers.clear();
        self.consumer.context().messages.clear();
        drop(self.messages);
        drop(consumer);
        self.consumer.unsubscribe();
        drop(self.consumer);
        if left > 0 {
            return Err(ConsumerError::ShutdownTimeout(left));
        }
        tracing::info!("consumer closed");
        Ok(())
    }
}

/// The longest a full buffer holds the poll loop before the assignment is paused (see
/// [`Poller::update_pause`]): the most a rebalance waits for the loop because of it.
const HOLD_MAX: Duration = Duration::from_secs(1);

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}
