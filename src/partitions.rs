//! Time partitions of `events` and `dead_letters` (range-partitioned by `received_at` since
//! migration V8): created ahead of need, and dropped whole once older than `--retention`.
//!
//! A pass ([`Maintenance::pass`]), per table: finish a detach that a crash interrupted, drop a
//! table a crash left detached for retention, create what is missing of the partitions covering
//! now through one interval ahead ([`plan`]), detach and drop those whose range ended more than
//! the retention ago, then refresh the metrics. [`run`] makes a pass every
//! min(interval / 4, 60 s), and at once when a flush found no partition for its rows. Instances
//! sharing a database take turns under a session advisory lock.
//!
//! Locks, against the COPYs of a drain (PostgreSQL's ALTER TABLE page): a partition is created as
//! a table of its own and attached in one transaction; ATTACH PARTITION takes SHARE UPDATE
//! EXCLUSIVE on the parent, which the ROW EXCLUSIVE of a COPY does not conflict with, and checks
//! the empty new table. A retention drop is DETACH PARTITION … CONCURRENTLY (the same lock level;
//! it waits for the transactions that may still see the partition, without blocking new ones),
//! then DROP TABLE of a table nothing reads any more. There is no default partition: it would
//! forbid DETACH CONCURRENTLY, and every ATTACH would scan it under an ACCESS EXCLUSIVE lock.
//! A row for which no partition exists is not lost: its batch is retried ([`crate::db::classify`])
//! and counted in `table_partition_missing_total`, and a pass runs at once.
//!
//! Every time here is Unix microseconds of the database's clock, as `received_at` is.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;

use crate::config::PartitionArgs;
use crate::db::DbError;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// The partitioned tables (migration V8).
pub use crate::db::PARTITIONED_TABLES as TABLES;

/// Arbitrary, fixed: one instance at a time maintains a database's partitions.
const MAINTENANCE_LOCK: i64 = 0x6175_726f_7270; // "aurorp"

/// How long creating a partition may wait for its lock on the parent before the pass gives up
/// (and the next pass tries again): it waits only behind DDL and VACUUM of the parent, never
/// behind a COPY.
const LOCK_TIMEOUT: &str = "2s";

/// How long a retention drop's detach may hold up the parent (see [`Maintenance::pass`]'s drop).
const DROP_LOCK_TIMEOUT: &str = "5s";

/// How soon after a failed pass a flush that found no partition may bring the next one (sooner
/// than the period).
const WAKE_AFTER_FAILURE: Duration = Duration::from_secs(10);

const SECOND: i64 = 1_000_000;

/// A partition's range of `received_at`, `[start, end)`, in Unix microseconds; `None` is
/// MINVALUE (start) or MAXVALUE (end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl Range {
    fn contains(&self, t: i64) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t < e)
    }
}

/// An attached partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub range: Range,
    /// Heap, indexes and TOAST, in bytes.
    pub bytes: i64,
}

/// Partition length and retention, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub interval: i64,
    pub retention: Option<i64>,
}

impl Settings {
    pub fn of(args: &PartitionArgs) -> Settings {
        Settings { interval: args.partition_interval.as_micros() as i64, retention: args.retention.map(|r| r.as_micros() as i64) }
    }

    /// Time between passes: a quarter of the interval, at most a minute.
    pub fn period(&self) -> Duration {
        Duration::from_micros((self.interval / 4).clamp(1, 60 * SECOND) as u64)
    }
}

/// What a pass changes in one table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ranges `[start, end)` to create.
    pub create: Vec<(i64, i64)>,
    /// Partitions to detach and drop.
    pub drop: Vec<String>,
}

