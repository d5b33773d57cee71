//! A flush worker: persists the batches of its partitions, one transaction each, in order
//! ([`sink::transaction`](super::transaction)), retrying transient failures with backoff under
//! the circuit breaker, and reports every unit back to the poll thread through the one return
//! path ([`Report`]), whatever became of it.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::db::{Class, DbError};
use crate::event::Reject;
use crate::metrics::Metrics;
use crate::pipeline::batch::{Batch, Unit};
use crate::pipeline::breaker::Breaker;
use crate::pipeline::handoff::{Outcome, Report, Reporter};
use crate::pipeline::now_micros;
use crate::pipeline::offsets::Fence;
use crate::pipeline::progress::{Doing, Done};
use crate::shutdown::Shutdown;
use crate::sink::dead_letter_topic::DeadLetterTopic;
use crate::sink::transaction::{self, Failure, Rejected};

/// Everything a worker shares with the rest of the app.
#[derive(Clone)]
pub struct Shared {
    pub pool: Pool,
    /// `user@host:port/dbname`, for log lines: never the password.
    pub database: Arc<str>,
    pub group: Arc<str>,
    pub metrics: Arc<Metrics>,
    pub breaker: Arc<Breaker>,
    pub reports: Reporter,
    /// Cancelled when the shutdown timeout has passed: abandon retries.
    pub abort: Shutdown,
    /// `--dead-letter-topic`: each dead letter is produced there before its batch commits.
    pub dead_letter_topic: Option<Arc<DeadLetterTopic>>,
    /// Wakes partition maintenance: a flush found no partition for its rows.
    pub partitions_missing: Arc<tokio::sync::Notify>,
    /// Every worker's progress, for a batch to wait on the batches it comes after.
    pub progress: Vec<Done>,
}

/// A batch whose transaction has committed asynchronously, for
/// [`durability`](super::durability) to confirm: durable once confirmed.
pub struct Committed {
    pub units: Vec<Unit>,
    /// The rows PostgreSQL refused (stored as dead letters by the same transaction).
    pub rejected: Rejected,
    /// When the worker took the batch: `worker_batch_processing_seconds` runs to its
    /// confirmation.
    pub started: Instant,
    /// When its COMMIT returned.
    pub committed: std::time::Instant,
}

/// The workers' end of the way to [`durability`](super::durability).
pub type Confirmations = tokio::sync::mpsc::UnboundedSender<Committed>;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("PostgreSQL at {database} refuses aurore's work and retrying cannot help: {error}")]
    Fatal { database: Arc<str>, error: DbError },
    #[error("gave up persisting at shutdown: {0}")]
    Aborted(String),
}

