//! A flush worker: persists the batches of its partitions, one transaction each, in order.
//!
//! The transaction: fence the offsets first (it also locks this partition's offset row, so a
//! zombie and the new owner serialise on it), then COPY the rows, insert the dead letters,
//! upsert the hourly counts, COMMIT. Only then is the batch acknowledged to the poll thread,
//! which commits the offsets to Kafka and frees the buffer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use deadpool_postgres::{Pool, Transaction};
use futures_util::SinkExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::batch::{Batch, RowBuffers, Unit};
use crate::buffer::Buffer;
use crate::copy;
use crate::db::{self, Class, DbError};
use crate::event::Reject;
use crate::kafka::handoff::{Ack, Handoff};
use crate::kafka::offsets::Fence;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sink::breaker::Breaker;

/// Everything a worker shares with the rest of the app.
#[derive(Clone)]
pub struct Shared {
    pub pool: Pool,
    pub group: Arc<str>,
    pub metrics: Arc<Metrics>,
    pub breaker: Arc<Breaker>,
    pub buffer: Arc<Buffer>,
    pub handoff: Arc<Handoff>,
    pub acks: Sender<Ack>,
    /// Where committed units' row buffers go back for reuse.
    pub row_buffers: Arc<RowBuffers>,
    /// Cancelled when the shutdown timeout has passed: abandon retries.
    pub abort: Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("PostgreSQL refuses aurore's work and retrying cannot help: {0}")]
    Fatal(DbError),
    #[error("gave up persisting at shutdown: {0}")]
    Aborted(String),
}

/// Why an attempt did not commit.
enum Failure {
    /// These units' partitions have moved on in consumer_offsets.
    Fenced(Vec<usize>),
    Db(DbError),
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Self {
        Failure::Db(e)
    }
}

/// A row PostgreSQL refused: unit index, row index, PostgreSQL's message.
type Rejected = Vec<(usize, usize, String)>;

