//! The poll thread's core: the [`PollerState`], its ends of the channels to and from the flush
//! workers, and [`Core::execute`], which carries out the state's commands on the Kafka client.
//!
//! The core sits behind a mutex in the consumer's context so that both the poll loop and the
//! rebalance callback can drive it. Both run on the poll thread and the loop never holds the
//! core across `poll()` (where the callback runs), so the lock is never contended.

use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc::UnboundedSender;

use crate::kafka::commits;
use crate::kafka::state::{Command, PollerState};
use crate::pipeline::batch::Batch;
use crate::pipeline::handoff::{Outcome, Report, Reports};

pub struct Core {
    pub state: PollerState,
    pub reports: Reports,
    pub workers: Vec<UnboundedSender<Batch>>,
}

impl Core {
    /// Takes in every report waiting, without blocking.
    pub fn absorb_reports(&mut self) {
        while let Ok(r) = self.reports.try_recv() {
            self.state.completed(r);
        }
    }

    /// Waits up to `timeout` for one report, then takes in the others waiting. False if the
    /// workers are gone.
    pub fn wait_report(&mut self, timeout: Duration) -> bool {
        match self.reports.recv_timeout(timeout) {
            Ok(r) => {
                self.state.completed(r);
                self.absorb_reports();
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    /// Carries out the state's commands, committing with `mode`.
    pub fn execute<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, mode: CommitMode) {
        loop {
            let commands = self.state.take_commands(Instant::now());
            if commands.is_empty() {
                return;
            }
            for command in commands {
                match command {
                    Command::Send { worker, batch } => {
                        if let Err(returned) = self.workers[worker].send(batch) {
                            // The worker has stopped (fatal error): the app is shutting down.
                            self.state.completed(Report { units: returned.0.units, outcome: Outcome::Abandoned });
                        }
                    }
                    Command::Commit(offsets) => commit(consumer, &offsets, mode),
                    Command::Seek { topic, partition, offset } => {
                        if let Err(e) = consumer.seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
                            tracing::warn!(%topic, partition, offset, error = %e, "seek failed; will retry");
                            self.state.seek_failed(&topic, partition);
                        }
                    }
                    Command::Pause(parts) => {
                        if let Err(e) = consumer.pause(&list(&parts)) {
                            tracing::warn!(error = %e, "pausing partitions failed");
                        }
                    }
                    Command::Resume(parts) => {
                        if let Err(e) = consumer.resume(&list(&parts)) {
                            tracing::warn!(error = %e, "resuming partitions failed");
                        }
                    }
                }
            }
        }
    }
}

/// Commits offsets to Kafka. A failure is not an error: PostgreSQL holds the truth, and what
/// Kafka does not confirm is committed again ([`commits::RECOMMIT`]).
pub fn commit<C: ConsumerContext>(consumer: &BaseConsumer<C>, offsets: &[commits::Offset], mode: CommitMode) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, next) in offsets {
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
    }
    let made = match mode {
        CommitMode::Sync => consumer.commit(&tpl, mode),
        CommitMode::Async => commit_async(consumer, &tpl),
    };
    if let Err(e) = made {
        tracing::debug!(error = %e, partition_count = offsets.len(), "Kafka offset commit not made; PostgreSQL has the offsets and it is retried");
    }
}

/// An asynchronous commit whose result comes back as an event on the consumer's queue, which
/// `BaseConsumer::poll` serves to [`ConsumerContext::commit_callback`]. rust-rdkafka's own
/// (`rd_kafka_commit` with `async`) names no queue for it, and librdkafka then reports a manual
/// commit's result nowhere (rdkafka_cgrp.c, `rd_kafka_cgrp_propagate_commit_result`; rust-rdkafka
/// issue 856): no commit was ever confirmed, every partition was committed again every
/// [`commits::RECOMMIT`], and every stop waited out its final commit's confirmation.
fn commit_async<C: ConsumerContext>(consumer: &BaseConsumer<C>, tpl: &TopicPartitionList) -> KafkaResult<()> {
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is valid for the consumer's life; the queue handle is a new reference,
    // destroyed once below (the commit keeps its own reference to the queue for the reply).
    let err = unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(rk);
        if queue.is_null() {
            return consumer.commit(tpl, CommitMode::Async);
        }
        let err = rd::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
        rd::rd_kafka_queue_destroy(queue);
        err
    };
    match err {
        rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
        e => Err(KafkaError::ConsumerCommit(e.into())),
    }
}

fn list(parts: &[(Arc<str>, i32)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in parts {
        let _ = tpl.add_partition(topic, *partition);
    }
    tpl
}