/// The partitions to create and drop at `now`. Wanted: the intervals (aligned on multiples of
/// the interval since the Unix epoch) from the one holding `now` through the one holding
/// `now + interval`, so that the next partition always exists a whole interval before it is
/// needed. Only what no attached partition covers, and only what ends after `now`, is created,
/// so partitions of another length (an older `--partition-interval`, the old table attached by
/// V8, V8's first partition through tomorrow) are respected. Dropped:
/// partitions whose range ended at or before `now - retention`; never one holding `now`.
pub fn plan(attached: &[Partition], now: i64, settings: Settings) -> Plan {
    let iv = settings.interval;
    let mut create = Vec::new();
    let mut cell = now.div_euclid(iv) * iv;
    let last = (now + iv).div_euclid(iv) * iv;
    while cell <= last {
        uncovered(cell, cell + iv, attached, &mut create);
        cell += iv;
    }
    // A gap wholly in the past (before a partition made by V8 or by another interval) would
    // take no row, and retention would drop it again.
    create.retain(|&(_, end)| end > now);
    let drop = match settings.retention {
        None => Vec::new(),
        Some(r) => attached.iter().filter(|p| p.range.end.is_some_and(|e| e <= now - r)).map(|p| p.name.clone()).collect(),
    };
    Plan { create, drop }
}

/// The parts of `[a, b)` that no partition covers, in order.
fn uncovered(a: i64, b: i64, attached: &[Partition], out: &mut Vec<(i64, i64)>) {
    let mut covered: Vec<(i64, i64)> = attached
        .iter()
        .map(|p| (p.range.start.unwrap_or(i64::MIN).max(a), p.range.end.unwrap_or(i64::MAX).min(b)))
        .filter(|(s, e)| s < e)
        .collect();
    covered.sort_unstable();
    let mut at = a;
    for (s, e) in covered {
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
    }
    if at < b {
        out.push((at, b));
    }
}

/// How far past `now` the partitions reach without a gap, in microseconds; 0 if none holds `now`.
pub fn ahead(attached: &[Partition], now: i64) -> i64 {
    let mut t = now;
    while let Some(p) = attached.iter().find(|p| p.range.contains(t)) {
        match p.range.end {
            None => return i64::MAX,
            Some(e) => t = e,
        }
    }
    t - now
}

/// The start of the oldest partition's range (its end if it has none: the old table attached by
/// V8 starts at MINVALUE); `None` without partitions.
pub fn oldest(attached: &[Partition]) -> Option<i64> {
    attached.iter().filter_map(|p| p.range.start.or(p.range.end)).min()
}

/// `<table>_p<start, UTC>`, e.g. `events_p20261202t000000`; sub-second starts (a range cut by a
/// partition that ends mid-second) add the microseconds.
pub fn partition_name(table: &str, start: i64) -> String {
    let t = timestamp(start);
    let micros = start.rem_euclid(SECOND);
    if micros == 0 {
        format!("{table}_p{}", t.format("%Y%m%dt%H%M%S"))
    } else {
        format!("{table}_p{}_{micros:06}", t.format("%Y%m%dt%H%M%S"))
    }
}

fn timestamp(micros: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// A literal PostgreSQL reads as that instant, whatever the session's TimeZone.
fn literal(micros: i64) -> String {
    format!("'{}'", timestamp(micros).format("%Y-%m-%d %H:%M:%S%.6f+00"))
}

/// The comment that marks the tables aurore made partitions of `table`.
fn partition_comment(table: &str) -> String {
    format!("aurore: partition of {table}")
}

/// The comment set on a partition before it is detached for retention: a table that bears it and
/// is no longer attached is dropped. A table an operator detached keeps the other comment and is
/// left alone.
fn dropping_comment(table: &str) -> String {
    format!("aurore: retention drop of {table}")
}

/// What a pass did to one table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Done {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
    /// Detaches a crash interrupted, finished.
    pub finalized: Vec<String>,
}

/// Partition maintenance of one database.
#[derive(Clone)]
pub struct Maintenance {
    pub pool: Pool,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Notified by a flush that found no partition: a pass runs at once.
    pub wake: Arc<Notify>,
}

