//! Durability of the flush workers' commits: what lets a worker go on to its next batch without
//! waiting for its commit record to reach PostgreSQL's disk.
//!
//! A worker's transaction commits with `synchronous_commit = off` (PostgreSQL's asynchronous
//! commit, <https://www.postgresql.org/docs/15/wal-async-commit.html>): COMMIT returns once the
//! commit record is in the WAL buffers, and the worker hands the batch here ([`Committed`]).
//! Nothing is acknowledged to the poll thread yet: no buffer space freed, no offset committed to
//! Kafka, no metric counted. This task confirms every batch handed to it meanwhile with one
//! statement ([`sql::CONFIRM_DURABLE`]) in a transaction of its own
//! that writes a WAL record, so that its commit, under the session's own `synchronous_commit`,
//! waits for the WAL to be flushed (and replicated, if the server says so) past its own commit
//! record, and so past every commit record written before it. The same statement reads
//! `consumer_offsets`: a batch whose partitions are stored short of its end was lost by a
//! PostgreSQL crash between its COMMIT and the flush (the rows and the offset go together,
//! being one transaction), and is reported [`Outcome::NotDurable`]: the poll thread reads the
//! partition's position again and Kafka delivers those events again. Every other batch is
//! acknowledged (`worker::acknowledge`).
//!
//! A flush proves nothing about a commit made before a server restart, and a restart ends every
//! connection: so a batch is confirmed only on a connection that was open before its COMMIT
//! returned. A batch committed before the confirming connection was (re)opened (the old one broke
//! or timed out while it waited) is reported [`Outcome::NotDurable`] without asking: PostgreSQL
//! may have lost it, and reading the offset cannot tell, since by then the partition may have
//! been read again and the same offset stored anew. Reading the position again costs a moment;
//! whatever PostgreSQL still has is not stored twice (the fence). The read of `consumer_offsets`
//! covers what the connection cannot see: a pooler (PgBouncer) between aurore and a server that
//! restarted.
//!
//! One flush confirms every batch committed by all workers meanwhile, where each worker used to
//! wait for its own (2.7 ms a transaction, median, on the local stack: README, Performance). A
//! partition's first batch (no `consumer_offsets` row yet) commits synchronously instead
//! ([`transaction::attempt`](super::transaction::attempt)): were it lost, the partition would
//! start from Kafka's committed offset again, past it.

use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::db::{Class, DbError};
use crate::pipeline::batch::Unit;
use crate::pipeline::handoff::Outcome;
use crate::sink::sql;
use crate::sink::worker::{self, Committed, Shared, SinkError};

/// The first wait before confirming again after a failure, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A confirmation (one WAL flush, milliseconds) that takes longer is given up with its
/// connection, which may be dead without a word (a NAT that forgot it: TCP keepalives start
/// only after hours), and tried again on a new one.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the confirming connection, idle, is looked at, and opened again if it ended.
const IDLE_CHECK: Duration = Duration::from_millis(200);

/// The confirming connection's `application_name` (unless `DATABASE_URL` names one).
pub const APPLICATION_NAME: &str = "aurore durability";

