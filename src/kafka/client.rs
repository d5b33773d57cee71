//! The Kafka client: its configuration and its context — statistics, errors, commit results and
//! the rebalance handshake.
//!
//! Rebalance callbacks run on the poll thread, inside `poll()`:
//! - **assigned**: read each partition's start from PostgreSQL ([`StoredStarts`], a bounded
//!   wait), forward it to the burst queue, assign it at that offset, tell the state;
//! - **revoked**: let the partitions' batches in flight commit (at most the drain timeout), taking
//!   the workers' reports meanwhile, commit what PostgreSQL holds to Kafka (asynchronously:
//!   librdkafka sends it before the unassign completes, and a synchronous commit waits without
//!   bound for a coordinator that may not answer), drop what is buffered of them, then unassign.
//!   The offset fence keeps a batch that outlives the drain harmless.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use crate::config::{GroupProtocol, KafkaSetting, RunArgs};
use crate::health::{Health, KafkaState};
use crate::kafka::core::{self, Core};
use crate::kafka::liveness::{Liveness, Observed, PROBE_EVERY, Phase, PollWatch};
use crate::kafka::queue::Forwarder;
use crate::kafka::starts::{self, StoredStarts};
use crate::logging::{Repeats, Structured};
use crate::metrics::Metrics;
use crate::pipeline::buffer::Budget;
use crate::pipeline::offsets::Start;

/// How long an identical Kafka client error stays unsaid after it was said.
const SAY_AGAIN_AFTER: Duration = Duration::from_secs(10);
/// The longest the rebalance callback waits for PostgreSQL to say where partitions start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The librdkafka configuration: aurore's own settings, then the user's `--kafka-config`.
pub fn client_config(args: &RunArgs) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.kafka_brokers)
        .set("group.id", &args.group_id)
        .set("client.id", "aurore")
        // Offsets are committed explicitly, after PostgreSQL has committed the rows.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // A pipeline that starts on an existing topic must not skip what is already there.
        .set("auto.offset.reset", "earliest")
        // What librdkafka prefetches while the buffer holds (see pipeline::buffer::Backpressure):
        // several batches of small events, taken out of --buffer-capacity-bytes (Budget). A
        // record batch larger than a fetch's limits still comes whole (KIP-74).
        .set("queued.max.messages.kbytes", (Budget::of(args.buffer_capacity_bytes).prefetch_bytes >> 10).max(1).to_string())
        // Once that prefetch is full (the buffer holds), librdkafka postpones the partitions'
        // next fetch by this much; its default, 1,000 ms, let the prefetch run dry after a hold
        // and PostgreSQL sit idle: with it, 1 M-event drains had every flush worker idle for up to
        // 300 ms with the buffer empty and a backlog of 400,000; with 20 ms the buffer never
        // emptied and drains were 0–12 % faster at 10 % less CPU (issue 19's note).
        .set("fetch.queue.backoff.ms", "20")
        // Consumer lag (kafka_consumer_lag) comes from the statistics callback.
        .set("statistics.interval.ms", "5000")
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set_log_level(RDKafkaLogLevel::Warning);
    match args.group_protocol {
        // The broker assigns (KIP-848), always incrementally: the client-side assignor is not
        // set (librdkafka refuses it with this protocol).
        GroupProtocol::Consumer => c.set("group.protocol", "consumer"),
        GroupProtocol::Classic => c.set("group.protocol", "classic").set("partition.assignment.strategy", "cooperative-sticky"),
    };
    if let Some(id) = &args.instance_id {
        c.set("group.instance.id", id);
    }
    for KafkaSetting { key: k, value: v } in &args.kafka_config {
        c.set(k, v);
    }
    c
}

/// A broker refused the client's credentials (librdkafka's `__AUTHENTICATION`, or the broker's
/// `SASL_AUTHENTICATION_FAILED`): the same credentials will be refused again.
pub fn is_refused_login(e: &KafkaError) -> bool {
    matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed))
}