pub async fn run(id: usize, shared: Shared, mut batches: UnboundedReceiver<Batch>) -> Result<(), SinkError> {
    // The poll thread closes the channel once everything is flushed (or on abort).
    while let Some(batch) = batches.recv().await {
        shared.metrics.worker_busy.inc();
        let result = persist(&shared, batch).await;
        shared.metrics.worker_busy.dec();
        if let Err(e) = result {
            tracing::error!(worker = id, error = %e, "flush worker stopped");
            // Nothing queued here will be persisted: hand it back so shutdown does not wait on it.
            batches.close();
            while let Ok(batch) = batches.try_recv() {
                abandon(&shared, batch.units);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Units that will not be persisted by this process: their events stay in Kafka, uncommitted.
fn abandon(shared: &Shared, units: Vec<Unit>) {
    for u in &units {
        release(shared, u, None);
    }
}

async fn persist(shared: &Shared, batch: Batch) -> Result<(), SinkError> {
    let started = Instant::now();
    let mut units = batch.units;
    let mut isolate = false;
    loop {
        let aborted = || SinkError::Aborted("the shutdown timeout passed".into());
        tokio::select! {
            biased;
            _ = shared.abort.cancelled() => return abandoned(shared, units, aborted()),
            _ = shared.breaker.ready() => {}
        }
        let attempt = tokio::select! {
            biased;
            _ = shared.abort.cancelled() => return abandoned(shared, units, aborted()),
            r = attempt(shared, &units, isolate) => r,
        };
        match attempt {
            Ok(rejected) => {
                shared.breaker.success();
                shared.metrics.database_connection_up.set(1);
                acknowledge(shared, units, &rejected, started);
                return Ok(());
            }
            Err(Failure::Fenced(lost)) => {
                shared.breaker.success();
                shared.metrics.database_connection_up.set(1);
                let mut lost_units = Vec::new();
                for i in lost.into_iter().rev() {
                    lost_units.push(units.swap_remove(i));
                }
                fenced(shared, lost_units).await;
                if units.is_empty() {
                    return Ok(());
                }
            }
            Err(Failure::Db(e)) => match e.class() {
                Class::Data if !isolate => {
                    // A row slipped past validation; redo the batch isolating the bad rows.
                    shared.metrics.worker_flush_errors_total.with_label_values(&["data"]).inc();
                    tracing::warn!(error = %e, "a row of the batch was refused; isolating it");
                    isolate = true;
                }
                Class::Transient => {
                    shared.metrics.worker_flush_errors_total.with_label_values(&["transient"]).inc();
                    shared.metrics.database_connection_up.set(0);
                    let delay = shared.breaker.failure();
                    tracing::warn!(error = %e, retry_in = ?delay, breaker = ?shared.breaker.state(), "PostgreSQL unavailable; the batch is kept and retried");
                    tokio::select! {
                        biased;
                        _ = shared.abort.cancelled() => return abandoned(shared, units, SinkError::Aborted(e.to_string())),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Class::Data | Class::Fatal => {
                    shared.metrics.worker_flush_errors_total.with_label_values(&["fatal"]).inc();
                    return abandoned(shared, units, SinkError::Fatal(e));
                }
            },
        }
    }
}

fn abandoned(shared: &Shared, units: Vec<Unit>, e: SinkError) -> Result<(), SinkError> {
    abandon(shared, units);
    Err(e)
}

async fn attempt(shared: &Shared, units: &[Unit], isolate: bool) -> Result<Rejected, Failure> {
    let mut client = shared.pool.get().await.map_err(DbError::pool("persisting a batch"))?;
    let mut tx = client.transaction().await.map_err(DbError::pg("beginning a transaction"))?;
    let lost = fence(&tx, &shared.group, units).await?;
    if !lost.is_empty() {
        tx.rollback().await.map_err(DbError::pg("rolling back a fenced batch"))?;
        return Err(Failure::Fenced(lost));
    }
    let rejected = if isolate {
        copy_isolating(&mut tx, units).await?
    } else {
        copy_rows(&tx, units.iter().map(|u| u.rows(0, u.row_count()))).await?;
        Vec::new()
    };
    dead_letters(&tx, units, &rejected).await?;
    counts(&tx, units, &rejected).await?;
    tx.commit().await.map_err(DbError::pg("committing a batch"))?;
    Ok(rejected)
}

/// Moves each unit's partition from its fence to its end, or reports the units whose
/// partition has moved on. Locks the partitions' offset rows until the transaction ends.
async fn fence(tx: &Transaction<'_>, group: &str, units: &[Unit]) -> Result<Vec<usize>, DbError> {
    let (mut upd, mut ins): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    for (i, u) in units.iter().enumerate() {
        match u.fence {
            Fence::At(_) => upd.push(i),
            Fence::Absent => ins.push(i),
        }
    }
    let topics = |ix: &[usize]| ix.iter().map(|&i| &*units[i].topic).collect::<Vec<&str>>();
    let partitions = |ix: &[usize]| ix.iter().map(|&i| units[i].partition).collect::<Vec<i32>>();
    let nexts = |ix: &[usize]| ix.iter().map(|&i| units[i].next_offset).collect::<Vec<i64>>();
    let mut ok: Vec<(String, i32)> = Vec::with_capacity(units.len());
    if !upd.is_empty() {
        let expected: Vec<i64> = upd.iter().map(|&i| if let Fence::At(n) = units[i].fence { n } else { unreachable!() }).collect();
        let rows = tx
            .query(
                "UPDATE consumer_offsets AS o SET next_offset = u.next_offset, updated_at = now()
                 FROM unnest($2::text[], $3::int4[], $4::int8[], $5::int8[]) AS u(topic, partition, expected, next_offset)
                 WHERE o.group_id = $1 AND o.topic = u.topic AND o.partition = u.partition AND o.next_offset = u.expected
                 RETURNING o.topic, o.partition",
                &[&group, &topics(&upd), &partitions(&upd), &expected, &nexts(&upd)],
            )
            .await
            .map_err(DbError::pg("moving consumer offsets"))?;
        ok.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
    }
    if !ins.is_empty() {
        let rows = tx
            .query(
                "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)
                 SELECT $1, u.topic, u.partition, u.next_offset FROM unnest($2::text[], $3::int4[], $4::int8[]) AS u(topic, partition, next_offset)
                 ON CONFLICT DO NOTHING RETURNING topic, partition",
                &[&group, &topics(&ins), &partitions(&ins), &nexts(&ins)],
            )
            .await
            .map_err(DbError::pg("recording new consumer offsets"))?;
        ok.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
    }
    Ok((0..units.len()).filter(|&i| !ok.iter().any(|(t, p)| *p == units[i].partition && **t == *units[i].topic)).collect())
}

async fn copy_rows(tx: &Transaction<'_>, chunks: impl Iterator<Item = Bytes>) -> Result<u64, DbError> {
    let sink = tx.copy_in(copy::COPY_EVENTS).await.map_err(DbError::pg("starting COPY"))?;
    futures_util::pin_mut!(sink);
    sink.feed(Bytes::from_static(copy::HEADER)).await.map_err(DbError::pg("COPY"))?;
    for chunk in chunks {
        if !chunk.is_empty() {
            sink.feed(chunk).await.map_err(DbError::pg("COPY"))?;
        }
    }
    sink.feed(Bytes::from_static(copy::TRAILER)).await.map_err(DbError::pg("COPY"))?;
    sink.as_mut().finish().await.map_err(DbError::pg("COPY"))
}

/// COPY under savepoints, halving the ranges that PostgreSQL refuses until the refused rows
/// stand alone; those are returned with PostgreSQL's message, the rest is in the transaction.
async fn copy_isolating(tx: &mut Transaction<'_>, units: &[Unit]) -> Result<Rejected, DbError> {
    let mut rejected = Vec::new();
    let mut todo: Vec<(usize, usize, usize)> = units.iter().enumerate().filter(|(_, u)| u.row_count() > 0).map(|(i, u)| (i, 0, u.row_count())).collect();
    while let Some((u, lo, hi)) = todo.pop() {
        let sp = tx.savepoint("isolate").await.map_err(DbError::pg("SAVEPOINT"))?;
        match copy_rows(&sp, std::iter::once(units[u].rows(lo, hi))).await {
            Ok(_) => sp.commit().await.map_err(DbError::pg("RELEASE SAVEPOINT"))?,
            Err(e) if e.class() == Class::Data => {
                sp.rollback().await.map_err(DbError::pg("ROLLBACK TO SAVEPOINT"))?;
                if hi - lo == 1 {
                    let msg = match &e {
                        DbError::Postgres { source, .. } => source.as_db_error().map_or_else(|| source.to_string(), |d| {
                            format!("PostgreSQL refused the row: {}{}", d.message(), d.detail().map(|x| format!(" ({x})")).unwrap_or_default())
                        }),
                        other => other.to_string(),
                    };
                    rejected.push((u, lo, msg));
                } else {
                    let mid = lo + (hi - lo) / 2;
                    todo.push((u, mid, hi));
                    todo.push((u, lo, mid));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(rejected)
}

async fn dead_letters(tx: &Transaction<'_>, units: &[Unit], rejected: &Rejected) -> Result<(), DbError> {
    let n = units.iter().map(|u| u.dead.len()).sum::<usize>() + rejected.len();
    if n == 0 {
        return Ok(());
    }
    let (mut topics, mut partitions, mut offsets, mut raws, mut reasons, mut details) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for u in units {
        for d in &u.dead {
            topics.push(&*u.topic);
            partitions.push(u.partition);
            offsets.push(d.offset);
            raws.push(d.raw.clone());
            reasons.push(d.reason.label());
            details.push(no_nul(&d.detail));
        }
    }
    for (u, row, msg) in rejected {
        let unit = &units[*u];
        let bytes = unit.rows(*row, row + 1);
        let decoded = copy::decode_row(&bytes);
        topics.push(&*unit.topic);
        partitions.push(unit.partition);
        offsets.push(decoded.as_ref().map_or(-1, |d| d.offset));
        // The message is gone by now; keep what the row held of it.
        raws.push(decoded.map(|d| {
            serde_json::json!({"service": d.service, "event_type": d.event_type, "payload": d.payload}).to_string().into_bytes()
        }));
        reasons.push(Reject::PostgresRejected.label());
        details.push(no_nul(msg));
    }
    tx.execute(
        "INSERT INTO dead_letters (topic, partition, \"offset\", raw, reason, detail)
         SELECT * FROM unnest($1::text[], $2::int4[], $3::int8[], $4::bytea[], $5::text[], $6::text[])",
        &[&topics, &partitions, &offsets, &raws, &reasons, &details],
    )
    .await
    .map_err(DbError::pg("inserting dead letters"))?;
    Ok(())
}

fn no_nul(s: &str) -> String {
    s.replace('\0', "\\0")
}

/// Upserts the batch's counts, merged and sorted so that concurrent workers lock the same
/// count rows in the same order (no deadlock).
async fn counts(tx: &Transaction<'_>, units: &[Unit], rejected: &Rejected) -> Result<(), DbError> {
    let mut merged: BTreeMap<(&str, &str, i64), i64> = BTreeMap::new();
    for u in units {
        for c in &u.counts {
            *merged.entry((&c.service, &c.event_type, c.hour)).or_default() += c.n;
        }
    }
    for (u, row, _) in rejected {
        let c = &units[*u].counts[units[*u].row_meta[*row].count as usize];
        *merged.entry((&c.service, &c.event_type, c.hour)).or_default() -= 1;
    }
    merged.retain(|_, n| *n > 0);
    if merged.is_empty() {
        return Ok(());
    }
    let services: Vec<&str> = merged.keys().map(|k| k.0).collect();
    let types: Vec<&str> = merged.keys().map(|k| k.1).collect();
    let hours: Vec<i64> = merged.keys().map(|k| k.2).collect();
    let ns: Vec<i64> = merged.values().copied().collect();
    tx.execute(
        "INSERT INTO event_counts (service, event_type, hour, events)
         SELECT u.service, u.event_type, timestamptz 'epoch' + u.hour * interval '1 microsecond', u.n
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS u(service, event_type, hour, n)
         ON CONFLICT (service, event_type, hour) DO UPDATE SET events = event_counts.events + EXCLUDED.events",
        &[&services, &types, &hours, &ns],
    )
    .await
    .map_err(DbError::pg("upserting event counts"))?;
    Ok(())
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// After COMMIT: metrics, acknowledgements to the poll thread, buffer space.
fn acknowledge(shared: &Shared, units: Vec<Unit>, rejected: &Rejected, started: Instant) {
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
    for mut u in units {
        release(shared, &u, Some(u.next_offset));
        shared.row_buffers.give(std::mem::take(&mut u.frozen));
        let _ = shared.acks.send(Ack::Persisted { topic: u.topic, partition: u.partition, epoch: u.epoch, next_offset: u.next_offset });
    }
}

/// Units whose partition someone else moved on: dropped, and the poll thread told where the
/// partition really stands so it can seek there if it still owns it.
async fn fenced(shared: &Shared, units: Vec<Unit>) {
    for u in units {
        shared.metrics.offset_fence_conflicts_total.inc();
        shared.metrics.worker_flush_errors_total.with_label_values(&["fence"]).inc();
        let stored = db::load_offsets(&shared.pool, &shared.group, &u.topic, &[u.partition]).await.ok().map(|m| m.get(&u.partition).copied());
        tracing::warn!(topic = %u.topic, partition = u.partition, fence = ?u.fence, stored = ?stored, dropped = u.messages,
            "partition was moved on by another consumer; dropping its buffered events");
        release(shared, &u, None);
        let _ = shared.acks.send(Ack::Fenced { topic: u.topic.clone(), partition: u.partition, epoch: u.epoch, stored });
    }
}

fn release(shared: &Shared, u: &Unit, persisted: Option<i64>) {
    shared.buffer.release(u.messages, u.bytes);
    shared.handoff.done(&u.topic, u.partition, persisted);
}
