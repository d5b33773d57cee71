//! The poll loop: one blocking thread that serves the consumer group, takes messages in bursts,
//! feeds them to the [`PollerState`] and executes its commands.
//!
//! On the hot path it never waits on PostgreSQL; it does in two bounded places, both in
//! [`kafka::starts`](super::starts): reading where assigned partitions start, and resolving a
//! partition whose start is unknown. A full buffer first holds the loop (waiting on the workers'
//! reports, not polling), then pauses the assignment and polls on, so heartbeats, rebalances and
//! `max.poll.interval.ms` are served and the group never evicts it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::{RunArgs, redact_kafka_error};
use crate::health::{Health, KafkaState};
use crate::kafka::client::{Context, client_config, cluster_answers};
use crate::kafka::core::{self, Core};
use crate::kafka::liveness::{Liveness, PROBE_EVERY, Phase, PollWatch};
use crate::kafka::queue::{BURST, MessageQueue, Messages};
use crate::kafka::starts::StoredStarts;
use crate::kafka::state::{CHECK_BOUNDS_EVERY, Msg, PollerState, Settings};
use crate::kafka::topic_ids;
use crate::logging::{Repeats, Structured};
use crate::metrics::Metrics;
use crate::pipeline::batch::Batch;
use crate::pipeline::breaker::{Breaker, State as BreakerState};
use crate::pipeline::buffer::{Buffer, Flow};
use crate::pipeline::handoff::{self, Reports};
use crate::pipeline::offsets::Start;
use crate::pipeline::progress::Done;
use crate::shutdown::Shutdown;

/// The longest a full buffer holds the poll loop before the assignment is paused: the most a
/// rebalance waits for the loop because of it. Holding keeps librdkafka's prefetched messages,
/// so consumption restarts at once when a batch commits; pausing makes librdkafka drop them and
/// fetch them again (measured: ~0.5 s a cycle, a quarter of the throughput).
const HOLD_MAX: Duration = Duration::from_secs(1);
/// The longest the loop waits for anything at once.
const TICK: Duration = Duration::from_millis(100);
/// How often librdkafka's application positions are compared with what was taken.
const POSITIONS_EVERY: Duration = Duration::from_secs(1);
/// The longest a consumer being replaced, or stopping, is given to leave its group. A consumer
/// that cannot close (its group stuck) would otherwise hold the poll thread for ever.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the cluster probe waits for an answer (it runs beside the poll loop).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the final commit waits for Kafka's confirmation.
const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest single wait on the poll thread between two stamps of its [`PollWatch`]
/// (reading partition starts on assignment, closing a consumer): the watchdog's bound is
/// `--group-liveness-timeout` plus this.
pub const LONGEST_WAIT: Duration = Duration::from_secs(10);

/// Everything the poll loop needs.
pub struct Parts {
    pub args: RunArgs,
    pub pool: Pool,
    pub runtime: Handle,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub buffer: Arc<Buffer>,
    pub breaker: Arc<Breaker>,
    pub workers: Vec<UnboundedSender<Batch>>,
    /// Each worker's progress ([`Done`]), one a worker.
    pub progress: Vec<Done>,
    pub reports: Reports,
    pub shutdown: Shutdown,
    pub abort: Shutdown,
    /// When the shutdown's budget (`--shutdown-timeout`) runs out, set by the app as it sees
    /// the shutdown (the signal's time): the poll thread may notice later, from inside one of
    /// its bounded waits, and must not start the budget again from there.
    pub stop_by: Arc<OnceLock<Instant>>,
    /// Set on SIGHUP: recreate the consumer, as a stuck one is.
    pub recreate: Arc<AtomicBool>,
    /// Stamped by the poll thread, watched from the runtime.
    pub watch: Arc<PollWatch>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// librdkafka's refusal, its values redacted ([`redact_kafka_error`]).
    #[error("invalid Kafka configuration: {0}")]
    Config(String),
    #[error("Kafka: {0}")]
    Kafka(KafkaError),
    #[error("shutdown timed out with {0} batches not persisted; they will be read again from Kafka")]
    ShutdownTimeout(usize),
    /// Another live process took the same `--instance-id` (classic protocol: the newer one
    /// replaces this member). Exit code 3.
    #[error(
        "--instance-id {instance_id} is in use by another process in group {group}: Kafka fenced this one ({reason}); it stops, the other keeps the partitions"
    )]
    InstanceFenced { instance_id: String, group: String, reason: String },
    /// KIP-848: the broker still holds the `--instance-id` for a member, a live process or a
    /// crashed one whose session has not timed out (the broker's
    /// `group.consumer.session.timeout.ms`); this one may not join. Exit code 3 once
    /// `--instance-id-wait` has passed.
    #[error(
        "--instance-id {instance_id} is held by another member of group {group} (a live process, or a crashed one whose session the broker has not timed out yet): {reason}"
    )]
    InstanceUnreleased { instance_id: String, group: String, reason: String },
    /// A broker refused the SASL login: retrying the same credentials cannot help. Exit code 1.
    #[error(
        "Kafka refused the login: {0}; check sasl.mechanism, sasl.username and sasl.password in --kafka-config (AURORE_KAFKA_CONFIG)"
    )]
    RefusedLogin(String),
}