/// How a pass takes its kind's lock when another process holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Not at all: the pass is left to the holder (the running service, whose next pass comes
    /// soon anyway).
    Try,
    /// Waits for it, up to 60 s: `aurore migrate`, whose caller wants the
    /// partitions made when it returns, whatever the holder (a role that may not create them,
    /// say) achieves.
    Wait,
}

/// How long `aurore migrate` waits for the maintenance lock (a pass holds it for seconds).
const MIGRATE_LOCK_WAIT: &str = "60s";

/// The two kinds of pass. They run as two tasks, each under its own advisory lock, so that
/// creating partitions ahead never waits behind a retention drop (DETACH … CONCURRENTLY waits for
/// every transaction that may still see the partition: a report running for hours included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Create what is missing of the partitions from now through one interval ahead.
    Create,
    /// Finish interrupted detaches, drop what a crash left detached, drop what retention expired.
    Drop,
}

impl Pass {
    fn lock(self) -> i64 {
        match self {
            Pass::Create => MAINTENANCE_LOCK,
            Pass::Drop => MAINTENANCE_LOCK + 1,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Pass::Create => "create",
            Pass::Drop => "drop",
        }
    }
}

impl Maintenance {
    pub fn new(pool: Pool, args: &PartitionArgs, metrics: Arc<Metrics>) -> Maintenance {
        let settings = Settings::of(args);
        metrics.table_partition_interval_seconds.set(args.partition_interval.as_secs_f64());
        metrics.table_partition_retention_seconds.set(args.retention.map_or(0.0, |r| r.as_secs_f64()));
        Maintenance { pool, settings, metrics, wake: Arc::new(Notify::new()) }
    }

