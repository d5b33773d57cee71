//! One batch's transaction: fence the offsets first (it also locks this partition's offset
//! row, so a zombie and the new owner serialise on it), then COPY the rows — or, once a row
//! was refused, COPY under savepoints that isolate the refused rows — insert the dead letters,
//! upsert the hourly counts, COMMIT, asynchronously ([`sink::durability`](super::durability)
//! confirms it). Nothing here retries: [`sink::worker`](super::worker)
//! decides that, through [`db::classify`](crate::db::classify).
//!
//! Every statement is prepared once per connection (deadpool's statement cache): a statement
//! given as text costs a round trip (Parse, Describe) before each execution.

use std::collections::BTreeMap;

use bytes::Bytes;
use deadpool_postgres::{Pool, Transaction};
use futures_util::SinkExt;

use crate::copy;
use crate::db::{Class, DbError};
use crate::event::Reject;
use crate::pipeline::batch::DEAD_LETTER_RAW_LIMIT;
use crate::pipeline::batch::Unit;
use crate::pipeline::offsets::Fence;
use crate::sink::dead_letter_topic::{self, DeadLetterTopic};
use crate::sink::sql;

/// Why an attempt did not commit.
pub enum Failure {
    /// These units' partitions have moved on in consumer_offsets.
    Fenced(Vec<usize>),
    Db(DbError),
    /// The copies for `--dead-letter-topic` were not delivered: the batch was not committed.
    DeadLetterTopic(rdkafka::error::KafkaError),
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Self {
        Failure::Db(e)
    }
}

/// A row PostgreSQL refused: unit index, row index, PostgreSQL's message.
pub type Rejected = Vec<(usize, usize, String)>;

/// Persists `units` in one transaction; `isolate` COPYs under savepoints, halving the ranges
/// PostgreSQL refuses until the refused rows stand alone (returned with its message).
/// With `copies`, each dead letter is produced there, and delivered, before COMMIT.
pub async fn attempt(
    pool: &Pool,
    group: &str,
    units: &[Unit],
    isolate: bool,
    copies: Option<&DeadLetterTopic>,
) -> Result<Rejected, Failure> {
    let mut client = pool.get().await.map_err(DbError::pool("persisting a batch"))?;
    let mut tx = client.transaction().await.map_err(DbError::pg("beginning a transaction"))?;
    // Durable once confirmed by sink::durability, not at COMMIT; but a partition's first
    // batch at once: lost, the partition would start from Kafka's committed offset, past it.
    if units.iter().all(|u| u.fence != Fence::Absent) {
        tx.batch_execute(sql::ASYNCHRONOUS_COMMIT).await.map_err(DbError::pg("beginning a transaction"))?;
    }
    let lost = fence(&tx, group, units).await?;
    if !lost.is_empty() {
        tx.rollback().await.map_err(DbError::pg("rolling back a fenced batch"))?;
        return Err(Failure::Fenced(lost));
    }
    let rejected = if isolate {
        copy_isolating(&mut tx, units).await?
    } else {
        // A batch may hold no row: partitions moved past transaction markers only.
        if units.iter().any(|u| u.row_count() > 0) {
            copy_rows(&tx, units.iter().map(|u| u.rows(0, u.row_count()))).await?;
        }
        Vec::new()
    };
    dead_letters(&tx, units, &rejected).await?;
    counts(&tx, units, &rejected).await?;
    if let Some(topic) = copies {
        copy_dead_letters(topic, units, &rejected).await.map_err(Failure::DeadLetterTopic)?;
    }
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
        let expected: Vec<i64> =
            upd.iter().map(|&i| if let Fence::At(n) = units[i].fence { n } else { unreachable!() }).collect();
        let statement = tx.prepare_cached(sql::MOVE_OFFSETS).await.map_err(DbError::pg("moving consumer offsets"))?;
        let rows = tx
            .query(&statement, &[&group, &topics(&upd), &partitions(&upd), &expected, &nexts(&upd)])
            .await
            .map_err(DbError::pg("moving consumer offsets"))?;
        ok.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
    }
    if !ins.is_empty() {
        let statement = tx.prepare_cached(sql::INSERT_OFFSETS).await.map_err(DbError::pg("recording new consumer offsets"))?;
        let rows = tx
            .query(&statement, &[&group, &topics(&ins), &partitions(&ins), &nexts(&ins)])
            .await
            .map_err(DbError::pg("recording new consumer offsets"))?;
        ok.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
    }
    Ok((0..units.len()).filter(|&i| !ok.iter().any(|(t, p)| *p == units[i].partition && **t == *units[i].topic)).collect())
}

/// The most COPY data handed to tokio-postgres at once: what each pooled connection's write
/// buffer may grow to, beside `--buffer-capacity-bytes`.
const COPY_SLICE_BYTES: usize = 1 << 20;

async fn copy_rows(tx: &Transaction<'_>, chunks: impl Iterator<Item = Bytes>) -> Result<u64, DbError> {
    let statement = tx.prepare_cached(copy::COPY_EVENTS).await.map_err(DbError::pg("starting COPY"))?;
    let sink = tx.copy_in(&statement).await.map_err(DbError::pg("starting COPY"))?;
    futures_util::pin_mut!(sink);
    sink.feed(Bytes::from_static(copy::HEADER)).await.map_err(DbError::pg("COPY"))?;
    for chunk in chunks {
        // In slices (zero-copy): tokio-postgres copies each item into its connection's write
        // buffer, which keeps the largest size it ever held, on every pooled connection.
        for at in (0..chunk.len()).step_by(COPY_SLICE_BYTES) {
            sink.feed(chunk.slice(at..chunk.len().min(at + COPY_SLICE_BYTES))).await.map_err(DbError::pg("COPY"))?;
        }
    }
    sink.feed(Bytes::from_static(copy::TRAILER)).await.map_err(DbError::pg("COPY"))?;
    sink.as_mut().finish().await.map_err(DbError::pg("COPY"))
}