/// Persists what arrives on `batches` until the channel closes; each committed batch goes to
/// `confirmations` ([`durability`](super::durability)), which acknowledges it once durable.
/// `doing` tells the other workers and the poll thread how far it got ([`Done`]).
pub async fn run(
    id: usize,
    shared: Shared,
    mut batches: UnboundedReceiver<Batch>,
    confirmations: Confirmations,
    doing: Doing,
) -> Result<(), SinkError> {
    // The poll thread closes the channel once everything is flushed. On abort the worker leaves
    // without it: a poll thread that stopped answering never closes it.
    loop {
        let batch = tokio::select! {
            biased;
            batch = batches.recv() => match batch {
                Some(batch) => batch,
                None => break,
            },
            _ = shared.abort.cancelled() => {
                batches.close();
                let mut queued = 0;
                while let Ok(batch) = batches.try_recv() {
                    queued += 1;
                    report(&shared, batch.units, Outcome::Abandoned);
                }
                if queued == 0 {
                    break;
                }
                return Err(SinkError::Aborted(format!("{queued} batches queued for this worker were not persisted; Kafka has them")));
            }
        };
        let seq = batch.seq;
        let turn = batch.after.is_empty()
            || tokio::select! {
                biased;
                _ = shared.abort.cancelled() => false,
                _ = after(&shared.progress, &batch.after) => true,
            };
        let result = if turn {
            shared.metrics.worker_busy.inc();
            let result = persist(&shared, batch, &confirmations).await;
            shared.metrics.worker_busy.dec();
            result
        } else {
            abandoned(&shared, batch.units, SinkError::Aborted("the shutdown timeout passed".into()))
        };
        doing.send_replace(seq);
        if let Err(e) = result {
            tracing::error!(worker = id, error = %e, "flush worker stopped; not retried, aurore stops");
            // Nothing queued here will be persisted: hand it back so shutdown does not wait on it.
            batches.close();
            while let Ok(batch) = batches.try_recv() {
                report(&shared, batch.units, Outcome::Abandoned);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Until the batches `after` names have ended at their workers: a partition that moved here
/// ([`Batcher::route`](crate::pipeline::batch::Batcher::route)) has its earlier units there,
/// and this batch's fence expects to find them committed. A worker that is gone ended what it
/// will: whatever it did not commit, the fence finds out.
async fn after(progress: &[Done], after: &[(usize, u64)]) {
    for &(worker, seq) in after {
        if let Some(done) = progress.get(worker) {
            let _ = done.clone().wait_for(|&d| d >= seq).await;
        }
    }
}

async fn persist(shared: &Shared, batch: Batch, confirmations: &Confirmations) -> Result<(), SinkError> {
    let started = Instant::now();
    let mut units = batch.units;
    let mut isolate = false;
    loop {
        let aborted = || SinkError::Aborted("the shutdown timeout passed".into());
        // Held to the end of this round, after its outcome is told to the breaker.
        let _turn = tokio::select! {
            biased;
            _ = shared.abort.cancelled() => return abandoned(shared, units, aborted()),
            turn = shared.breaker.ready() => turn,
        };
        let attempt = tokio::select! {
            biased;
            _ = shared.abort.cancelled() => return abandoned(shared, units, aborted()),
            r = transaction::attempt(&shared.pool, &shared.group, &units, isolate, shared.dead_letter_topic.as_deref()) => r,
        };
        match attempt {
            Ok(rejected) => {
                shared.breaker.success();
                shared.metrics.database_connection_up.set(1);
                if let Err(unconfirmed) =
                    confirmations.send(Committed { units, rejected, started, committed: std::time::Instant::now() })
                {
                    // Only when aborting: the confirming task is gone.
                    return abandoned(shared, unconfirmed.0.units, SinkError::Aborted("committed, not confirmed durable".into()));
                }
                return Ok(());
            }
            Err(Failure::Fenced(lost)) => {
                shared.breaker.success();
                shared.metrics.database_connection_up.set(1);
                let mut lost_units = Vec::new();
                for i in lost.into_iter().rev() {
                    lost_units.push(units.swap_remove(i));
                }
                fenced(shared, lost_units);
                if units.is_empty() {
                    return Ok(());
                }
            }
            Err(Failure::DeadLetterTopic(e)) => {
                // Kafka retries inside the producer until its delivery timeout: whatever is
                // left is worth waiting out, as PostgreSQL's unavailability is.
                shared.metrics.worker_flush_errors_total.with_label_values(&["dead_letter_topic"]).inc();
                let topic = shared.dead_letter_topic.as_ref().map_or("", |t| t.topic());
                tracing::warn!(topic, error = %e, "dead letters not delivered to --dead-letter-topic; the batch was not committed and is retried in 1 s");
                tokio::select! {
                    biased;
                    _ = shared.abort.cancelled() => return abandoned(shared, units, SinkError::Aborted(e.to_string())),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(Failure::Db(e)) => match e.class() {
                Class::Data if !isolate => {
                    // A row slipped past validation; redo the batch isolating the bad rows.
                    shared.metrics.worker_flush_errors_total.with_label_values(&["data"]).inc();
                    tracing::warn!(database = %shared.database, error = %e, "PostgreSQL refused a row of the batch; retrying it row by row to dead-letter the refused ones");
                    isolate = true;
                }
                Class::Transient => {
                    shared.metrics.worker_flush_errors_total.with_label_values(&["transient"]).inc();
                    let missing_partition = e.is_missing_partition();
                    if missing_partition {
                        shared.metrics.table_partition_missing_total.inc();
                        shared.partitions_missing.notify_one();
                    } else {
                        shared.metrics.database_connection_up.set(0);
                    }
                    let delay = shared.breaker.failure();
                    let what = if missing_partition {
                        "no partition holds these rows yet (partition maintenance is behind: see its warnings); the batch is kept and retried"
                    } else {
                        "PostgreSQL unavailable; the batch is kept and retried"
                    };
                    tracing::warn!(
                        database = %shared.database,
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        breaker = shared.breaker.state().label(),
                        "{what}"
                    );
                    tokio::select! {
                        biased;
                        _ = shared.abort.cancelled() => return abandoned(shared, units, SinkError::Aborted(e.to_string())),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Class::Data | Class::Fatal => {
                    shared.metrics.worker_flush_errors_total.with_label_values(&["fatal"]).inc();
                    return abandoned(shared, units, SinkError::Fatal { database: shared.database.clone(), error: e });
                }
            },
        }
    }
}

fn abandoned(shared: &Shared, units: Vec<Unit>, e: SinkError) -> Result<(), SinkError> {
    report(shared, units, Outcome::Abandoned);
    Err(e)
}

/// Once the batch's COMMIT is durable: metrics, then the report to the poll thread.
pub(super) fn acknowledge(shared: &Shared, units: Vec<Unit>, rejected: &Rejected, started: Instant) {
    let m = &shared.metrics;
    let now = now_micros();
    let (e2e, ingest) = (m.event_end_to_end_latency_seconds.local(), m.event_ingest_latency_seconds.local());
    let mut rows = 0;
    let mut messages = 0;
    for (i, u) in units.iter().enumerate() {
        for (r, meta) in u.row_meta.iter().enumerate() {
            if rejected.iter().any(|&(ru, rr, _)| ru == i && rr == r) {
                continue;
            }
            e2e.observe((now - meta.occurred_at).max(0) as f64 / 1e6);
            ingest.observe((now - meta.appended_at).max(0) as f64 / 1e6);
        }
        rows += u.row_count();
        messages += u.messages;
        for d in &u.dead {
            m.events_dead_lettered_total.with_label_values(&[d.reason.label()]).inc();
        }
    }
    e2e.flush();
    ingest.flush();
    let rows = rows - rejected.len();
    m.events_dead_lettered_total.with_label_values(&[Reject::PostgresRejected.label()]).inc_by(rejected.len() as u64);
    m.events_processed_total.inc_by(rows as u64);
    m.worker_batches_processed_total.inc();
    m.worker_batch_size.observe(messages as f64);
    m.worker_batch_processing_seconds.observe(started.elapsed().as_secs_f64());
    report(shared, units, Outcome::Persisted);
}

/// Units whose partition's stored offset is not where they expected it (someone else moved it
/// on, or an earlier batch of it is not stored): dropped; the poll thread finds out where the
/// partition stands and seeks there if it still owns it.
fn fenced(shared: &Shared, units: Vec<Unit>) {
    for u in &units {
        shared.metrics.offset_fence_conflicts_total.inc();
        shared.metrics.worker_flush_errors_total.with_label_values(&["fence"]).inc();
        // The offset the transaction expected to find (none: it expected no row).
        let expected_offset = match u.fence {
            Fence::At(n) => Some(n),
            Fence::Absent => None,
        };
        tracing::warn!(topic = %u.topic, partition = u.partition, expected_offset, dropped = u.messages,
            "the partition's stored offset is not where this batch expected it: another consumer moved it on, or an earlier \
             batch of the partition is not stored (PostgreSQL lost its commit in a crash, or it was not confirmed durable and \
             is read again); dropping the partition's buffered events and reading from where it stands: nothing is lost or stored twice");
    }
    report(shared, units, Outcome::Fenced);
}

/// Hands units back to the poll thread. If it is gone, the app is stopping and nobody needs them.
pub(super) fn report(shared: &Shared, units: Vec<Unit>, outcome: Outcome) {
    if !units.is_empty() {
        let _ = shared.reports.send(Report { units, outcome });
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
