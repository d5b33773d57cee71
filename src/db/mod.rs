//! PostgreSQL: the pool (TLS through rustls), migrations, the queries outside the hot path, and
//! [`classify`], the one function that decides what is retried.
//!
//! Errors are told in the server's words ([`describe`], [`describe_pool`]): tokio-postgres' own
//! text is "db error", deadpool's "Error occurred while creating a new object". A connection that
//! ends is logged here, with the database it was to ([`DatabaseUrl`]'s `user@host:port/dbname`);
//! deadpool's own warnings about it are filtered out (`config::log`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Connect, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;

use crate::config::DatabaseUrl;

mod tls;
pub use tls::{Tls, TlsSetupError, describe_tls};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary, fixed: serialises migrations of instances that start together.
const MIGRATION_LOCK: i64 = 0x6175_726f_7265; // "aurore"

/// How a failure is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Connection lost, server shutting down, out of resources, serialisation failure, timeout:
    /// retry the same work with backoff, under the circuit breaker.
    Transient,
    /// The rows are at fault (SQLSTATE classes 22, 23): isolate them, dead-letter, go on.
    Data,
    /// Permissions, authentication, missing schema, bugs: retrying cannot help; stop.
    Fatal,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    // Not `#[source]`: the description already tells the cause in the server's words, and the
    // chain would repeat it in tokio-postgres' and deadpool's ("db error", "Error occurred while
    // creating a new object").
    #[error("{context}: {}", describe(error))]
    Postgres { context: &'static str, error: tokio_postgres::Error },
    #[error("{context}: {}", describe_pool(error))]
    Pool { context: &'static str, error: PoolError },
    // Not `#[from]` (a source): described once, see describe_migration.
    #[error("migrations failed: {}", describe_migration(.0))]
    Migration(refinery::Error),
    #[error("could not build the connection pool: {0}")]
    Build(String),
    #[error("{0}")]
    Refused(String),
    #[error("{context}: no answer within {} s; tried again on a new connection", after.as_secs())]
    TimedOut { context: &'static str, after: Duration },
}

impl From<refinery::Error> for DbError {
    fn from(e: refinery::Error) -> Self {
        DbError::Migration(e)
    }
}

impl DbError {
    pub fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DbError {
        move |error| DbError::Postgres { context, error }
    }

    pub fn pool(context: &'static str) -> impl FnOnce(PoolError) -> DbError {
        move |error| DbError::Pool { context, error }
    }

    /// See [`is_missing_partition`].
    pub fn is_missing_partition(&self) -> bool {
        match self {
            DbError::Postgres { error, .. } | DbError::Pool { error: PoolError::Backend(error), .. } => {
                is_missing_partition(error)
            }
            _ => false,
        }
    }

    /// The server's SQLSTATE, when the server answered.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        match self {
            DbError::Postgres { error, .. } | DbError::Pool { error: PoolError::Backend(error), .. } => error.code(),
            _ => None,
        }
    }

    pub fn class(&self) -> Class {
        match self {
            DbError::Postgres { error, .. } => classify(error),
            DbError::Pool { error: PoolError::Backend(e), .. } => classify(e),
            DbError::Pool { error: PoolError::Timeout(_), .. } | DbError::TimedOut { .. } => Class::Transient,
            DbError::Pool { .. } => Class::Fatal,
            DbError::Migration(_) | DbError::Build(_) | DbError::Refused(_) => Class::Fatal,
        }
    }
}

/// What failed in a migration, then PostgreSQL's words once (refinery's Display repeats its
/// chain: "`error applying migration V8…`, `db error`: `error applying migration V8…`, …").
fn describe_migration(e: &refinery::Error) -> String {
    if let refinery::error::Kind::Connection(what, source) = e.kind() {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
        while let Some(c) = cause {
            if let Some(pg) = c.downcast_ref::<tokio_postgres::Error>() {
                return format!("{what}: {}", describe(pg));
            }
            cause = c.source();
        }
    }
    e.to_string()
}