/// COPY under savepoints, halving the ranges that PostgreSQL refuses until the refused rows
/// stand alone; those are returned with PostgreSQL's message, the rest is in the transaction.
async fn copy_isolating(tx: &mut Transaction<'_>, units: &[Unit]) -> Result<Rejected, DbError> {
    let mut rejected = Vec::new();
    let mut todo: Vec<(usize, usize, usize)> =
        units.iter().enumerate().filter(|(_, u)| u.row_count() > 0).map(|(i, u)| (i, 0, u.row_count())).collect();
    while let Some((u, lo, hi)) = todo.pop() {
        let sp = tx.savepoint("isolate").await.map_err(DbError::pg("SAVEPOINT"))?;
        match copy_rows(&sp, std::iter::once(units[u].rows(lo, hi))).await {
            Ok(_) => sp.commit().await.map_err(DbError::pg("RELEASE SAVEPOINT"))?,
            Err(e) if e.class() == Class::Data => {
                sp.rollback().await.map_err(DbError::pg("ROLLBACK TO SAVEPOINT"))?;
                if hi - lo == 1 {
                    let msg = match &e {
                        DbError::Postgres { error, .. } => error.as_db_error().map_or_else(
                            || error.to_string(),
                            |d| {
                                format!(
                                    "PostgreSQL refused the row: {}{}",
                                    d.message(),
                                    d.detail().map(|x| format!(" ({x})")).unwrap_or_default()
                                )
                            },
                        ),
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
    let (mut topics, mut partitions, mut offsets, mut raws, mut reasons, mut details) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut sizes: Vec<i32> = Vec::with_capacity(n);
    let mut keys: Vec<Option<&[u8]>> = Vec::with_capacity(n);
    let mut timestamps: Vec<Option<i64>> = Vec::with_capacity(n);
    for u in units {
        for d in &u.dead {
            topics.push(&*u.topic);
            partitions.push(u.partition);
            offsets.push(d.offset);
            raws.push(d.raw.as_ref().map(|r| r[..r.len().min(DEAD_LETTER_RAW_LIMIT)].to_vec()));
            reasons.push(d.reason.label());
            details.push(no_nul(&d.detail));
            sizes.push(d.size);
            keys.push(d.key.as_deref().map(|k| &k[..k.len().min(DEAD_LETTER_RAW_LIMIT)]));
            timestamps.push(d.kafka_timestamp);
        }
    }
    for (u, row, msg) in rejected {
        let unit = &units[*u];
        let bytes = unit.rows(*row, row + 1);
        let decoded = copy::decode_row(&bytes);
        topics.push(&*unit.topic);
        partitions.push(unit.partition);
        offsets.push(decoded.as_ref().map_or(-1, |d| d.offset));
        // The message is gone by now: keep a message that makes the same row (the key is lost).
        let raw = decoded.map(|d| d.to_event_json());
        sizes.push(raw.as_ref().map_or(0, |r| r.len() as i32));
        raws.push(raw);
        reasons.push(Reject::PostgresRejected.label());
        details.push(no_nul(msg));
        keys.push(None);
        timestamps.push(Some(unit.row_meta[*row].appended_at));
    }
    let statement = tx.prepare_cached(sql::INSERT_DEAD_LETTERS).await.map_err(DbError::pg("inserting dead letters"))?;
    tx.execute(&statement, &[&topics, &partitions, &offsets, &raws, &reasons, &details, &sizes, &keys, &timestamps])
        .await
        .map_err(DbError::pg("inserting dead letters"))?;
    Ok(())
}

/// The batch's dead letters, produced to `--dead-letter-topic`.
async fn copy_dead_letters(
    topic: &DeadLetterTopic,
    units: &[Unit],
    rejected: &Rejected,
) -> Result<usize, rdkafka::error::KafkaError> {
    let refused: Vec<(usize, Vec<u8>, i64)> = rejected
        .iter()
        .map(|(u, row, _)| {
            let unit = &units[*u];
            let bytes = unit.rows(*row, row + 1);
            let decoded = copy::decode_row(&bytes);
            (*u, decoded.as_ref().map(|d| d.to_event_json()).unwrap_or_default(), decoded.map_or(-1, |d| d.offset))
        })
        .collect();
    let found = units.iter().flat_map(|u| {
        u.dead.iter().map(move |d| dead_letter_topic::Copy {
            topic: &u.topic,
            partition: u.partition,
            offset: d.offset,
            value: d.raw.as_deref(),
            key: d.key.as_deref(),
            reason: d.reason.label(),
            detail: &d.detail,
            timestamp_micros: d.kafka_timestamp,
        })
    });
    let refused = rejected.iter().zip(&refused).map(|((u, row, msg), (_, value, offset))| dead_letter_topic::Copy {
        topic: &units[*u].topic,
        partition: units[*u].partition,
        offset: *offset,
        value: Some(value),
        key: None,
        reason: Reject::PostgresRejected.label(),
        detail: msg,
        timestamp_micros: Some(units[*u].row_meta[*row].appended_at),
    });
    let copies: Vec<dead_letter_topic::Copy<'_>> = found.chain(refused).collect();
    topic.send_all(&copies).await
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
    let statement = tx.prepare_cached(sql::UPSERT_COUNTS).await.map_err(DbError::pg("upserting event counts"))?;
    tx.execute(&statement, &[&services, &types, &hours, &ns]).await.map_err(DbError::pg("upserting event counts"))?;
    Ok(())
}
