//! `aurore check`: what `run` needs, tried before a deploy (a CI step, an init container).
//!
//! Takes `run`'s flags and environment. Prints one line per check on stdout, as it goes:
//! `ok      <check>: <detail>` or `FAILED  <check>: <reason and what to do>`. The checks: the
//! configuration; the Kafka cluster and each of its brokers, reached on its own; each topic; the
//! PostgreSQL connection; the migration state; the table and function privileges `run` needs
//! ([`db::TABLE_PRIVILEGES`]); the time partitions (how far ahead they reach, whether this role
//! may make more). A check whose prerequisite failed is not printed (no brokers: no
//! topic lines; no connection: no migration or privilege lines).
//!
//! Exit codes ([`crate::app::main`]): 0 every check passed, 1 one failed, 2 bad usage or an
//! invalid configuration (the one line `run` would print, on stderr). Each network step is
//! bounded: [`KAFKA_TIMEOUT`] for Kafka, `--db-connect-timeout` for PostgreSQL. Passwords are
//! never printed: the database is named `user@host:port/dbname`, Kafka settings not at all.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;

use crate::config::{RunArgs, redact_kafka_error};
use crate::db::{self, MigrationRecord};
use crate::kafka::client::{Quiet, client_config};

/// How long each Kafka step (the cluster, one broker) may take.
pub const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} checks failed")]
pub struct ChecksFailed {
    pub failed: usize,
    pub total: usize,
}

/// Runs every check, printing each line as it is known. `args` were validated.
pub async fn run(args: RunArgs) -> Result<(), ChecksFailed> {
    let mut out = Lines::default();
    out.ok(
        "configuration",
        format!("{} topic(s), group {}, {} flush worker(s)", args.topics.len(), args.group_id, args.flush_workers),
    );
    let kafka_args = args.clone();
    match tokio::task::spawn_blocking(move || kafka(&kafka_args)).await {
        Ok(lines) => lines.into_iter().for_each(|(ok, name, text)| out.line(ok, &name, text)),
        Err(e) => out.failed("kafka", format!("the check itself failed: {e}")),
    }
    postgresql(&args, &mut out).await;
    match out.failed {
        0 => Ok(()),
        failed => Err(ChecksFailed { failed, total: out.total }),
    }
}

/// The cluster, each broker on its own, each topic: `(ok, check, text)` lines.
fn kafka(args: &RunArgs) -> Vec<(bool, String, String)> {
    let mut lines = Vec::new();
    let metadata = match fetch_metadata(args, &args.kafka_brokers) {
        Ok(m) => m,
        Err(e) => {
            let text = match crate::kafka::client::login_refused(args, KAFKA_TIMEOUT) {
                Some(reason) => format!(
                    "{} refused the login: {reason}; check sasl.mechanism, sasl.username and sasl.password in --kafka-config",
                    args.kafka_brokers
                ),
                None => format!(
                    "no broker of {} answered: {e}; check --kafka-brokers (KAFKA_BROKERS) and --kafka-config's security settings",
                    args.kafka_brokers
                ),
            };
            lines.push((false, "kafka".into(), text));
            return lines;
        }
    };
    let brokers = metadata.brokers();
    lines.push((true, "kafka".into(), format!("{} answers: {} broker(s)", args.kafka_brokers, brokers.len())));
    // Each broker the cluster advertises, bootstrapped alone: what a consumer connects to.
    let reached: Vec<_> = std::thread::scope(|s| {
        let tries: Vec<_> = brokers
            .iter()
            .map(|b| {
                let address = format!("{}:{}", b.host(), b.port());
                let id = b.id();
                s.spawn(move || (id, fetch_metadata(args, &address).map(|_| ()), address))
            })
            .collect();
        tries.into_iter().filter_map(|t| t.join().ok()).collect()
    });
    for (id, result, address) in reached {
        let name = format!("kafka broker {id}");
        match result {
            Ok(()) => lines.push((true, name, format!("{address} answers"))),
            Err(e) => lines.push((false, name, format!("{address} (as the cluster advertises it) did not answer: {e}"))),
        }
    }
    let dead_letters = args.dead_letter_topic.iter().map(|t| (t, "--dead-letter-topic (AURORE_DEAD_LETTER_TOPIC)"));
    for (topic, flag) in args.topics.iter().map(|t| (t, "--topics (AURORE_TOPICS)")).chain(dead_letters) {
        let name = format!("topic {topic}");
        match metadata.topics().iter().find(|t| t.name() == topic) {
            None => lines.push((false, name, format!("does not exist; create it, or correct {flag}"))),
            Some(t) => match t.error() {
                Some(e) => lines.push((false, name, format!("the broker answers {e:?}"))),
                None => lines.push((true, name, format!("{} partition(s)", t.partitions().len()))),
            },
        }
    }
    lines
}