/// PostgreSQL's own words (tokio-postgres' Display says only "db error"), with the SQLSTATE; a
/// TLS failure as [`describe_tls`] tells it; an authentication failure with where the password
/// came from.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(tls) = describe_tls(e) {
        return tls;
    }
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(": ");
                s.push_str(detail);
            }
            if *db.code() == SqlState::INVALID_PASSWORD {
                s.push_str(" (the password comes from --database-url, else PGPASSWORD, else the password file)");
            } else if *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION && db.message().contains("pg_hba.conf") {
                s.push_str(
                    " (the server's pg_hba.conf admits no such connection: the user, database or sslmode may be what differs)",
                );
            }
            s
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// A pool error in words an operator can act on; a failed connection attempt in the server's
/// words ([`describe`]).
pub fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) => format!("cannot connect: {}", describe(e)),
        PoolError::Timeout(TimeoutType::Create) => "connecting timed out (--db-connect-timeout)".into(),
        PoolError::Timeout(TimeoutType::Wait) => {
            "every pooled connection stayed busy past --db-connect-timeout (--db-pool-size may be too small)".into()
        }
        PoolError::Timeout(TimeoutType::Recycle) => "checking a pooled connection timed out".into(),
        PoolError::Closed => "the connection pool is closed (aurore is stopping)".into(),
        other => other.to_string(),
    }
}

/// No partition of `events` or `dead_letters` holds a row's `received_at`: SQLSTATE 23514
/// (check_violation) naming one of those tables and no constraint (a CHECK constraint's violation
/// always names it; the message text is translated on servers with another lc_messages). Not the
/// row's fault but partition maintenance's ([`crate::partitions`]), so transient: the batch waits
/// for the partition.
pub fn is_missing_partition(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::CHECK_VIOLATION
            && db.constraint().is_none()
            && matches!(db.table(), Some("events" | "dead_letters"))
    })
}

/// The one place that decides whether a PostgreSQL error is transient, the data's fault, or
/// fatal. Errors without SQLSTATE are I/O: the connection broke, so transient.
pub fn classify(e: &tokio_postgres::Error) -> Class {
    let Some(state) = e.code() else {
        // No SQLSTATE: the connection broke, timed out or was closed (transient), unless the
        // client could not convert a value, which is a bug.
        let msg = e.to_string();
        return if msg.starts_with("error serializing") || msg.starts_with("error deserializing") {
            Class::Fatal
        } else {
            Class::Transient
        };
    };
    if *state == SqlState::LOCK_NOT_AVAILABLE || is_missing_partition(e) {
        return Class::Transient;
    }
    match &state.code()[..2] {
        // connection exception, insufficient resources, operator intervention (admin
        // shutdown, query cancelled), system error, transaction rollback (deadlock, serialisation)
        "08" | "53" | "57" | "58" | "40" => Class::Transient,
        // data exception, integrity constraint violation
        "22" | "23" => Class::Data,
        _ => Class::Fatal,
    }
}

/// The tables range-partitioned by `received_at` (migration V8), which
/// [`partitions`](crate::partitions) maintains and [`metrics`](crate::metrics) labels.
pub const PARTITIONED_TABLES: [&str; 2] = ["events", "dead_letters"];

/// A pool of connections; TLS as the URL's sslmode says ([`Tls`]).
pub fn pool(url: &DatabaseUrl, size: usize, timeout: Duration) -> Result<Pool, DbError> {
    pool_as(url, size, timeout, "aurore")
}

/// [`pool`], its connections named `application_name` in `pg_stat_activity` unless the URL
/// names them.
pub fn pool_as(url: &DatabaseUrl, size: usize, timeout: Duration, application_name: &str) -> Result<Pool, DbError> {
    let mut config = url.config.clone();
    config.connect_timeout(timeout);
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    let tls = Tls::new(&url.tls).map_err(|e| DbError::Refused(format!("{url}: {e}")))?;
    let connect = Connector { tls, database: Arc::from(url.to_string()) };
    let manager = Manager::from_connect(config, connect, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| DbError::Build(e.to_string()))
}

/// Opens connections for the pool, as deadpool's own connector does, but logs a connection's end
/// in the server's words and with the database it was to.
struct Connector {
    tls: Tls,
    /// [`DatabaseUrl`]'s display: never the password.
    database: Arc<str>,
}