/// Whether the brokers refuse `args`' login, asked once at start with a short-lived client: the
/// reason if they do; `None` once a broker answers, or says nothing of a login within `within`
/// (every broker down: the poll loop waits for them as usual). A consumer learns of a refused
/// login only on a later poll, after its first metadata request has timed out as if the broker
/// were unreachable.
pub fn login_refused(args: &RunArgs, within: Duration) -> Option<String> {
    let mut config = client_config(args);
    config.set_log_level(RDKafkaLogLevel::Error);
    // A producer, polled here: its callbacks are served on its poll (a consumer's would wait
    // for the poll loop), and it joins no group.
    use rdkafka::producer::Producer;
    let client: rdkafka::producer::BaseProducer<LoginWatch> = config.create_with_context(LoginWatch::default()).ok()?;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if client.client().fetch_metadata(None, Duration::from_millis(250)).is_ok() {
            return None;
        }
        client.poll(Duration::from_millis(50));
        let watch = client.context();
        if let Some(reason) = watch.refused.lock().expect("refused lock").clone() {
            return Some(reason);
        }
        if watch.all_down.load(Ordering::Relaxed) {
            return None;
        }
    }
    None
}

/// What [`login_refused`]'s client heard; it prints nothing.
#[derive(Default)]
pub struct LoginWatch {
    refused: Mutex<Option<String>>,
    all_down: AtomicBool,
}