pub struct Poller {
    /// Declared before `consumer`: it must be destroyed first.
    messages: MessageQueue,
    consumer: Arc<BaseConsumer<Context>>,
    health: Arc<Health>,
    breaker: Arc<Breaker>,
    shutdown: Shutdown,
    abort: Shutdown,
    shutdown_timeout: Duration,
    stop_by: Arc<OnceLock<Instant>>,
    topics: Vec<String>,
    group: String,
    next_resolve: Instant,
    next_topic_check: Instant,
    next_positions: Instant,
    next_refused: Instant,
    next_topic_ids: Instant,
    next_probe: Instant,
    /// The cluster probe in flight, if one is ([`Poller::probe_cluster`]): its thread returns
    /// the answer.
    probe: Option<std::thread::JoinHandle<bool>>,
    /// Each distinct consumer error is said at most once per 10 s (the same error can come every poll).
    errors_said: Repeats,
    instance_id: Option<String>,
    /// librdkafka raised a fatal error: the consumer is unusable; the loop ends.
    fatal: Option<ConsumerError>,
    client: ClientParts,
    recreate: Arc<AtomicBool>,
}

/// What making a Kafka client takes, kept to make a new one ([`Poller::recreate`]).
struct ClientParts {
    args: RunArgs,
    pool: Pool,
    runtime: Handle,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    buffer: Arc<Buffer>,
    settings: Settings,
    watch: Arc<PollWatch>,
}

impl ClientParts {
    /// A consumer around `core`, and its burst queue.
    fn make(&self, core: Core, liveness: Liveness) -> Result<(BaseConsumer<Context>, MessageQueue), ConsumerError> {
        let starts = StoredStarts {
            pool: self.pool.clone(),
            database: Arc::from(self.args.db.database_url.to_string()),
            runtime: self.runtime.clone(),
        };
        let context = Context::new(
            core,
            starts,
            self.args.rebalance_drain_timeout,
            liveness,
            self.watch.clone(),
            self.metrics.clone(),
            self.health.clone(),
        );
        let consumer: BaseConsumer<Context> = client_config(&self.args)
            .create_with_context(context)
            .map_err(|e| ConsumerError::Config(redact_kafka_error(&self.args.kafka_config, &e)))?;
        let messages = MessageQueue::new(&consumer);
        consumer.context().messages.set(&messages);
        Ok((consumer, messages))
    }

    /// An empty core, for an old client's last callbacks while it closes.
    fn stand_in(&self) -> Core {
        let state = PollerState::new(self.settings.clone(), self.buffer.clone(), self.metrics.clone());
        Core { state, reports: handoff::channel().1, workers: Vec::new() }
    }
}