/// Confirms what the workers commit until they are all gone and nothing is pending. `pool` is
/// its own (one connection), so that it never waits behind a worker for one.
pub async fn run(shared: Shared, pool: Pool, mut commits: UnboundedReceiver<Committed>) -> Result<(), SinkError> {
    let mut pending: Vec<Committed> = Vec::new();
    let mut retry = RETRY_FIRST;
    loop {
        while pending.is_empty() {
            tokio::select! {
                biased;
                c = commits.recv() => match c {
                    Some(c) => pending.push(c),
                    None => return Ok(()),
                },
                _ = shared.abort.cancelled() => return Ok(()),
                // A connection opened only when the next batch needs it would be younger than
                // that batch's COMMIT, which the connection-age rule (see the module's overview)
                // could not confirm: after every PostgreSQL restart, the first batch would be
                // reported not durable, minutes later. Opened again while idle, the connection
                // is older than any batch committed after the restart but the first 200 ms.
                // The pool opens a new one when the old one has ended (deadpool's fast recycling
                // looks at the client only); a server still down fails, and is tried again.
                // Within the select: a commit or the shutdown does not wait for a connect.
                _ = async { tokio::time::sleep(IDLE_CHECK).await; drop(pool.get().await) } => {}
            }
        }
        while let Ok(c) = commits.try_recv() {
            pending.push(c);
        }
        let confirmed = tokio::select! {
            biased;
            _ = shared.abort.cancelled() => return abandon(&shared, pending, "the shutdown timeout passed".into()),
            r = confirm(&pool, &pending) => r,
        };
        match confirmed {
            Ok(unconfirmed) => {
                retry = RETRY_FIRST;
                for (i, c) in pending.drain(..).enumerate() {
                    if unconfirmed.contains(&i) {
                        not_durable(&shared, c.units);
                    } else {
                        worker::acknowledge(&shared, c.units, &c.rejected, c.started);
                    }
                }
            }
            Err(e) if e.class() == Class::Transient => {
                tracing::warn!(
                    database = %shared.database,
                    error = %e,
                    batches = pending.len(),
                    retry_in_ms = retry.as_millis() as u64,
                    "cannot confirm that committed batches reached PostgreSQL's disk; they are held (not acknowledged) and confirmed again"
                );
                tokio::select! {
                    biased;
                    _ = shared.abort.cancelled() => return abandon(&shared, pending, e.to_string()),
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
            Err(e) => {
                let error = SinkError::Fatal { database: shared.database.clone(), error: e };
                tracing::error!(error = %error, "committed batches cannot be confirmed; they are not acknowledged and aurore stops");
                for c in pending.drain(..) {
                    worker::report(&shared, c.units, Outcome::Abandoned);
                }
                return Err(error);
            }
        }
    }
}

/// Runs the confirming statement once, with nothing to confirm: at start, so that a server
/// that refuses it (a role denied `pg_logical_emit_message`, which PostgreSQL grants to
/// every role by default) stops aurore before it consumes anything, not at its first commit.
pub async fn probe(pool: &Pool) -> Result<(), DbError> {
    confirm(pool, &[]).await.map(drop)
}

/// Flushes the WAL past every commit in `pending` and returns the indexes (ascending) of those
/// not confirmed: committed before this connection was opened, or whose partitions PostgreSQL
/// no longer has at their end.
async fn confirm(pool: &Pool, pending: &[Committed]) -> Result<Vec<usize>, DbError> {
    let n: usize = pending.iter().map(|c| c.units.len()).sum();
    let (mut topics, mut partitions, mut nexts, mut batch) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for (i, c) in pending.iter().enumerate() {
        for u in &c.units {
            topics.push(&*u.topic);
            partitions.push(u.partition);
            nexts.push(u.next_offset);
            batch.push(i);
        }
    }
    let client = pool.get().await.map_err(DbError::pool("confirming commits"))?;
    let opened = Object::metrics(&client).created;
    let asked = async {
        let statement = client.prepare_cached(sql::CONFIRM_DURABLE).await?;
        client.query_one(&statement, &[&topics, &partitions, &nexts]).await
    };
    let row = match tokio::time::timeout(CONFIRM_TIMEOUT, asked).await {
        Ok(row) => row.map_err(DbError::pg("confirming commits"))?,
        Err(_) => {
            // Not back in the pool: its answer may still come, to nobody.
            drop(Object::take(client));
            return Err(DbError::TimedOut { context: "confirming commits", after: CONFIRM_TIMEOUT });
        }
    };
    let short: Vec<i64> = row.get(1);
    Ok(unconfirmed(pending.iter().map(|c| c.committed), opened, &short, &batch))
}

/// The indexes (ascending, once each) of the batches a confirmation leaves unconfirmed: those
/// whose COMMIT returned (`committed`, in the batches' order) before the confirming connection
/// was opened, and those with a unit among `short` (1-based positions of units, as
/// [`sql::CONFIRM_DURABLE`] returns them; `batch` holds each unit's batch index).
fn unconfirmed(committed: impl Iterator<Item = Instant>, opened: Instant, short: &[i64], batch: &[usize]) -> Vec<usize> {
    let mut found: Vec<usize> = committed.enumerate().filter(|(_, at)| *at < opened).map(|(i, _)| i).collect();
    found.extend(short.iter().map(|&k| batch[k as usize - 1]));
    found.sort_unstable();
    found.dedup();
    found
}

fn not_durable(shared: &Shared, units: Vec<Unit>) {
    shared.metrics.worker_batches_not_durable_total.inc();
    for u in &units {
        tracing::warn!(
            topic = %u.topic,
            partition = u.partition,
            next_offset = u.next_offset,
            events = u.messages,
            "a committed batch was not confirmed durable (PostgreSQL restarted, or the confirming connection was lost, \
             before a WAL flush past it was confirmed); the partition is read again from where PostgreSQL has it: \
             nothing is lost or stored twice"
        );
    }
    worker::report(shared, units, Outcome::NotDurable);
}

fn abandon(shared: &Shared, pending: Vec<Committed>, why: String) -> Result<(), SinkError> {
    let batches = pending.len();
    for c in pending {
        worker::report(shared, c.units, Outcome::Abandoned);
    }
    Err(SinkError::Aborted(format!("{batches} committed batches not confirmed durable ({why}); Kafka has them")))
}

#[cfg(test)]
#[path = "durability_tests.rs"]
mod tests;