/// Metadata of every topic, from the cluster bootstrapped at `brokers` with `run`'s settings.
fn fetch_metadata(args: &RunArgs, brokers: &str) -> Result<Metadata, String> {
    let mut config = client_config(args);
    // librdkafka's own complaints would repeat on stderr what the line says.
    config.set("bootstrap.servers", brokers).set_log_level(RDKafkaLogLevel::Emerg);
    let consumer: BaseConsumer<Quiet> =
        config.create_with_context(Quiet).map_err(|e| redact_kafka_error(&args.kafka_config, &e))?;
    consumer.fetch_metadata(None, KAFKA_TIMEOUT).map_err(|e| format!("{e} (within {} s)", KAFKA_TIMEOUT.as_secs()))
}

/// What to look at when PostgreSQL cannot be reached.
const POSTGRES_HINT: &str = "check --database-url (DATABASE_URL): host, port, user, password, database, sslmode";

/// The connection, the migrations, the privileges.
async fn postgresql(args: &RunArgs, out: &mut Lines) {
    let url = &args.db.database_url;
    let pool = match db::pool(url, 1, args.db.db_connect_timeout) {
        Ok(pool) => pool,
        Err(e) => return out.failed("postgresql", format!("{url}: {e}; {POSTGRES_HINT}")),
    };
    let mut client = match pool.get().await {
        Ok(client) => client,
        Err(e) => return out.failed("postgresql", format!("{url}: {}; {POSTGRES_HINT}", db::describe_pool(&e))),
    };
    let role = match client.query_one("SELECT current_setting('server_version'), current_user::text", &[]).await {
        Ok(row) => {
            let role: String = row.get(1);
            out.ok("postgresql", format!("{url}: PostgreSQL {}, as role {role}", row.get::<_, String>(0)));
            role
        }
        Err(e) => return out.failed("postgresql", format!("{url}: {}; {POSTGRES_HINT}", db::describe(&e))),
    };
    let pending = match db::applied_migrations(&mut client).await {
        Ok(applied) => {
            let state = MigrationState::of(&db::known_migrations(), &applied);
            let may_create = match state.pending.is_empty() || args.no_migrate {
                true => Ok(true),
                false => db::may_create_tables(&client).await,
            };
            match may_create {
                Ok(may_create) => {
                    let (ok, text) = state.line(args.no_migrate, may_create);
                    out.line(ok, "migrations", text);
                }
                Err(e) => out.failed("migrations", e.to_string()),
            }
            !state.pending.is_empty()
        }
        Err(e) => {
            out.failed("migrations", e.to_string());
            false
        }
    };
    match db::missing_privileges(&client).await {
        Ok((lacking, absent)) => {
            for (table, privilege, why) in &lacking {
                let text = format!("role {role} lacks {privilege}, needed for {why}: GRANT {privilege} ON {table} TO {role}");
                out.failed(&format!("table {table}"), text);
            }
            let mut present: Vec<&str> = db::TABLE_PRIVILEGES.iter().map(|(t, ..)| *t).filter(|t| !absent.contains(t)).collect();
            present.dedup();
            if lacking.is_empty() && !present.is_empty() {
                out.ok("tables", format!("role {role} has every privilege run needs on {}", present.join(", ")));
            }
            if !absent.is_empty() && !pending {
                out.failed("tables", format!("{} missing, though every migration is recorded", absent.join(", ")));
            }
        }
        Err(e) => out.failed("tables", e.to_string()),
    }
    // sink::durability confirms commits with it: run refuses to start without it. Found by name:
    // PostgreSQL 17 added a fourth argument (with a default).
    let emit = client
        .query_opt(
            "SELECT p.oid::regprocedure::text, has_function_privilege(p.oid, 'EXECUTE') FROM pg_proc p
             WHERE p.proname = 'pg_logical_emit_message' AND p.proargtypes[1] = 'text'::regtype AND p.proargtypes[2] = 'text'::regtype
             ORDER BY p.pronargs LIMIT 1",
            &[],
        )
        .await;
    match emit {
        Ok(Some(row)) if row.get::<_, bool>(1) => out
            .ok("functions", format!("role {role} may execute {}, which confirms commits are durable", row.get::<_, String>(0))),
        Ok(Some(row)) => {
            let f: String = row.get(0);
            out.failed(
                "functions",
                format!("role {role} lacks EXECUTE on {f}, needed to confirm commits are durable: GRANT EXECUTE ON FUNCTION {f} TO {role}"),
            )
        }
        Ok(None) => out.failed("functions", "this PostgreSQL has no pg_logical_emit_message (9.6 or later has it)".into()),
        Err(e) => out.failed("functions", e.to_string()),
    }
    partitions(&client, &role, out).await;
}