impl Poller {
    pub fn new(p: Parts) -> Result<Self, ConsumerError> {
        let settings = Settings {
            workers: p.workers.len(),
            batch_size: p.args.batch_size,
            linger: p.args.linger,
            max_event_bytes: p.args.max_event_bytes,
            hold_max: HOLD_MAX,
            progress: p.progress,
        };
        let core = Core {
            state: PollerState::new(settings.clone(), p.buffer.clone(), p.metrics.clone()),
            reports: p.reports,
            workers: p.workers,
        };
        let client = ClientParts {
            args: p.args.clone(),
            pool: p.pool,
            runtime: p.runtime,
            metrics: p.metrics,
            health: p.health.clone(),
            buffer: p.buffer,
            settings,
            watch: p.watch,
        };
        let (consumer, messages) = client.make(core, Liveness::new(p.args.group_liveness_timeout))?;
        Ok(Poller {
            client,
            recreate: p.recreate,
            messages,
            consumer: Arc::new(consumer),
            health: p.health,
            breaker: p.breaker,
            shutdown: p.shutdown,
            abort: p.abort,
            shutdown_timeout: p.args.shutdown_timeout,
            stop_by: p.stop_by,
            topics: p.args.topics.clone(),
            group: p.args.group_id.clone(),
            next_resolve: Instant::now(),
            next_topic_check: Instant::now() + Duration::from_secs(5),
            next_positions: Instant::now(),
            next_refused: Instant::now(),
            next_topic_ids: Instant::now() + CHECK_BOUNDS_EVERY,
            next_probe: Instant::now() + PROBE_EVERY,
            probe: None,
            errors_said: Repeats::new(Duration::from_secs(10)),
            instance_id: p.args.instance_id.clone(),
            fatal: None,
        })
    }

    /// Polls until shutdown; then flushes, commits and leaves the group.
    pub fn run(mut self) -> Result<(), ConsumerError> {
        self.check_topics(false);
        loop {
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            self.consumer.subscribe(&topics).map_err(ConsumerError::Kafka)?;
            let names = Structured::list(&self.topics);
            tracing::info!(topics = names.field(), group = %self.group, "consuming");
            if !self.serve() {
                break;
            }
            self.recreate()?;
        }
        let consumer = self.consumer.clone();
        self.drain_and_close(consumer)
    }

    /// The poll loop, until shutdown (false) or until the consumer is found stuck out of its
    /// group (true: [`Poller::recreate`]).
    fn serve(&mut self) -> bool {
        let consumer = self.consumer.clone();
        let mut burst = Messages::default();
        let mut msgs: Vec<Msg<'static>> = Vec::with_capacity(BURST);
        while !self.shutdown.is_cancelled() && self.fatal.is_none() {
            self.client.watch.stamp(Phase::Polling);
            if consumer.context().stuck() || self.recreate.swap(false, Ordering::Relaxed) {
                return true;
            }
            if let Some(reason) = consumer.context().refused_login() {
                self.stop_refused(reason);
                break;
            }
            // Each may wait on Kafka or PostgreSQL (5 s at most): a shutdown is looked for
            // between them, so that it is seen within one wait, not after all of them.
            let chores: [fn(&mut Self); 7] = [
                Self::recheck_topics,
                Self::resolve_unresolved,
                Self::check_positions,
                Self::check_bounds,
                Self::check_topic_ids,
                Self::recheck_refused,
                Self::probe_cluster,
            ];
            for chore in chores {
                if self.shutdown.is_cancelled() {
                    break;
                }
                chore(self);
            }
            let (flow, reading, timeout) = {
                let mut core = consumer.context().core();
                core.absorb_reports();
                core.state.tick(Instant::now(), self.breaker.state() == BreakerState::Open);
                core.execute(&*consumer, CommitMode::Async);
                let timeout = core.state.next_due().map_or(TICK, |due| due.saturating_duration_since(Instant::now()).min(TICK));
                (core.state.flow(), core.state.reading(), timeout)
            };
            if flow == Flow::Hold {
                // Holding: no poll; the next persisted batch frees room.
                let mut core = consumer.context().core();
                if !core.wait_report(timeout) {
                    // The workers are gone: the app is stopping; do not spin until it has.
                    drop(core);
                    std::thread::sleep(timeout);
                }
                continue;
            }
            // Events first (rebalances, commit results, errors; and the messages of a partition
            // that could not be forwarded), then a burst from the batch queue. With nothing to
            // read there, wait on the events instead.
            let mut wait = if reading { Duration::ZERO } else { timeout };
            for _ in 0..BURST {
                match consumer.poll(wait) {
                    None => break,
                    Some(Ok(m)) => {
                        let msg = Msg {
                            topic: m.topic(),
                            partition: m.partition(),
                            offset: m.offset(),
                            value: m.payload(),
                            key: m.key(),
                            timestamp_millis: m.timestamp().to_millis(),
                        };
                        let mut core = consumer.context().core();
                        core.state.take(std::slice::from_ref(&msg));
                        core.execute(&*consumer, CommitMode::Async);
                        if core.state.full() {
                            break;
                        }
                    }
                    Some(Err(e)) => self.process_error(e),
                }
                wait = Duration::ZERO;
            }
            if !reading {
                continue;
            }
            let room = consumer.context().core().state.room(BURST);
            self.messages.take(timeout, room, &mut burst);
            let mut batch: Vec<Msg<'_>> = reuse(std::mem::take(&mut msgs));
            for m in burst.iter() {
                match m.error() {
                    None => batch.push(Msg {
                        topic: m.topic(),
                        partition: m.partition(),
                        offset: m.offset(),
                        value: m.payload(),
                        key: m.key(),
                        timestamp_millis: m.timestamp_millis(),
                    }),
                    Some(e) => self.process_error(e),
                }
            }
            if !batch.is_empty() {
                if self.health.kafka() == KafkaState::BrokersDown {
                    self.health.set_kafka(KafkaState::Ok);
                }
                let mut core = consumer.context().core();
                core.state.take(&batch);
                core.execute(&*consumer, CommitMode::Async);
            }
            msgs = reuse(batch);
            burst.clear();
        }
        false
    }