    /// One pass of `kind` over both tables (see the module's overview), then the metrics.
    /// `Ok(None)` if another instance held this kind's lock and `lock` is [`Lock::Try`]; with
    /// [`Lock::Wait`], an error if it held it longer than that waits (the metrics are refreshed all the
    /// same, also after a failed pass, so that they tell how far ahead the partitions reach).
    pub async fn pass(&self, kind: Pass, lock: Lock) -> Result<Option<Vec<Done>>, DbError> {
        let started = std::time::Instant::now();
        let client = self.pool.get().await.map_err(DbError::pool("maintaining partitions"))?;
        let locked: bool = match lock {
            Lock::Try => client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&kind.lock()])
                .await
                .map_err(DbError::pg("taking the partition maintenance lock"))?
                .get(0),
            Lock::Wait => {
                // A session lock, kept after this transaction, which only bounds the wait.
                let waited = client
                    .batch_execute(&format!(
                        "BEGIN; SET LOCAL lock_timeout = '{MIGRATE_LOCK_WAIT}'; SET LOCAL statement_timeout = 0;
                         SELECT pg_advisory_lock({}); COMMIT",
                        kind.lock()
                    ))
                    .await;
                if let Err(e) = waited {
                    let _ = client.batch_execute("ROLLBACK").await;
                    let held = e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE);
                    return Err(DbError::pg(if held {
                        "waiting for the partition maintenance lock, held by another aurore for over 60 s"
                    } else {
                        "waiting for the partition maintenance lock"
                    })(e));
                }
                true
            }
        };
        let result = match locked {
            false => Ok(None),
            true => {
                let mut done = Vec::new();
                let mut result = Ok(());
                for table in TABLES {
                    let d = match kind {
                        Pass::Create => self.create(&client, table).await,
                        Pass::Drop => self.drop(&client, table).await,
                    };
                    match d {
                        Ok(d) => done.push(d),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                // The lock is the session's: released even if the pass failed (a broken
                // connection released it already).
                let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&kind.lock()]).await;
                result.map(|()| Some(done))
            }
        };
        for table in TABLES {
            let now = db_now(&client).await?;
            let attached = list(&client, table).await?;
            self.observe(table, &attached, now);
        }
        self.metrics.table_partition_maintenance_seconds.observe(started.elapsed().as_secs_f64());
        result
    }

    /// A pass; a failure is logged and counted (the next pass tries again). Whether it succeeded.
    pub async fn pass_or_warn(&self, kind: Pass) -> bool {
        let result = self.pass(kind, Lock::Try).await;
        if let Err(e) = &result {
            self.metrics.table_partition_maintenance_errors_total.inc();
            tracing::warn!(pass = kind.label(), error = %e, hint = hint(e), retry_in_ms = self.settings.period().as_millis() as u64,
                "partition maintenance failed; tried again at the next pass (for creation, 10 s on if a flush finds no partition meanwhile)");
        }
        result.is_ok()
    }

    async fn create(&self, client: &tokio_postgres::Client, table: &'static str) -> Result<Done, DbError> {
        let mut done = Done::default();
        let now = db_now(client).await?;
        let attached = list(client, table).await?;
        for (start, end) in plan(&attached, now, self.settings).create {
            let name = free_name(client, table, partition_name(table, start)).await?;
            let sql = format!(
                "BEGIN;
                 SET LOCAL lock_timeout = '{LOCK_TIMEOUT}';
                 CREATE TABLE \"{name}\" (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION);
                 COMMENT ON TABLE \"{name}\" IS '{}';
                 ALTER TABLE {table} ATTACH PARTITION \"{name}\" FOR VALUES FROM ({}) TO ({});
                 COMMIT;",
                partition_comment(table),
                literal(start),
                literal(end)
            );
            let created = client.batch_execute(&sql).await;
            if created.is_err() {
                let _ = client.batch_execute("ROLLBACK").await;
            }
            created.map_err(DbError::pg("creating a partition"))?;
            self.metrics.table_partitions_created_total.with_label_values(&[table]).inc();
            tracing::info!(table, partition = %name, from = %timestamp(start), to = %timestamp(end), "partition created");
            done.created.push(name);
        }
        Ok(done)
    }

    async fn drop(&self, client: &tokio_postgres::Client, table: &'static str) -> Result<Done, DbError> {
        // FINALIZE and DETACH … CONCURRENTLY hold SHARE UPDATE EXCLUSIVE on the parent while they
        // wait for older snapshots and for the partition's lockers: bounded, so that creating
        // partitions (which needs that lock) is held up for seconds at most. A detach that times
        // out stays pending, harmless (new queries no longer see the partition), and is finished
        // by a later pass.
        client
            .batch_execute(&format!("SET lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
            .await
            .map_err(DbError::pg("setting lock_timeout"))?;
        let done = self.drop_inner(client, table).await;
        let _ = client.batch_execute("RESET lock_timeout").await;
        done
    }

    async fn drop_inner(&self, client: &tokio_postgres::Client, table: &'static str) -> Result<Done, DbError> {
        let mut done = Done::default();
        for name in pending_detaches(client, table).await? {
            client
                .batch_execute(&format!("ALTER TABLE {table} DETACH PARTITION \"{name}\" FINALIZE"))
                .await
                .map_err(DbError::pg("finishing an interrupted partition detach"))?;
            tracing::info!(table, partition = %name, "finished a partition detach that was interrupted");
            done.finalized.push(name);
        }
        for name in detached_for_retention(client, table).await? {
            drop_table(client, table, &name).await?;
            self.dropped(table, &name, &mut done);
        }
        let now = db_now(client).await?;
        let attached = list(client, table).await?;
        for name in plan(&attached, now, self.settings).drop {
            client
                .batch_execute(&format!("COMMENT ON TABLE \"{name}\" IS '{}'", dropping_comment(table)))
                .await
                .map_err(DbError::pg("marking a partition for its retention drop"))?;
            // Not in a transaction block: CONCURRENTLY commits twice.
            client
                .batch_execute(&format!("ALTER TABLE {table} DETACH PARTITION \"{name}\" CONCURRENTLY"))
                .await
                .map_err(DbError::pg("detaching a partition past retention"))?;
            drop_table(client, table, &name).await?;
            self.dropped(table, &name, &mut done);
        }
        Ok(done)
    }

    fn dropped(&self, table: &'static str, name: &str, done: &mut Done) {
        self.metrics.table_partitions_dropped_total.with_label_values(&[table]).inc();
        tracing::info!(table, partition = %name, "partition dropped (--retention)");
        done.dropped.push(name.to_owned());
    }

    fn observe(&self, table: &str, attached: &[Partition], now: i64) {
        let m = &self.metrics;
        m.table_partitions.with_label_values(&[table]).set(attached.len() as i64);
        m.table_partitions_bytes.with_label_values(&[table]).set(attached.iter().map(|p| p.bytes).sum());
        m.table_partitions_ahead_seconds.with_label_values(&[table]).set(ahead(attached, now) as f64 / SECOND as f64);
        if let Some(t) = oldest(attached) {
            m.table_partition_oldest_timestamp_seconds.with_label_values(&[table]).set(t as f64 / SECOND as f64);
        }
    }
}

/// Passes of `kind` until `stop`, every [`Settings::period`] and (creation) whenever `wake` is
/// notified; the first after one period for creation (app makes one before consuming), at once
/// for drops. Retention drops are made only when `--retention` is set; interrupted detaches are
/// finished regardless.
pub async fn run(m: Maintenance, kind: Pass, stop: Shutdown) {
    let period = m.settings.period();
    let mut first = kind == Pass::Drop;
    let mut failed_at: Option<tokio::time::Instant> = None;
    loop {
        if !first {
            // After a failed pass (a role that may not create partitions, say), the flushes that
            // keep finding none would otherwise bring a failing pass, and its warning, each.
            let woken = async {
                if let Some(t) = failed_at {
                    tokio::time::sleep_until(t + WAKE_AFTER_FAILURE).await;
                }
                m.wake.notified().await
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
                _ = woken, if kind == Pass::Create => {}
            }
        }
        first = false;
        let ok = m.pass_or_warn(kind).await;
        failed_at = (!ok).then(tokio::time::Instant::now);
    }
}

async fn db_now(client: &tokio_postgres::Client) -> Result<i64, DbError> {
    Ok(client
        .query_one("SELECT (extract(epoch FROM now()) * 1000000)::int8", &[])
        .await
        .map_err(DbError::pg("reading the database's clock"))?
        .get(0))
}

/// The attached partitions of `table` (not those being detached), with their ranges: read back
/// from PostgreSQL's own text of the bound, in a transaction set to DateStyle ISO and TimeZone
/// UTC (under other settings the text carries zone abbreviations that read back as other zones:
/// IST is Israel's to the parser, India's to the printer).
pub async fn list(client: &tokio_postgres::Client, table: &str) -> Result<Vec<Partition>, DbError> {
    client
        .batch_execute("BEGIN READ ONLY; SET LOCAL DateStyle = ISO; SET LOCAL TimeZone = 'UTC'")
        .await
        .map_err(DbError::pg("listing partitions"))?;
    let rows = client
        .query(
            "SELECT c.relname::text,
                    (extract(epoch FROM substring(b.bound FROM 'FROM \\(''([^'']+)''\\)')::timestamptz) * 1000000)::int8,
                    (extract(epoch FROM substring(b.bound FROM ' TO \\(''([^'']+)''\\)')::timestamptz) * 1000000)::int8,
                    pg_total_relation_size(c.oid)
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,
                  LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
             WHERE i.inhparent = $1::text::regclass AND NOT i.inhdetachpending",
            &[&table],
        )
        .await;
    let _ = client.batch_execute("COMMIT").await;
    let rows = rows.map_err(DbError::pg("listing partitions"))?;
    Ok(rows
        .iter()
        .map(|r| Partition { name: r.get(0), range: Range { start: r.get(1), end: r.get(2) }, bytes: r.get(3) })
        .collect())
}

/// `name`, or, when a table that is no partition has it (left by hand, or by a restore), the
/// first free of `name_2` … `name_99`: a partition's name is a label (partitions are found
/// through `pg_inherits`), and the table in the way is left alone, with a warning.
async fn free_name(client: &tokio_postgres::Client, table: &str, name: String) -> Result<String, DbError> {
    for k in 1..100 {
        let candidate = if k == 1 { name.clone() } else { format!("{name}_{k}") };
        let free: bool = client
            .query_one("SELECT to_regclass(quote_ident($1)) IS NULL", &[&candidate])
            .await
            .map_err(DbError::pg("looking for a free partition name"))?
            .get(0);
        if free {
            if k > 1 {
                tracing::warn!(table, taken = %name, partition = %candidate,
                    "a table that is no partition has the name of the partition to create (left over?): the partition is named otherwise, and that table is left alone");
            }
            return Ok(candidate);
        }
    }
    // The CREATE fails with DUPLICATE_TABLE, which the pass's hint explains.
    Ok(name)
}

/// What an operator can do about a failed maintenance pass, told by its SQLSTATE.
fn hint(e: &DbError) -> &'static str {
    hint_for(e.sqlstate())
}