type Connected = Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error>;

impl Connect for Connector {
    fn connect(&self, config: &tokio_postgres::Config) -> Pin<Box<dyn Future<Output = Connected> + Send + '_>> {
        let (config, tls, database) = (config.clone(), self.tls.clone(), self.database.clone());
        Box::pin(async move {
            let (client, connection) = tls.connect(&config).await?;
            let task = tokio::spawn(async move {
                // Ok: the pool dropped the client. An error: the server or the network ended it.
                if let Err(e) = connection.await {
                    tracing::warn!(
                        %database,
                        error = %describe(&e),
                        "PostgreSQL connection lost; the pool opens a new one when next needed"
                    );
                }
            });
            Ok((client, task))
        })
    }
}

/// A live process's claim on its `--instance-id`: a session-level advisory lock, held on a
/// connection of its own for as long as the process lives. A process killed with SIGKILL drops
/// it the moment the kernel closes its socket, so a restart under the same id takes it at once;
/// a second live process does not get it. (Kafka cannot tell those two apart: to the group, a
/// dead static member and a live one look the same until the session times out.)
pub struct InstanceLease {
    _client: tokio_postgres::Client,
    connection: JoinHandle<()>,
}

impl Drop for InstanceLease {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Takes the lease of `instance_id` in `group`; `None` if a live process holds it.
pub async fn instance_lease(
    url: &DatabaseUrl,
    timeout: Duration,
    group: &str,
    instance_id: &str,
) -> Result<Option<InstanceLease>, DbError> {
    let mut config = url.config.clone();
    config.connect_timeout(timeout);
    config.application_name("aurore instance lease");
    let (client, connection) = Tls::new(&url.tls)
        .map_err(|e| DbError::Refused(format!("{url}: {e}")))?
        .connect(&config)
        .await
        .map_err(DbError::pg("connecting for the instance lease"))?;
    let connection = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %describe(&e), "the instance lease's connection ended; Kafka's own fencing still applies");
        }
    });
    // A process lost with its node leaves no FIN: the server's keepalives end its session (and
    // release the lease) within about 25 s instead of the kernel's two hours.
    client
        .batch_execute("SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3")
        .await
        .map_err(DbError::pg("setting the instance lease's keepalives"))?;
    let key = format!("aurore instance {group} {instance_id}");
    let taken: bool = client
        .query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&key])
        .await
        .map_err(DbError::pg("taking the instance lease"))?
        .get(0);
    Ok(taken.then_some(InstanceLease { _client: client, connection }))
}

/// Applies pending migrations; several instances may start at once.
pub async fn migrate(pool: &Pool) -> Result<usize, DbError> {
    migrate_through(pool, None).await
}