    /// A missing topic is an operator's error to report, not a reason to crash-loop: say so
    /// and keep waiting for it (librdkafka picks it up once it exists).
    fn check_topics(&mut self, subscribed: bool) {
        match self.consumer.fetch_metadata(None, Duration::from_secs(5)) {
            Ok(md) => {
                let missing: Vec<&str> = self
                    .topics
                    .iter()
                    .filter(|t| !md.topics().iter().any(|m| m.name() == t.as_str() && m.error().is_none()))
                    .map(String::as_str)
                    .collect();
                if missing.is_empty() {
                    if self.health.kafka() != KafkaState::Ok {
                        let names = Structured::list(&self.topics);
                        tracing::info!(topics = names.field(), "every topic exists");
                    }
                    self.health.set_kafka(KafkaState::Ok);
                } else {
                    if self.health.kafka() != KafkaState::TopicMissing {
                        let names = Structured::list(&missing);
                        tracing::error!(
                            topics = names.field(),
                            "topic does not exist; create it (scripts/stack up creates those in kafka/topics.conf). Waiting for it"
                        );
                    }
                    self.health.set_kafka(KafkaState::TopicMissing);
                }
            }
            Err(e) => {
                if !subscribed {
                    // Nothing is subscribed, so no message can come: this only takes in what
                    // librdkafka has queued for a poll (its log and error reports), a refused
                    // login among them, which would otherwise be told as an unreachable broker.
                    let _ = self.consumer.poll(Duration::ZERO);
                }
                if let Some(reason) = self.consumer.context().refused_login() {
                    return self.stop_refused(reason);
                }
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
        self.check_topics(true);
    }

    fn process_error(&mut self, e: KafkaError) {
        if let KafkaError::MessageConsumptionFatal(_) = e {
            return self.process_fatal();
        }
        if crate::kafka::client::is_refused_login(&e) {
            let reason = self.consumer.context().refused_login().unwrap_or_else(|| e.to_string());
            return self.stop_refused(reason);
        }
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                self.health.set_kafka(KafkaState::TopicMissing)
            }
            Some(RDKafkaErrorCode::AllBrokersDown) => self.health.set_kafka(KafkaState::BrokersDown),
            _ => {}
        }
        let text = e.to_string();
        if self.errors_said.say(&text, Instant::now()) {
            tracing::warn!(error = %text, "Kafka consumer error; consumption goes on (said at most once per 10 s)");
        }
    }