fn hint_for(code: Option<&tokio_postgres::error::SqlState>) -> &'static str {
    use tokio_postgres::error::SqlState;
    match code {
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
            "aurore's role must own events and dead_letters and may CREATE in their schema: run `aurore migrate` as the owner once per interval, or give aurore the owner's role"
        }
        Some(c) if *c == SqlState::DUPLICATE_TABLE => {
            "a table that is no partition has the name of the partition to create: rename or drop it"
        }
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => "a lock wait timed out: a long transaction holds the table",
        Some(c) if *c == SqlState::WRONG_OBJECT_TYPE => {
            "the table is not partitioned: the database is not migrated to V8 (run without --no-migrate, or `aurore migrate`)"
        }
        _ => "see the error",
    }
}

/// Drops a partition of `table` detached for retention. The dead letters it held leave
/// `dead_letter_counts.stored` (the `dead_letters_stored` metric) in the same transaction, so a
/// crash between the two cannot make them disagree.
async fn drop_table(client: &tokio_postgres::Client, table: &str, name: &str) -> Result<(), DbError> {
    let sql = if table == "dead_letters" {
        format!(
            "BEGIN;
             UPDATE dead_letter_counts c SET stored = c.stored - d.n
               FROM (SELECT topic, reason, count(*) AS n FROM \"{name}\" GROUP BY topic, reason) d
              WHERE c.topic = d.topic AND c.reason = d.reason;
             DROP TABLE \"{name}\";
             COMMIT"
        )
    } else {
        format!("DROP TABLE \"{name}\"")
    };
    let dropped = client.batch_execute(&sql).await;
    if dropped.is_err() {
        // An error inside the explicit transaction leaves it open and aborted.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    dropped.map_err(DbError::pg("dropping a partition past retention"))
}

/// Partitions of `table` whose DETACH … CONCURRENTLY did not finish (PostgreSQL 14+).
async fn pending_detaches(client: &tokio_postgres::Client, table: &str) -> Result<Vec<String>, DbError> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = $1::text::regclass AND i.inhdetachpending",
            &[&table],
        )
        .await
        .map_err(DbError::pg("listing interrupted partition detaches"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Tables of the current schema that were being detached for retention when a crash came.
async fn detached_for_retention(client: &tokio_postgres::Client, table: &str) -> Result<Vec<String>, DbError> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_class c
             WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relnamespace = current_schema()::regnamespace
               AND obj_description(c.oid, 'pg_class') = $1",
            &[&dropping_comment(table)],
        )
        .await
        .map_err(DbError::pg("listing partitions detached for retention"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[cfg(test)]
#[path = "partitions_tests.rs"]
mod tests;