impl rdkafka::producer::ProducerContext for LoginWatch {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

impl ClientContext for LoginWatch {
    fn log(&self, _: RDKafkaLogLevel, _: &str, message: &str) {
        if message.contains("SASL authentication error") {
            self.refused.lock().expect("refused lock").get_or_insert_with(|| message.to_owned());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if is_refused_login(&error) {
            self.refused.lock().expect("refused lock").get_or_insert_with(|| reason.to_owned());
        } else if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.all_down.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether the cluster at `--kafka-brokers` answers a metadata request that lists at least one
/// broker and at least one of `topics` (existing, without error), within `within` in all,
/// asked by a client made for this alone (bootstrapped afresh, in no group, silent: [`Quiet`])
/// and destroyed after. Blocking: up to `within` plus librdkafka's destroy (100 ms to 1 s). A
/// client that cannot be made (its settings were checked at start: a certificate file gone
/// since, say) is said in a WARN, and the answer is no.
///
/// The consumer's own client cannot be asked: it may have lost the cluster for good. A
/// starting KRaft broker can answer a metadata request listing no broker; librdkafka (2.10 and
/// later) then removes every broker it knows, the bootstrap ones included, and does not
/// re-bootstrap (confluentinc/librdkafka#5301, seen here after a broker restart: the member
/// never rejoined while other clients produced). Only a new consumer reaches the cluster again.
/// A member subscribed to topics none of which exists stays out of its group rightly: that is
/// no answer either (the poll loop reports the missing topic).
pub fn cluster_answers(args: &RunArgs, topics: &[String], within: Duration) -> bool {
    let mut config = client_config(args);
    config.remove("group.id").remove("group.instance.id").remove("statistics.interval.ms");
    // No telemetry exchange for a client this short-lived (its destroy would wait for it).
    config.set("enable.metrics.push", "false").set_log_level(RDKafkaLogLevel::Emerg);
    let client = match config.create_with_context::<_, BaseConsumer<Quiet>>(Quiet) {
        Ok(client) => client,
        Err(e) => {
            let error = crate::config::redact_kafka_error(&args.kafka_config, &e);
            tracing::warn!(%error, "cannot make a Kafka client to probe the cluster; taken as no answer");
            return false;
        }
    };
    let deadline = Instant::now() + within;
    topics.iter().any(|topic| {
        let left = deadline.saturating_duration_since(Instant::now());
        !left.is_zero()
            && client
                .fetch_metadata(Some(topic), left)
                .is_ok_and(|md| !md.brokers().is_empty() && md.topics().iter().any(|t| t.name() == topic && t.error().is_none()))
    })
}

/// A client context that keeps librdkafka's own log and error reports off stderr, for the
/// short-lived clients of `check` and of the start's settings check: their caller says what
/// failed (an unreachable broker would otherwise print dozens of lines, even from a client made
/// only to validate the settings and dropped at once).
pub struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _: RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, _: KafkaError, _: &str) {}
}

impl ConsumerContext for Quiet {}

pub struct Context {
    core: Mutex<Core>,
    /// Commit results from librdkafka, for the core to take in: the commit callback can run
    /// inside a synchronous commit made while the core is held.
    confirmed: Mutex<Vec<(String, i32, i64)>>,
    starts: StoredStarts,
    drain_timeout: Duration,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Sends newly assigned partitions' messages to the poll loop's burst queue.
    pub messages: Forwarder,
    liveness: Mutex<Liveness>,
    /// Out of the group too long ([`Liveness`]): the poll loop recreates the consumer.
    stuck: AtomicBool,
    /// Stamped by the rebalance callbacks too: they run on the poll thread.
    watch: Arc<PollWatch>,
    /// The member was in its group at the last statistics report.
    in_group: AtomicBool,
    /// When the cluster last answered the poll loop's probe (milliseconds since `created`).
    probe_answered_ms: std::sync::atomic::AtomicU64,
    created: Instant,
    /// Replaced by a new consumer and closing: its last callbacks touch neither health nor
    /// metrics, and it takes no assignment.
    retired: AtomicBool,
    /// A broker refused the login (SASL): librdkafka would retry forever with the same
    /// credentials; the poll loop stops aurore with this reason instead.
    refused_login: Mutex<Option<String>>,
    /// Each distinct client error (error and reason) is said at most once per [`SAY_AGAIN_AFTER`].
    said: Mutex<Repeats>,
}

impl Context {
    pub fn new(
        core: Core,
        starts: StoredStarts,
        drain_timeout: Duration,
        liveness: Liveness,
        watch: Arc<PollWatch>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Self {
        Context {
            core: Mutex::new(core),
            confirmed: Mutex::new(Vec::new()),
            starts,
            drain_timeout,
            metrics,
            health,
            messages: Forwarder::none(),
            liveness: Mutex::new(liveness),
            stuck: AtomicBool::new(false),
            watch,
            in_group: AtomicBool::new(false),
            probe_answered_ms: std::sync::atomic::AtomicU64::new(0),
            created: Instant::now(),
            retired: AtomicBool::new(false),
            refused_login: Mutex::new(None),
            said: Mutex::new(Repeats::new(SAY_AGAIN_AFTER)),
        }
    }

    /// Why a broker refused the login, if one did.
    pub fn refused_login(&self) -> Option<String> {
        self.refused_login.lock().expect("refused_login lock").clone()
    }

    fn refuse_login(&self, reason: &str) {
        self.refused_login.lock().expect("refused_login lock").get_or_insert_with(|| reason.to_owned());
    }

    /// Whether the member was in its group at the last statistics report.
    pub fn in_group(&self) -> bool {
        self.in_group.load(Ordering::Relaxed)
    }

    /// The cluster answered a metadata request of the poll loop's: it is up, whatever the
    /// member's own connections say.
    pub fn probe_answered(&self) {
        self.probe_answered_ms.store(self.created.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    fn probed_lately(&self, now: Instant) -> bool {
        match self.probe_answered_ms.load(Ordering::Relaxed) {
            0 => false,
            ms => now.saturating_duration_since(self.created + Duration::from_millis(ms)) < PROBE_EVERY * 2,
        }
    }

    /// The liveness judgement, for the consumer that replaces this one.
    pub fn liveness(&self) -> Liveness {
        self.liveness.lock().expect("liveness lock").clone()
    }

    /// This consumer is being replaced: from now on its callbacks touch neither health nor
    /// metrics, and it takes no assignment.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// Whether the consumer stayed out of its group too long and must be recreated.
    pub fn stuck(&self) -> bool {
        self.stuck.load(Ordering::Relaxed)
    }

    /// Moves the core out, leaving `stand_in` for the callbacks this client still makes.
    pub fn take_core(&self, stand_in: Core) -> Core {
        std::mem::replace(&mut *self.core(), stand_in)
    }

    /// The core, with Kafka's confirmations taken in. Only ever taken on the poll thread and
    /// never held across `poll()`, so it is never contended: a failure to take it is a bug.
    pub fn core(&self) -> MutexGuard<'_, Core> {
        let mut core = self.core.try_lock().expect("the core is taken only on the poll thread, never across poll()");
        for (topic, partition, next) in self.confirmed.lock().expect("confirmed lock").drain(..) {
            core.state.confirmed(&topic, partition, next);
        }
        core
    }

    pub fn starts(&self) -> &StoredStarts {
        &self.starts
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList, cooperative: bool) -> KafkaResult<()> {
        self.watch.stamp(Phase::Assigning);
        let partitions: Vec<(String, i32)> = tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        let starts = self.starts.read_for(consumer.client(), &partitions, START_TIMEOUT);
        self.watch.stamp(Phase::Assigning);
        for ((topic, p), start) in partitions.iter().zip(&starts) {
            // Before the assign starts fetching it.
            if !self.messages.forward(consumer, topic, *p) {
                tracing::warn!(
                    topic,
                    partition = p,
                    "partition not forwarded to the burst queue; its messages come one by one, at a higher CPU cost"
                );
            }
            if let Start::Stored(next) = start {
                // Resume exactly where PostgreSQL says, whatever Kafka committed.
                let _ = tpl.set_partition_offset(topic, *p, Offset::Offset(*next));
            }
        }
        for (topic, numbers, from) in starts::describe(&partitions, &starts) {
            tracing::info!(topic, partitions = numbers.field(), starts = from.field(), "partitions assigned");
        }
        let assigned = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
        let with_starts: Vec<(String, i32, Start)> = partitions.into_iter().zip(starts).map(|((t, p), s)| (t, p, s)).collect();
        let mut core = self.core();
        core.state.assigned(&with_starts);
        core.execute(consumer, CommitMode::Async);
        self.health.joined.store(true, Ordering::Relaxed);
        if !with_starts.is_empty() && self.health.kafka() == KafkaState::BrokersDown {
            self.health.set_kafka(KafkaState::Ok);
        }
        assigned
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, cooperative: bool) -> KafkaResult<()> {
        let partitions: Vec<(Arc<str>, i32)> = tpl.elements().iter().map(|e| (Arc::from(e.topic()), e.partition())).collect();
        let mut core = self.core();
        let deadline = Instant::now() + self.drain_timeout;
        core.absorb_reports();
        while core.state.in_flight(&partitions) {
            self.watch.stamp(Phase::Revoking);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !core.wait_report(left.min(Duration::from_secs(1))) {
                tracing::warn!(
                    timeout_ms = self.drain_timeout.as_millis() as u64,
                    "revoked partitions still had batches in flight; the offset fence keeps them exact"
                );
                break;
            }
        }
        core.execute(consumer, CommitMode::Async);
        if !consumer.assignment_lost() {
            core::commit(consumer, &core.state.commits_of(&partitions), CommitMode::Async);
        }
        core.state.revoked(&partitions);
        core.execute(consumer, CommitMode::Async);
        drop(core);
        for (topic, p) in &partitions {
            let _ = self.metrics.kafka_consumer_lag.remove_label_values(&[&**topic, &p.to_string()]);
        }
        let mut topics: Vec<&str> = Vec::new();
        for (t, _) in &partitions {
            if !topics.contains(&&**t) {
                topics.push(t);
            }
        }
        for topic in topics {
            let numbers = Structured::list(partitions.iter().filter(|(t, _)| &**t == topic).map(|(_, p)| *p));
            tracing::info!(topic, partitions = numbers.field(), "partitions revoked");
        }
        if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
    }
}

impl ClientContext for Context {
    fn stats(&self, stats: Statistics) {
        if self.retired.load(Ordering::Relaxed) {
            return;
        }
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
        self.metrics.kafka_consumer_lag_messages.set(sum);
        let now = Instant::now();
        let seen = Observed {
            broker_up: self.probed_lately(now),
            in_group: stats.cgrp.as_ref().is_some_and(|g| g.join_state == "steady"),
        };
        self.in_group.store(seen.in_group, Ordering::Relaxed);
        let stuck = self.liveness.lock().expect("liveness lock").observe(now, seen);
        if stuck && !self.stuck.swap(true, Ordering::Relaxed) {
            self.health.set_kafka(KafkaState::NotInGroup);
            let cgrp = stats.cgrp.as_ref();
            // None known: librdkafka removed them all (see `cluster_answers`).
            let brokers_known = stats.brokers.values().filter(|b| b.source == "learned" || b.source == "configured").count();
            tracing::warn!(
                state = cgrp.map_or("none", |g| g.state.as_str()),
                join_state = cgrp.map_or("none", |g| g.join_state.as_str()),
                brokers_known,
                "the consumer is out of its group while a broker answers"
            );
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // librdkafka says a refused login in its log before the error callback, with the broker
        // and the mechanism: kept as the reason the poll loop gives.
        if message.contains("SASL authentication error") {
            tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}");
            self.refuse_login(message);
            return;
        }
        rdkafka::client::DefaultClientContext.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.retired.load(Ordering::Relaxed) {
            tracing::debug!(%error, reason, "Kafka client error from a consumer being replaced");
            return;
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.set_kafka(KafkaState::BrokersDown);
        }
        if is_refused_login(&error) || self.refused_login().is_some() {
            // Said once, by the poll loop, as it stops aurore; what follows a refused login
            // (every broker down) is its consequence.
            tracing::debug!(%error, reason, "Kafka client error after a refused login");
            if is_refused_login(&error) {
                self.refuse_login(reason);
            }
            return;
        }
        // `reason` names the broker (`host:port/id: ...`).
        if !self.said.lock().expect("said lock").say(&format!("{error}|{reason}"), Instant::now()) {
            return;
        }
        tracing::warn!(%error, reason, "Kafka client error; librdkafka reconnects and retries by itself (each said at most once per 10 s)");
    }
}

impl ConsumerContext for Context {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        if self.retired.load(Ordering::Relaxed) {
            // Closing: whatever the group says, this consumer holds nothing.
            let _ = match (err, cooperative) {
                (RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS, true) => consumer.incremental_unassign(tpl),
                (_, true) => Ok(()),
                (_, false) => consumer.unassign(),
            };
            return;
        }
        self.metrics.kafka_rebalances_total.inc();
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl, cooperative),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl, cooperative),
            other => {
                tracing::error!(error = ?other, "rebalance error");
                if cooperative { Ok(()) } else { consumer.unassign() }
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "applying a rebalance failed");
        }
        self.liveness.lock().expect("liveness lock").application_turn_done();
        self.metrics.kafka_assigned_partitions.set(consumer.assignment().map_or(0, |a| a.count() as i64));
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = &result {
            // Commits made during a rebalance fail (ILLEGAL_GENERATION); they are made again.
            tracing::debug!(error = %e, partition_count = offsets.count(), "Kafka offset commit failed; it will be retried");
            return;
        }
        let mut confirmed = self.confirmed.lock().expect("confirmed lock");
        for e in offsets.elements() {
            if let (Ok(()), Offset::Offset(n)) = (e.error(), e.offset()) {
                confirmed.push((e.topic().to_owned(), e.partition(), n));
            }
        }
    }
}