    /// Partitions whose start is unknown: ask PostgreSQL (a bounded wait on the poll thread),
    /// at once when one appears, then at most once a second while it does not answer.
    fn resolve_unresolved(&mut self) {
        let unresolved = self.consumer.context().core().state.unresolved();
        if unresolved.is_empty() || Instant::now() < self.next_resolve {
            return;
        }
        let partitions: Vec<(String, i32)> = unresolved.iter().map(|(t, p)| (t.to_string(), *p)).collect();
        let starts = self.consumer.context().starts().read_for(self.consumer.client(), &partitions, Duration::from_secs(5));
        let mut core = self.consumer.context().core();
        for ((topic, partition), start) in partitions.iter().zip(starts) {
            match start {
                Start::Stored(offset) => tracing::info!(%topic, partition, offset, "partition start resolved from PostgreSQL"),
                Start::Kafka => tracing::info!(
                    %topic,
                    partition,
                    "partition start resolved: nothing stored in PostgreSQL, Kafka's committed offset decides"
                ),
                Start::Unresolved | Start::Recreated => {}
            }
            core.state.resolved(topic, *partition, start);
        }
        core.execute(&*self.consumer, CommitMode::Async);
        // PostgreSQL did not answer, or a seek failed: try again in a second, not at once.
        if !core.state.unresolved().is_empty() {
            self.next_resolve = Instant::now() + Duration::from_secs(1);
        }
    }