/// Migration V8's layout: how far ahead the partitions reach, and whether this role may make
/// more (it must own `events` and `dead_letters` and may CREATE in their schema). A role that
/// may not passes while the partitions hold rows received now (the owner's `aurore migrate`
/// makes the next ones); with none holding now, ingest would wait, so it fails. No line before
/// V8.
async fn partitions(client: &tokio_postgres::Client, role: &str, out: &mut Lines) {
    let rows = match client
        .query(
            "SELECT c.relname::text, pg_has_role(current_user, c.relowner, 'USAGE'),
                    has_schema_privilege(c.relnamespace, 'CREATE'), n.nspname::text,
                    (extract(epoch FROM now()) * 1000000)::int8
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid IN (to_regclass('events'), to_regclass('dead_letters')) AND c.relkind = 'p'
             ORDER BY 1 DESC",
            &[],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => return out.failed("partitions", db::describe(&e)),
    };
    let mut why: Vec<String> = Vec::new();
    let mut reach = i64::MAX;
    for r in &rows {
        let (table, owns, create, schema, now): (String, bool, bool, String, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        if !owns {
            why.push(format!("does not own {table}"));
        }
        if !create && !why.iter().any(|w| w.contains("CREATE")) {
            why.push(format!("may not CREATE in schema {schema}"));
        }
        match crate::partitions::list(client, &table).await {
            Ok(attached) => reach = reach.min(crate::partitions::ahead(&attached, now)),
            Err(e) => return out.failed("partitions", e.to_string()),
        }
    }
    if rows.is_empty() {
        return;
    }
    let ahead = humantime::format_duration(Duration::from_secs((reach / 1_000_000).max(0) as u64));
    match (why.is_empty(), reach > 0) {
        (true, _) => out.ok(
            "partitions",
            format!("role {role} may create and drop the partitions of events and dead_letters; they reach {ahead} ahead"),
        ),
        (false, true) => out.ok(
            "partitions",
            format!(
                "they reach {ahead} ahead; role {role} may not make more ({}): run `aurore migrate` as the owner before then, once per --partition-interval",
                why.join(", ")
            ),
        ),
        (false, false) => out.failed(
            "partitions",
            format!(
                "no partition holds rows received now, so ingest would wait, and role {role} may not make one ({}): run `aurore migrate` as the owner of events and dead_letters",
                why.join(", ")
            ),
        ),
    }
}

/// The migrations this binary knows against those the database recorded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrationState {
    pub applied: usize,
    pub known: usize,
    /// Known, not applied, in order.
    pub pending: Vec<String>,
    /// Applied with another checksum than the file this binary embeds.
    pub changed: Vec<String>,
    /// Applied, unknown to this binary: the database is newer than this aurore.
    pub unknown: Vec<String>,
}

impl MigrationState {
    pub fn of(known: &[MigrationRecord], applied: &[MigrationRecord]) -> Self {
        let label = |m: &MigrationRecord| format!("V{}__{}", m.version, m.name);
        let mut state = MigrationState { applied: applied.len(), known: known.len(), ..Default::default() };
        for k in known {
            match applied.iter().find(|a| a.version == k.version) {
                None => state.pending.push(label(k)),
                Some(a) if a.checksum != k.checksum => state.changed.push(label(a)),
                Some(_) => {}
            }
        }
        state.unknown = applied.iter().filter(|a| !known.iter().any(|k| k.version == a.version)).map(label).collect();
        state
    }

    /// `(ok, text)` of the migrations line; pending ones are fine when `run` applies them and
    /// the role `may_create` tables.
    pub fn line(&self, no_migrate: bool, may_create: bool) -> (bool, String) {
        if !self.unknown.is_empty() {
            let text = format!(
                "the database has migrations this aurore does not know ({}): this aurore is older than the schema",
                self.unknown.join(", ")
            );
            return (false, text);
        }
        if !self.changed.is_empty() {
            return (false, format!("applied migrations differ from this aurore's ({})", self.changed.join(", ")));
        }
        let mut text = format!("{} of {} applied", self.known - self.pending.len(), self.known);
        if self.pending.is_empty() {
            return (true, text);
        }
        let _ = write!(text, "; pending: {}", self.pending.join(", "));
        if no_migrate {
            text.push_str(" and --no-migrate is set: run `aurore migrate` first");
            (false, text)
        } else if !may_create {
            text.push_str(" and the role may not create tables in its schema: run `aurore migrate` as the owner first");
            (false, text)
        } else {
            text.push_str(" (run applies them at start)");
            (true, text)
        }
    }
}

/// The lines printed so far.
#[derive(Default)]
struct Lines {
    total: usize,
    failed: usize,
}

impl Lines {
    fn line(&mut self, ok: bool, name: &str, text: String) {
        self.total += 1;
        let status = if ok { "ok" } else { "FAILED" };
        self.failed += usize::from(!ok);
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{status:<7} {name}: {text}");
        let _ = stdout.flush();
    }

    fn ok(&mut self, name: &str, text: String) {
        self.line(true, name, text);
    }

    fn failed(&mut self, name: &str, text: String) {
        self.line(false, name, text);
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