/// Applies pending migrations up to `version` (all if `None`): the schema an older aurore left,
/// for tests of a migration.
pub async fn migrate_through(pool: &Pool, version: Option<i32>) -> Result<usize, DbError> {
    let mut client = pool.get().await.map_err(DbError::pool("migrating"))?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(DbError::pg("taking the migration lock"))?;
    let mut runner = embedded::migrations::runner();
    if let Some(v) = version {
        runner = runner.set_target(refinery::Target::Version(v));
    }
    let applied = match version {
        Some(v) if v < 8 => run_logged(runner, &mut client).await,
        // V8's preflight looks at the tables as V7 leaves them: an older database is brought
        // there first (V7 gives dead_letters three columns the preflight expects).
        _ => {
            let through_v7 = embedded::migrations::runner().set_target(refinery::Target::Version(7));
            match run_logged(through_v7, &mut client).await {
                Ok(n) => match before_partitioning(&mut client).await {
                    Ok(()) => run_logged(runner, &mut client).await.map(|m| n + m),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
    };
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(DbError::pg("releasing the migration lock"))?;
    applied
}

/// Runs `runner`'s pending migrations, each logged: how many.
async fn run_logged(runner: refinery::Runner, client: &mut tokio_postgres::Client) -> Result<usize, DbError> {
    let report = runner.run_async(client).await?;
    for m in report.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "migration applied");
    }
    Ok(report.applied_migrations().len())
}

/// Refuses, before V8 runs and changing nothing, what V8 would silently lose on the way to the
/// partitioned tables (found by trying it, not by V8's own checks): row security enabled on a
/// table (with no policy, V8 lets it pass and the new table would show every row to roles that
/// saw none), CHECK constraints (not carried to the new table), and privileges granted by a role
/// other than the one migrating (PostgreSQL 15 grants again only in the current role's name);
/// and what would make V8 fail half-way in PostgreSQL's words: columns other than V1–V7's (by
/// name, type, NOT NULL, collation: [`column_mismatch`]), rows received after the end of the
/// first partition V8 creates (tomorrow, UTC).
async fn before_partitioning(client: &mut tokio_postgres::Client) -> Result<(), DbError> {
    let pending = !applied_migrations(client).await?.iter().any(|m| m.version == 8);
    if !pending {
        return Ok(());
    }
    let rows = client
        .query(
            "SELECT c.relname::text,
                    c.relrowsecurity OR c.relforcerowsecurity,
                    (SELECT string_agg(conname, ', ' ORDER BY conname) FROM pg_constraint WHERE conrelid = c.oid AND contype = 'c'),
                    (SELECT string_agg(DISTINCT pg_get_userbyid(a.grantor), ', ') FROM aclexplode(c.relacl) a
                      WHERE a.grantee <> c.relowner AND a.grantor <> (SELECT oid FROM pg_roles WHERE rolname = current_user))
             FROM pg_class c
             WHERE c.oid IN (to_regclass('events'), to_regclass('dead_letters')) AND c.relkind = 'r'
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(DbError::pg("checking the tables before migration V8"))?;
    for r in rows {
        let (table, rls, checks, grantors): (String, bool, Option<String>, Option<String>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let refuse = |what: String| {
            Err(DbError::Refused(format!(
                "migration V8 (partitioning {table} by received_at) stops before it starts, changing nothing: {what}"
            )))
        };
        if rls {
            return refuse(format!(
                "{table} has row level security enabled, which the new table would not have; disable it (ALTER TABLE {table} DISABLE ROW LEVEL SECURITY, NO FORCE ROW LEVEL SECURITY), migrate, and enable it on the new table"
            ));
        }
        if let Some(checks) = checks {
            return refuse(format!(
                "{table} has CHECK constraints ({checks}), which the new table would not have; drop them, migrate, and add them to the new table"
            ));
        }
        if let Some(grantors) = grantors {
            return refuse(format!(
                "privileges on {table} were granted by {grantors}, which this role cannot grant again in their name; revoke them, migrate, and grant them again"
            ));
        }
        let columns = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                        a.attcollation NOT IN (0, (SELECT oid FROM pg_collation WHERE collname = 'default'))
                 FROM pg_attribute a WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[&table],
            )
            .await
            .map_err(DbError::pg("checking the tables before migration V8"))?;
        let columns: Vec<(String, String, bool, bool)> =
            columns.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
        if let Some(what) = column_mismatch(&table, &columns) {
            return refuse(format!(
                "{what}; the old table is attached whole to the new one, which needs its columns exactly (migrations V1 to V7)"
            ));
        }
        // V8's first partition runs from the latest received_at through tomorrow (UTC).
        let future: Option<String> = client
            .query_opt(
                &format!(
                    "SELECT to_char(max(received_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM {table}
                     HAVING max(received_at) >= date_trunc('day', now(), 'UTC') + interval '48 hours' - interval '1 microsecond'"
                ),
                &[],
            )
            .await
            .map_err(DbError::pg("checking the tables before migration V8"))?
            .map(|r| r.get(0));
        if let Some(at) = future {
            return refuse(format!(
                "{table} holds rows received in the future (up to {at} UTC), past the first partition V8 creates, which ends with tomorrow (UTC); correct their received_at first"
            ));
        }
    }
    Ok(())
}

/// A column: name, type as `format_type` prints it, NOT NULL.
type Column = (&'static str, &'static str, bool);

/// The columns of `events` and `dead_letters` through migration V7: name, type as
/// `format_type` prints it, NOT NULL. V8 attaches the old table to a new one of exactly these.
const COLUMNS_BEFORE_V8: [(&str, &[Column]); 2] = [
    (
        "events",
        &[
            ("topic", "text", true),
            ("partition", "integer", true),
            ("offset", "bigint", true),
            ("id", "uuid", true),
            ("service", "text", true),
            ("event_type", "text", true),
            ("occurred_at", "timestamp with time zone", true),
            ("received_at", "timestamp with time zone", true),
            ("payload", "jsonb", true),
            ("extra", "jsonb", false),
        ],
    ),
    (
        "dead_letters",
        &[
            ("topic", "text", true),
            ("partition", "integer", true),
            ("offset", "bigint", true),
            ("raw", "bytea", false),
            ("reason", "text", true),
            ("detail", "text", true),
            ("received_at", "timestamp with time zone", true),
            ("size", "integer", false),
            ("message_key", "bytea", false),
            ("kafka_timestamp", "timestamp with time zone", false),
        ],
    ),
];

/// What keeps `table`'s columns (name, type, NOT NULL, a collation of its own) from being attached
/// to V8's new table, if anything: a column it does not have, one it lacks, another type, a
/// missing NOT NULL (PostgreSQL's ATTACH PARTITION requires the parent's), another collation.
fn column_mismatch(table: &str, columns: &[(String, String, bool, bool)]) -> Option<String> {
    let expected = COLUMNS_BEFORE_V8.iter().find(|(t, _)| *t == table)?.1;
    let mut wrong = Vec::new();
    for (name, ty, not_null, collated) in columns {
        match expected.iter().find(|(n, _, _)| n == name) {
            None => wrong.push(format!("column {name} is not aurore's")),
            Some((_, want, _)) if want != ty => wrong.push(format!("column {name} is {ty}, not {want}")),
            Some((_, _, true)) if !not_null => wrong.push(format!("column {name} is not NOT NULL")),
            Some(_) if *collated => wrong.push(format!("column {name} has a collation of its own")),
            Some(_) => {}
        }
    }
    for (name, _, _) in expected {
        if !columns.iter().any(|(n, ..)| n == name) {
            wrong.push(format!("column {name} is missing"));
        }
    }
    (!wrong.is_empty()).then(|| format!("{table}: {}", wrong.join(", ")))
}

/// `next_offset` of each listed partition that has a row, whichever group wrote it: the row is
/// the partition's (migration V5). Durable when returned: a row written by an asynchronous
/// commit not yet flushed (another instance's, `sink::durability`) is flushed first, by the
/// commit of this read's own transaction, which writes a WAL record so that its commit waits
/// for the flush past everything it saw. Otherwise a crash could take back a position this
/// process already starts from, with nothing left to tell it.
pub async fn load_offsets(pool: &Pool, topic: &str, partitions: &[i32]) -> Result<HashMap<i32, i64>, DbError> {
    let mut client = pool.get().await.map_err(DbError::pool("reading consumer offsets"))?;
    let tx = client.transaction().await.map_err(DbError::pg("reading consumer offsets"))?;
    let rows = tx
        .query(
            "SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1 AND partition = ANY($2)",
            &[&topic, &partitions],
        )
        .await
        .map_err(DbError::pg("reading consumer offsets"))?;
    tx.batch_execute(
        "SELECT pg_logical_emit_message(true, 'aurore.durable', ''),
                CASE WHEN current_setting('synchronous_commit') = 'off' THEN set_config('synchronous_commit', 'on', true) END",
    )
    .await
    .map_err(DbError::pg("reading consumer offsets"))?;
    tx.commit().await.map_err(DbError::pg("reading consumer offsets"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// `topic`'s id as recorded (recorded now if it was not): `Ok(None)` when it matches `id`,
/// `Ok(Some(recorded))` when the topic was created again since.
pub async fn check_topic_id(pool: &Pool, topic: &str, id: &str) -> Result<Option<String>, DbError> {
    let client = pool.get().await.map_err(DbError::pool("reading topic ids"))?;
    let recorded: String = client
        .query_one(
            "WITH new AS (INSERT INTO topic_ids (topic, topic_id) VALUES ($1, $2) ON CONFLICT (topic) DO NOTHING RETURNING topic_id)
             SELECT topic_id FROM new UNION ALL SELECT topic_id FROM topic_ids WHERE topic = $1 LIMIT 1",
            &[&topic, &id],
        )
        .await
        .map_err(DbError::pg("reading topic ids"))?
        .get(0);
    Ok((recorded != id).then_some(recorded))
}

/// What [`archive_topic`] renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Archived {
    pub events: u64,
    pub dead_letters: u64,
    pub partitions: u64,
}

/// Renames `topic`'s rows in events, dead_letters, consumer_offsets and topic_ids to `archive_as`, in one
/// transaction: the old generation of a topic deleted and created again keeps its rows, and the
/// new one starts with nothing stored. Fails (nothing renamed) if `archive_as` has rows already.
pub async fn archive_topic(pool: &Pool, topic: &str, archive_as: &str) -> Result<Archived, DbError> {
    let mut client = pool.get().await.map_err(DbError::pool("archiving a topic"))?;
    let tables: bool = client
        .query_one("SELECT to_regclass('dead_letter_counts') IS NOT NULL", &[])
        .await
        .map_err(DbError::pg("looking for aurore's tables"))?
        .get(0);
    if !tables {
        return Err(DbError::Refused(
            "this database has no aurore tables at the current schema: nothing to archive (run `aurore migrate` first?)".into(),
        ));
    }
    let tx = client.transaction().await.map_err(DbError::pg("beginning a transaction"))?;
    let taken: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM consumer_offsets WHERE topic = $1) OR EXISTS (SELECT 1 FROM events WHERE topic = $1)
             OR EXISTS (SELECT 1 FROM dead_letters WHERE topic = $1) OR EXISTS (SELECT 1 FROM topic_ids WHERE topic = $1)
             OR EXISTS (SELECT 1 FROM dead_letter_counts WHERE topic = $1)",
            &[&archive_as],
        )
        .await
        .map_err(DbError::pg("looking for the archive name"))?
        .get(0);
    if taken {
        return Err(DbError::Refused(format!("{archive_as} has rows already: choose another --as")));
    }
    let mut n = [0; 4];
    for (i, table) in ["events", "dead_letters", "consumer_offsets", "topic_ids"].iter().enumerate() {
        n[i] = tx
            .execute(&format!("UPDATE {table} SET topic = $2 WHERE topic = $1"), &[&topic, &archive_as])
            .await
            .map_err(DbError::pg("renaming a topic's rows"))?;
    }
    if n == [0; 4] {
        return Err(DbError::Refused(format!("nothing is stored for topic {topic:?}: check --topic (nothing was renamed)")));
    }
    tx.execute("UPDATE dead_letter_counts SET topic = $2 WHERE topic = $1", &[&topic, &archive_as])
        .await
        .map_err(DbError::pg("renaming a topic's dead-letter counts"))?;
    tx.commit().await.map_err(DbError::pg("committing the archive"))?;
    Ok(Archived { events: n[0], dead_letters: n[1], partitions: n[2] })
}

/// dead_letter_counts: (topic, reason, stored now, replayed ever, purged ever).
pub async fn dead_letter_counts(pool: &Pool) -> Result<Vec<(String, String, i64, i64, i64)>, DbError> {
    let client = pool.get().await.map_err(DbError::pool("reading dead-letter counts"))?;
    let rows = client
        .query("SELECT topic, reason, stored, replayed, purged FROM dead_letter_counts", &[])
        .await
        .map_err(DbError::pg("reading dead-letter counts"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect())
}

/// Per-service totals from event_counts: (service, all time, last 24 hours).
pub async fn business_counts(pool: &Pool) -> Result<Vec<(String, i64, i64)>, DbError> {
    let client = pool.get().await.map_err(DbError::pool("reading event counts"))?;
    let rows = client
        .query(
            "SELECT service, sum(events)::int8, (sum(events) FILTER (WHERE hour > now() - interval '24 hours'))::int8
             FROM event_counts GROUP BY service ORDER BY 2 DESC",
            &[],
        )
        .await
        .map_err(DbError::pg("reading event counts"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get::<_, Option<i64>>(2).unwrap_or(0))).collect())
}

/// The table privileges `run` needs, with what needs them: `(table, privilege, used by)`.
/// COPY FROM needs INSERT; `ON CONFLICT DO UPDATE` needs UPDATE and SELECT; an `UPDATE … WHERE`
/// and a `RETURNING` need SELECT (PostgreSQL's GRANT page). Keep it in step with `sink::sql` and
/// the queries above.
pub const TABLE_PRIVILEGES: &[(&str, &str, &str)] = &[
    ("events", "INSERT", "COPY of the rows"),
    ("dead_letters", "INSERT", "dead letters"),
    ("dead_letter_counts", "SELECT", "dead letters by reason (metrics); their counts' upsert"),
    ("dead_letter_counts", "INSERT", "dead letters' counts' upsert"),
    ("dead_letter_counts", "UPDATE", "dead letters' counts' upsert"),
    ("consumer_offsets", "SELECT", "where partitions start; the fenced offset update"),
    ("consumer_offsets", "INSERT", "a partition's first offset"),
    ("consumer_offsets", "UPDATE", "the fenced offset update"),
    ("event_counts", "SELECT", "business metrics; the hourly counts' upsert"),
    ("event_counts", "INSERT", "the hourly counts' upsert"),
    ("event_counts", "UPDATE", "the hourly counts' upsert"),
    ("topic_ids", "SELECT", "telling a topic created again (best effort)"),
    ("topic_ids", "INSERT", "recording a topic's id (best effort)"),
];

/// A migration, as this binary knows it or as the database recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRecord {
    pub version: i32,
    pub name: String,
    pub checksum: u64,
}

/// The migrations this binary embeds, in order.
pub fn known_migrations() -> Vec<MigrationRecord> {
    let runner = embedded::migrations::runner();
    runner.get_migrations().iter().map(record).collect()
}

fn record(m: &refinery::Migration) -> MigrationRecord {
    MigrationRecord { version: m.version(), name: m.name().to_owned(), checksum: m.checksum() }
}

/// The migrations recorded in the database (none if refinery's table does not exist yet).
pub async fn applied_migrations(client: &mut tokio_postgres::Client) -> Result<Vec<MigrationRecord>, DbError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('refinery_schema_history') IS NOT NULL", &[])
        .await
        .map_err(DbError::pg("looking for the migration history"))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let applied = embedded::migrations::runner().get_applied_migrations_async(client).await?;
    Ok(applied.iter().map(record).collect())
}