    /// Once a second: librdkafka's application positions, so that partitions ending in
    /// transaction markers are moved past them ([`PollerState::positions`]).
    fn check_positions(&mut self) {
        if !due(&mut self.next_positions, POSITIONS_EVERY) {
            return;
        }
        let Ok(list) = self.consumer.position() else { return };
        let positions: Vec<(String, i32, i64)> = list
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(n) => Some((e.topic().to_owned(), e.partition(), n)),
                _ => None,
            })
            .collect();
        if !positions.is_empty() {
            let mut core = self.consumer.context().core();
            core.state.positions(&positions);
            core.execute(&*self.consumer, CommitMode::Async);
        }
    }

    /// The log start and end of partitions that did something out of the ordinary (a gap, a
    /// replay): a broker round trip each, throttled by the state, on the poll loop only.
    fn check_bounds(&mut self) {
        let suspects = self.consumer.context().core().state.take_suspects(Instant::now());
        for s in suspects {
            self.client.watch.stamp(Phase::Polling);
            let bounds = self.consumer.fetch_watermarks(&s.topic, s.partition, Duration::from_secs(2));
            let mut core = self.consumer.context().core();
            match bounds {
                Ok((low, high)) => core.state.bounds(&s, low, high),
                Err(e) => {
                    tracing::debug!(topic = %s.topic, partition = s.partition, error = %e, "log bounds not read; asked again later");
                    core.state.suspect_again(s);
                }
            }
            core.execute(&*self.consumer, CommitMode::Async);
        }
    }

    /// Every 10 s: Kafka's ids of the topics read, against those recorded. A topic deleted and
    /// created again without a rebalance (librdkafka goes on fetching at the old position when
    /// the new log reaches it) shows nothing else: no gap, no replay.
    fn check_topic_ids(&mut self) {
        if !due(&mut self.next_topic_ids, CHECK_BOUNDS_EVERY) {
            return;
        }
        let mut topics: Vec<String> =
            self.consumer.context().core().state.assignment().iter().map(|(t, _)| t.to_string()).collect();
        topics.sort_unstable();
        topics.dedup();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let Ok(ids) = topic_ids::describe(self.consumer.client(), &names, Duration::from_secs(2)) else { return };
        let recreated = self.consumer.context().starts().recreated(&ids, Duration::from_secs(2));
        if !recreated.is_empty() {
            let mut core = self.consumer.context().core();
            for topic in &recreated {
                core.state.topic_recreated(topic);
            }
            core.execute(&*self.consumer, CommitMode::Async);
        }
    }

    /// Every 10 s while a partition is refused: what PostgreSQL holds for it now, and its log
    /// bounds ([`PollerState::recheck`]): an operator may have archived the old topic's rows.
    fn recheck_refused(&mut self) {
        if !due(&mut self.next_refused, CHECK_BOUNDS_EVERY) {
            return;
        }
        let refused = self.consumer.context().core().state.refused();
        if refused.is_empty() {
            return;
        }
        let partitions: Vec<(String, i32)> = refused.iter().map(|(t, p)| (t.to_string(), *p)).collect();
        let starts = self.consumer.context().starts().read_for(self.consumer.client(), &partitions, Duration::from_secs(5));
        for ((topic, partition), start) in partitions.iter().zip(starts) {
            self.client.watch.stamp(Phase::Polling);
            let Ok((low, high)) = self.consumer.fetch_watermarks(topic, *partition, Duration::from_secs(2)) else { continue };
            let mut core = self.consumer.context().core();
            core.state.recheck(topic, *partition, start, low, high);
            core.execute(&*self.consumer, CommitMode::Async);
        }
    }

    /// Every 10 s while the member is out of its group: does the cluster answer? The
    /// statistics' broker states cannot say, with nothing assigned (see
    /// [`Observed`](super::liveness::Observed)), nor can the consumer's own client: seen in CI
    /// runs, a member stayed out of its group for minutes after a broker restart, its requests
    /// to the coordinator queued and timing out, while the broker answered everyone else; its
    /// client had removed every broker it knew ([`cluster_answers`]). Non-blocking: the answer
    /// is taken on a later iteration.
    fn probe_cluster(&mut self) {
        if let Some(probe) = self.probe.take_if(|p| p.is_finished())
            && probe.join().unwrap_or(false)
        {
            self.consumer.context().probe_answered();
        }
        if self.probe.is_some() {
            return;
        }
        if self.consumer.context().in_group() || !due(&mut self.next_probe, PROBE_EVERY) {
            return;
        }
        // Asked by a client of its own (see `cluster_answers`: the consumer's may have lost the
        // cluster), on a thread of its own: the poll loop goes on serving the group meanwhile.
        let args = self.client.args.clone();
        let probe = move || cluster_answers(&args, &args.topics, PROBE_TIMEOUT);
        self.probe = std::thread::Builder::new().name("kafka-probe".into()).spawn(probe).ok();
    }

    /// The consumer stayed out of its group while a broker answered (see
    /// [`kafka::liveness`](super::liveness)), or an operator sent SIGHUP: a new one takes over the core (state, channels,
    /// buffered units) and joins; the old one is closed. What it had assigned is dropped, as on
    /// a revocation: the new member reads it again from where PostgreSQL says.
    fn recreate(&mut self) -> Result<(), ConsumerError> {
        let mut liveness = self.consumer.context().liveness();
        if self.consumer.context().stuck() {
            tracing::error!(
                group = %self.group,
                out_of_group_s = liveness.bound().as_secs(),
                "the consumer stayed out of its group while a broker answered: recreating it"
            );
        }
        liveness.recreated();
        self.client.metrics.kafka_consumer_recreated_total.inc();
        let mut core = self.consumer.context().take_core(self.client.stand_in());
        let assigned = core.state.assignment();
        core.state.revoked(&assigned);
        self.consumer.context().retire();
        // Made now, it joins only when subscribed (`run`), after the old member has left: a
        // member that never left makes the group's next rebalance wait for its session to time out.
        let (consumer, messages) = self.client.make(core, liveness)?;
        let old_messages = std::mem::replace(&mut self.messages, messages);
        let old = std::mem::replace(&mut self.consumer, Arc::new(consumer));
        close_within(old, old_messages, &self.client.watch, CLOSE_TIMEOUT);
        self.health.set_kafka(KafkaState::Unknown);
        Ok(())
    }

    /// A broker refused the login: stop (exit 1), saying so once.
    fn stop_refused(&mut self, reason: String) {
        self.fatal = Some(ConsumerError::RefusedLogin(reason));
        self.shutdown.cancel();
    }

    /// librdkafka gave up on the consumer: stop. Fenced by a process under the same instance id
    /// is expected (exit 3); anything else is an error (exit 1).
    fn process_fatal(&mut self) {
        let (code, reason) = self.consumer.client().fatal_error().unwrap_or((RDKafkaErrorCode::Fatal, "unknown".into()));
        let (instance_id, group) = (self.instance_id.clone().unwrap_or_default(), self.group.clone());
        self.fatal = Some(match code {
            RDKafkaErrorCode::FencedInstanceId => ConsumerError::InstanceFenced { instance_id, group, reason },
            RDKafkaErrorCode::UnreleasedInstanceId => ConsumerError::InstanceUnreleased { instance_id, group, reason },
            _ => ConsumerError::Kafka(KafkaError::MessageConsumptionFatal(code)),
        });
        self.shutdown.cancel();
    }

    /// Stop fetching, flush what is buffered, wait for it to commit, commit to Kafka, leave:
    /// all of it by the shutdown's deadline ([`Parts::stop_by`]), each step also within its own
    /// bound. Past the deadline the consumer is left behind (its session times out) rather
    /// than waited for.
    fn drain_and_close(mut self, consumer: Arc<BaseConsumer<Context>>) -> Result<(), ConsumerError> {
        let deadline = *self.stop_by.get_or_init(|| Instant::now() + self.shutdown_timeout);
        let fatal = self.fatal.take();
        {
            let mut core = consumer.context().core();
            tracing::info!(buffered = core.state.buffered(), "stopping: flushing what is buffered");
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.pause(&assignment);
            }
            core.state.flush_all();
            core.execute(&*consumer, CommitMode::Async);
        }
        loop {
            {
                let mut core = consumer.context().core();
                core.absorb_reports();
                core.execute(&*consumer, CommitMode::Async);
                if core.state.in_flight_total() == 0 || Instant::now() >= deadline || self.abort.is_cancelled() {
                    break;
                }
            }
            // Keep serving the group; messages still arriving are not taken (not committed).
            self.client.watch.stamp(Phase::Closing);
            let _ = consumer.poll(Duration::from_millis(20));
        }
        let left = {
            let mut core = consumer.context().core();
            core::commit(&*consumer, &core.state.final_commits(), CommitMode::Async);
            // The workers' channels close: they finish what they hold and stop.
            core.workers.clear();
            core.state.in_flight_total()
        };
        // Kafka's confirmation, for a bounded time: PostgreSQL holds the offsets whatever it says.
        let confirm_by = (Instant::now() + FINAL_COMMIT_TIMEOUT).min(deadline);
        while consumer.context().core().state.unconfirmed_commits() > 0 && Instant::now() < confirm_by {
            self.client.watch.stamp(Phase::Closing);
            let _ = consumer.poll(Duration::from_millis(20));
        }
        let unconfirmed = consumer.context().core().state.unconfirmed_commits();
        drop(consumer);
        close_within(self.consumer, self.messages, &self.client.watch, deadline.saturating_duration_since(Instant::now()));
        // A probe's client is not left running as the process exits (bounded: its own timeout).
        if let Some(thread) = self.probe.take() {
            let by = (Instant::now() + PROBE_TIMEOUT + Duration::from_secs(2)).min(deadline);
            while !thread.is_finished() && Instant::now() < by {
                self.client.watch.stamp(Phase::Closing);
                std::thread::sleep(Duration::from_millis(20));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        if left > 0 {
            return Err(ConsumerError::ShutdownTimeout(left));
        }
        // Partitions whose final commit Kafka did not confirm in time (PostgreSQL holds their
        // offsets; the next owner reads from there).
        tracing::info!(unconfirmed, "consumer closed");
        Ok(())
    }
}

/// Closes a consumer (leaving its group) within `within` and at most [`CLOSE_TIMEOUT`], its
/// burst queue first. The close runs on a thread of its own (`BaseConsumer`'s drop polls until
/// the consumer has closed, without bound): one that does not close in time is left behind, its
/// threads running on, rather than holding the poll thread.
fn close_within(consumer: Arc<BaseConsumer<Context>>, messages: MessageQueue, watch: &PollWatch, within: Duration) {
    let within = within.min(CLOSE_TIMEOUT);
    watch.stamp(Phase::Closing);
    consumer.context().messages.clear();
    drop(messages);
    let (closed, is_closed) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
        drop(consumer);
        let _ = closed.send(());
    });
    if spawned.is_err() || is_closed.recv_timeout(within).is_err() {
        tracing::warn!(
            timeout_ms = within.as_millis() as u64,
            "the Kafka consumer did not leave its group in time; it is left behind (its session times out)"
        );
    }
}

/// Whether a periodic step is due now; if so, the next one is `every` from now.
fn due(next: &mut Instant, every: Duration) -> bool {
    let now = Instant::now();
    if now < *next {
        return false;
    }
    *next = now + every;
    true
}

/// An empty vector of another lifetime in `v`'s memory (collected in place: no allocation).
fn reuse<'a, 'b>(mut v: Vec<Msg<'a>>) -> Vec<Msg<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}