/// Whether the current role may create tables in its current schema, as migrations do.
pub async fn may_create_tables(client: &tokio_postgres::Client) -> Result<bool, DbError> {
    let row = client
        .query_one("SELECT coalesce(has_schema_privilege(current_schema(), 'CREATE'), false)", &[])
        .await
        .map_err(DbError::pg("reading schema privileges"))?;
    Ok(row.get(0))
}

/// Of [`TABLE_PRIVILEGES`], those the current role lacks on tables that exist, and the tables
/// that do not exist.
pub async fn missing_privileges(
    client: &tokio_postgres::Client,
) -> Result<(Vec<(&'static str, &'static str, &'static str)>, Vec<&'static str>), DbError> {
    let (mut lacking, mut absent) = (Vec::new(), Vec::new());
    for &(table, privilege, why) in TABLE_PRIVILEGES {
        let row = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL, to_regclass($1) IS NOT NULL AND has_table_privilege($1, $2)",
                &[&table, &privilege],
            )
            .await
            .map_err(DbError::pg("reading table privileges"))?;
        let (exists, granted): (bool, bool) = (row.get(0), row.get(1));
        if !exists {
            if !absent.contains(&table) {
                absent.push(table);
            }
        } else if !granted {
            lacking.push((table, privilege, why));
        }
    }
    Ok((lacking, absent))
}

#[cfg(test)]
mod tests;
