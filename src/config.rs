//! Command line and environment: every setting, its default and unit, and `validate()`.
//!
//! Flags win over environment variables (`AURORE_*`, plus `DATABASE_URL` and `KAFKA_BROKERS`).
//! Invalid configuration is one clear error line and exit code 2; passwords are never printed.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod database;
mod log;
use database::DatabaseUrlParser;
pub use database::{DatabaseUrl, RootCert, SslMode, Surroundings, TlsSettings};
pub use log::{LogArgs, LogFormat, LogSettings};

/// Bad usage as one line, like every other invalid setting: clap's first line without its
/// `error: ` prefix (clap adds the usage and a tip on lines of their own).
pub fn usage_error(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

#[derive(Debug, Parser)]
#[command(name = "aurore", version, about = "Drains JSON business events from Kafka into PostgreSQL, exactly once.")]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the topics into PostgreSQL until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Try what `run` needs (configuration, brokers, topics, PostgreSQL, migrations,
    /// privileges), one line per check; exit 0 if all pass, 1 if one fails, 2 on bad usage.
    Check(RunArgs),
    /// Apply the database migrations, make one pass of partition maintenance (create the
    /// partitions of now and of the next interval; drop those past --retention), and exit.
    Migrate(MigrateArgs),
    /// After a topic was deleted and created again: rename its old rows (events, dead letters,
    /// stored positions) so that the new topic's messages are stored beside them, and its
    /// refused partitions are read again.
    ArchiveTopic(ArchiveArgs),
    /// Publish synthetic events (or NDJSON lines) to Kafka: the load generator.
    Produce(ProduceArgs),
    /// List, show, replay or purge dead letters. Exit 0 done, 1 error, 2 bad usage.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
}

/// `aurore dead-letters …`.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadLettersCommand {
    /// Newest first: topic, partition, offset, reason, detail, size and time.
    List(ListArgs),
    /// One dead letter's message: text if valid UTF-8 (control characters escaped), else hex;
    /// long ones cut, with the size stated.
    Show(ShowArgs),
    /// Validate the dead letters again with this binary's rules and the table as it is now:
    /// those that pass become events and leave dead_letters in the same transaction; the others
    /// stay, with their reason and detail brought up to date. Safe while aurore runs.
    Replay(ReplayArgs),
    /// Delete dead letters older than --older-than (and matching the filters), counting first.
    Purge(PurgeArgs),
}

/// The longest duration any option takes (100 years): PostgreSQL's timestamps end there
/// (`--since`, `--older-than`, `--retention`).
const MAX_AGE: Duration = Duration::from_secs(100 * 365 * 86_400);

impl DeadLettersCommand {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        let (db, filter) = match self {
            DeadLettersCommand::List(a) => (&a.db, Some(&a.filter)),
            DeadLettersCommand::Show(a) => (&a.db, None),
            DeadLettersCommand::Replay(a) => (&a.db, Some(&a.filter)),
            DeadLettersCommand::Purge(a) => (&a.db, Some(&a.filter)),
        };
        if db.db_connect_timeout.is_zero() {
            return bad("--db-connect-timeout must be positive".into());
        }
        if let Some(f) = filter {
            if let Some(r) = &f.reason
                && !crate::event::Reject::ALL.iter().any(|k| k.label() == r)
            {
                let known: Vec<&str> = crate::event::Reject::ALL.iter().map(|k| k.label()).collect();
                return bad(format!("--reason {r:?} is no dead-letter reason; the reasons are {}", known.join(", ")));
            }
            if f.since.is_some_and(|d| d > MAX_AGE) {
                return bad("--since must be at most 100 years".into());
            }
        }
        match self {
            DeadLettersCommand::Replay(a) if a.max_event_bytes == 0 => bad("--max-event-bytes must be at least 1".into()),
            DeadLettersCommand::Purge(a) if a.older_than > MAX_AGE => bad("--older-than must be at most 100 years".into()),
            _ => Ok(()),
        }
    }
}

/// Which dead letters a command acts on.
#[derive(Debug, Clone, Args)]
pub struct DeadLetterFilter {
    /// Only this topic's.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only this reason's (a label of `events_dead_lettered_total`, e.g. invalid_json).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only those stored (received_at) within this long before now (e.g. 24h, 7d).
    #[arg(long, value_parser = duration)]
    pub since: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub filter: DeadLetterFilter,
    /// At most this many. Default 50.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..))]
    pub limit: i64,
    /// `table` (for people) or `json` (one object per line). Default table.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub db: DbArgs,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Print at most this many bytes of the message. Default 4096.
    #[arg(long, default_value_t = 4096)]
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub filter: DeadLetterFilter,
    /// Say what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Largest accepted message value, in bytes: give `run`'s (the same environment variable).
    /// Default 1048576.
    #[arg(long, env = "AURORE_MAX_EVENT_BYTES", default_value_t = 1 << 20)]
    pub max_event_bytes: usize,
}

#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub filter: DeadLetterFilter,
    /// Only dead letters stored (received_at) longer ago than this (e.g. 30d). Required.
    #[arg(long, value_parser = duration)]
    pub older_than: Duration,
    /// Count what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    /// Kafka bootstrap servers, comma-separated host:port. Default 127.0.0.1:9092.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topic to publish to. Default `events`.
    #[arg(long, env = "AURORE_PRODUCE_TOPIC", default_value = "events")]
    pub topic: String,

    /// Events to send; 0 means until interrupted (synthetic) or to the end of the input.
    /// Default 100000.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,

    /// Events per second; 0 means as fast as possible. Default 0.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,

    /// Distinct services in synthetic events. Default 10.
    #[arg(long, default_value_t = 10)]
    pub services: usize,

    /// Distinct event types in synthetic events. Default 5.
    #[arg(long, default_value_t = 5)]
    pub event_types: usize,

    /// Approximate size of a synthetic payload, in bytes (the message is ~100 bytes more).
    /// Default 300.
    #[arg(long, default_value_t = 300)]
    pub payload_bytes: usize,

    /// Share of deliberately invalid messages, 0.0..=1.0. Default 0.
    #[arg(long, default_value_t = 0.0)]
    pub invalid_ratio: f64,

    /// Share of the valid synthetic events that carry their own `"id"` (a random UUID v4),
    /// 0.0..=1.0; the others get an id derived by aurore. Default 0.
    #[arg(long, env = "AURORE_PRODUCE_ID_RATIO", default_value_t = 0.0)]
    pub id_ratio: f64,

    /// Seed of the synthetic generator: the same seed gives the same events. Default 42.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Read NDJSON (one message value per line) from this file, or `-` for stdin, instead of
    /// generating events.
    #[arg(long)]
    pub input: Option<String>,

    /// Most messages queued or in flight before sending waits. Default 100000.
    #[arg(long, default_value_t = 100_000)]
    pub max_in_flight: usize,

    /// Extra librdkafka producer settings, `key=value`, repeatable.
    #[arg(long = "kafka-config", value_parser = KafkaSettingParser)]
    pub kafka_config: Vec<KafkaSetting>,
}

impl ProduceArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_topic(&self.topic) {
            return Err(ConfigError(format!("--topic {:?} is not a Kafka topic name", self.topic)));
        }
        if !(0.0..=1.0).contains(&self.invalid_ratio) {
            return Err(ConfigError(format!("--invalid-ratio must be within 0..1, got {}", self.invalid_ratio)));
        }
        if !(0.0..=1.0).contains(&self.id_ratio) {
            return Err(ConfigError(format!("--id-ratio must be within 0..1, got {}", self.id_ratio)));
        }
        if self.services == 0 || self.event_types == 0 || self.max_in_flight == 0 {
            return Err(ConfigError("--services, --event-types and --max-in-flight must be at least 1".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
pub struct ArchiveArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// The topic that was created again.
    #[arg(long)]
    pub topic: String,

    /// The name its old rows take. Default `<topic>.archived-<UTC time>`, e.g.
    /// `events.archived-20261201T0130Z`.
    #[arg(long = "as")]
    pub archive_as: Option<String>,
}

impl ArchiveArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, name) in [("--topic", Some(&self.topic)), ("--as", self.archive_as.as_ref())] {
            if let Some(name) = name
                && !valid_topic(name)
            {
                return Err(ConfigError(format!("{flag} {name:?} is not a Kafka topic name (1-249 of [a-zA-Z0-9._-])")));
            }
        }
        if self.archive_as.as_ref() == Some(&self.topic) {
            return Err(ConfigError("--as must differ from --topic".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// PostgreSQL connection URL or key=value string, read as libpq reads it: sslmode (disable,
    /// allow, prefer, require, verify-ca, verify-full), sslrootcert (a file, or "system"), sslcert,
    /// sslkey; what it leaves out comes from PGHOST, PGPORT, PGUSER, PGPASSWORD, the password
    /// file, PGDATABASE, PGAPPNAME, PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY. Required.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = DatabaseUrlParser)]
    pub database_url: DatabaseUrl,

    /// Connections in the pool. Default: flush workers + 4. One more, of its own, confirms that
    /// committed batches are durable (`sink::durability`).
    #[arg(long, env = "AURORE_DB_POOL_SIZE")]
    pub db_pool_size: Option<usize>,

    /// Timeout of connecting to PostgreSQL and of waiting for a pooled connection.
    /// Default 10s.
    #[arg(long, env = "AURORE_DB_CONNECT_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub db_connect_timeout: Duration,
}

/// The time partitions of events and dead_letters (by received_at, migration V8).
#[derive(Debug, Clone, Args)]
pub struct PartitionArgs {
    /// Length of each partition of events and dead_letters, by received_at (the database's clock
    /// when the row was stored); aligned on multiples of it since the Unix epoch, UTC (1d: from
    /// midnight UTC). Whole seconds, at least 1s. aurore keeps the partitions of now and of the
    /// next interval created. Default 1d.
    #[arg(long, env = "AURORE_PARTITION_INTERVAL", default_value = "1d", value_parser = duration)]
    pub partition_interval: Duration,

    /// Drop whole partitions (events and dead letters) whose range ended longer ago than this,
    /// e.g. 30d. Whole seconds, at least 1s. Default: unset, keep everything.
    #[arg(long, env = "AURORE_RETENTION", value_parser = duration)]
    pub retention: Option<Duration>,
}

impl PartitionArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let iv = self.partition_interval;
        if iv < Duration::from_secs(1) || iv.subsec_nanos() != 0 || iv > MAX_AGE {
            return Err(ConfigError(format!(
                "--partition-interval (AURORE_PARTITION_INTERVAL) must be whole seconds from 1s to 100 years, got {}",
                humantime::format_duration(iv)
            )));
        }
        if let Some(r) = self.retention
            && (r < Duration::from_secs(1) || r.subsec_nanos() != 0 || r > MAX_AGE)
        {
            return Err(ConfigError(format!(
                "--retention (AURORE_RETENTION) must be whole seconds from 1s to 100 years (leave it unset to keep everything), got {}",
                humantime::format_duration(r)
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub partitions: PartitionArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub db: DbArgs,

    #[command(flatten)]
    pub partitions: PartitionArgs,

    /// Kafka bootstrap servers, comma-separated host:port. Default 127.0.0.1:9092.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Topics to consume, comma-separated. Default `events`.
    #[arg(long, env = "AURORE_TOPICS", value_delimiter = ',', default_value = "events")]
    pub topics: Vec<String>,

    /// Kafka consumer group. Where a partition resumes (`consumer_offsets`) is kept per
    /// partition, whichever group stored it: renaming the group resumes where the old one
    /// stopped. Default `aurore`.
    #[arg(long, env = "AURORE_GROUP_ID", default_value = "aurore")]
    pub group_id: String,

    /// Static membership (Kafka's `group.instance.id`): a name for this member that outlives
    /// the process, such as a StatefulSet pod's name. A member restarted under the same name
    /// (after a crash too) gets its partitions back at once instead of after the old member's
    /// session timeout; no rebalance happens. Two live processes under one name: one is fenced
    /// and exits with code 3. 1-249 of [a-zA-Z0-9._-]. Default: none (dynamic membership).
    #[arg(long, env = "AURORE_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// How long to keep trying while the `--instance-id` is held by another member: its lease in
    /// PostgreSQL (a live process), or, with `--group-protocol consumer`, the broker (a crashed
    /// predecessor is released after `group.consumer.session.timeout.ms`, 45 s by default),
    /// before exiting with code 3. Default 60s.
    #[arg(long, env = "AURORE_INSTANCE_ID_WAIT", default_value = "60s", value_parser = duration)]
    pub instance_id_wait: Duration,

    /// The consumer group protocol: `classic` (JoinGroup/SyncGroup, with the client-side
    /// cooperative-sticky assignor) or `consumer` (KIP-848: the broker assigns, incrementally;
    /// needs Kafka 4.0 or newer). Default classic.
    #[arg(long, env = "AURORE_GROUP_PROTOCOL", value_enum, default_value_t = GroupProtocol::Classic)]
    pub group_protocol: GroupProtocol,

    /// Extra librdkafka consumer settings, `key=value`, repeatable (TLS, SASL, fetch sizes...).
    /// From the environment: `;`-separated. Settings aurore owns (group.id, bootstrap.servers,
    /// enable.auto.commit, enable.auto.offset.store, partition.assignment.strategy,
    /// enable.partition.eof) are refused.
    #[arg(
        long = "kafka-config",
        env = "AURORE_KAFKA_CONFIG",
        hide_env_values = true,
        value_delimiter = ';',
        value_parser = KafkaSettingParser
    )]
    pub kafka_config: Vec<KafkaSetting>,

    /// Buffer capacity, in events fetched from Kafka and not yet persisted. When it is reached
    /// aurore takes no more messages (it holds, and pauses fetching after 1 s). Default: three
    /// batches a flush worker (24000 with the default batch size and workers): one committing,
    /// one sealed and waiting, one filling, so that a worker's next batch is ready when it
    /// commits (four batches in all left workers waiting; README, "Performance"). Read it
    /// through [`RunArgs::buffer_capacity`].
    #[arg(long = "buffer-capacity", env = "AURORE_BUFFER_CAPACITY")]
    pub buffer_capacity_events: Option<usize>,

    /// Memory for messages, in bytes of message values: librdkafka's prefetch takes up to a
    /// quarter of it (an eighth, 1–16 MiB, twice: the queue and the response being read), the
    /// buffer of messages taken and not yet persisted the rest. Peak RSS stays below this plus
    /// a fixed overhead (README, "Memory"). Default 67108864 (64 MiB).
    #[arg(long, env = "AURORE_BUFFER_CAPACITY_BYTES", default_value_t = 64 << 20)]
    pub buffer_capacity_bytes: usize,

    /// Fetching resumes when the buffer falls below this share of both capacities, in
    /// percent. Default 75: fetching restarts while each worker still has a batch to commit,
    /// so PostgreSQL does not sit idle while Kafka refills the buffer.
    #[arg(long, env = "AURORE_BUFFER_RESUME_PERCENT", default_value_t = 75)]
    pub buffer_resume_percent: u8,

    /// Events (rows and dead letters) in one batch, one transaction. Default 4000: as fast a
    /// drain as 5000, with shorter transactions, so less time without a commit (README,
    /// "Performance").
    #[arg(long, env = "AURORE_BATCH_SIZE", default_value_t = 4_000)]
    pub batch_size: usize,

    /// Longest a non-empty batch waits for more events before it is flushed. Default 100ms.
    #[arg(long, env = "AURORE_LINGER", default_value = "100ms", value_parser = duration)]
    pub linger: Duration,

    /// Flush workers, each with its own PostgreSQL connection; partitions are sharded over
    /// them. Default 2.
    #[arg(long, env = "AURORE_FLUSH_WORKERS", default_value_t = 2)]
    pub flush_workers: usize,

    /// Largest accepted message value, in bytes; a larger one is dead-lettered with its size.
    /// Default 1048576 (1 MiB).
    #[arg(long, env = "AURORE_MAX_EVENT_BYTES", default_value_t = 1 << 20)]
    pub max_event_bytes: usize,

    /// Also produce each dead letter to this Kafka topic (value and key as they came, Kafka
    /// Connect's DLQ headers), before its batch commits: at least once. Default: none.
    #[arg(long, env = "AURORE_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,

    /// A consumer out of its group this long while a broker answers is recreated (and `/health`
    /// says `not_in_group` meanwhile); each recreation in a row doubles it, up to 8×. At least
    /// 10s (librdkafka's statistics, which tell, come every 5 s) and, under the classic
    /// protocol, longer than `session.timeout.ms`. A poll thread silent this long plus 10 s
    /// stops the process (exit 1). Default 60s: longer than a rebalance with the default 45 s
    /// session timeout.
    #[arg(long, env = "AURORE_GROUP_LIVENESS_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub group_liveness_timeout: Duration,

    /// On SIGINT/SIGTERM: time from the signal to exit, to flush what is buffered, commit and
    /// leave the group; what does not fit is given up (PostgreSQL holds every offset). Default 30s.
    #[arg(long, env = "AURORE_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub shutdown_timeout: Duration,

    /// On a rebalance: time to let in-flight batches of revoked partitions commit before
    /// the partitions are released. Default 10s.
    #[arg(long, env = "AURORE_REBALANCE_DRAIN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub rebalance_drain_timeout: Duration,

    /// Consecutive transient PostgreSQL failures that open the circuit breaker. Default 5.
    #[arg(long, env = "AURORE_BREAKER_THRESHOLD", default_value_t = 5)]
    pub breaker_threshold: u32,

    /// First retry delay after a transient PostgreSQL failure; doubles up to
    /// --retry-backoff-max, with jitter. Default 100ms.
    #[arg(long, env = "AURORE_RETRY_BACKOFF", default_value = "100ms", value_parser = duration)]
    pub retry_backoff: Duration,

    /// Longest retry delay. Default 10s.
    #[arg(long, env = "AURORE_RETRY_BACKOFF_MAX", default_value = "10s", value_parser = duration)]
    pub retry_backoff_max: Duration,

    /// Address of the HTTP server (metrics and health). Default 0.0.0.0:3000.
    #[arg(long, env = "AURORE_HTTP_ADDR", default_value = "0.0.0.0:3000")]
    pub http_addr: SocketAddr,

    /// Service label values beyond this many collapse into `other`. Default 100.
    #[arg(long, env = "AURORE_MAX_SERVICE_LABELS", default_value_t = 100)]
    pub max_service_labels: usize,

    /// Do not apply migrations at start (they must have been applied by `aurore migrate`).
    #[arg(long, env = "AURORE_NO_MIGRATE")]
    pub no_migrate: bool,
}

/// Kafka's consumer group protocols (librdkafka's `group.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup; the members assign (cooperative-sticky here).
    Classic,
    /// KIP-848: the broker assigns, incrementally; Kafka 4.0 or newer.
    Consumer,
}

/// librdkafka's default `session.timeout.ms` (CONFIGURATION.md: 45000).
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 45_000;

/// Settings of the consumer that aurore decides itself.
pub const OWNED_KAFKA_KEYS: &[&str] = &[
    "group.id",
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "partition.assignment.strategy",
    "group.protocol",
    "group.instance.id",
    "enable.partition.eof",
];

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl RunArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        self.partitions.validate()?;
        if self.kafka_brokers.trim().is_empty() {
            return bad("--kafka-brokers (KAFKA_BROKERS) is empty".into());
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| !valid_topic(t)) {
            return bad(format!("--topics must be Kafka topic names (1-249 of [a-zA-Z0-9._-]), got {:?}", self.topics));
        }
        if self.group_id.trim().is_empty() {
            return bad("--group-id is empty".into());
        }
        if let Some(t) = &self.dead_letter_topic {
            if !valid_topic(t) {
                return bad(format!("--dead-letter-topic must be a Kafka topic name (1-249 of [a-zA-Z0-9._-]), got {t:?}"));
            }
            if self.topics.contains(t) {
                return bad(format!("--dead-letter-topic {t} is one of --topics: its copies would be read again"));
            }
        }
        if let Some(id) = &self.instance_id
            && !valid_topic(id)
        {
            // Kafka checks group.instance.id with the rules of topic names (JoinGroupRequest).
            return bad(format!("--instance-id (AURORE_INSTANCE_ID) must be 1-249 of [a-zA-Z0-9._-], got {id:?}"));
        }
        for KafkaSetting { key: k, .. } in &self.kafka_config {
            match k.as_str() {
                "group.instance.id" => return bad(format!("--kafka-config {k}: use --instance-id (AURORE_INSTANCE_ID)")),
                "group.protocol" => return bad(format!("--kafka-config {k}: use --group-protocol (AURORE_GROUP_PROTOCOL)")),
                k if OWNED_KAFKA_KEYS.contains(&k) => return bad(format!("--kafka-config {k}: aurore sets this itself")),
                _ => {}
            }
        }
        let positive = [
            // Before the buffer capacity, which is made of them by default.
            ("--batch-size", self.batch_size),
            ("--flush-workers", self.flush_workers),
            ("--buffer-capacity", self.buffer_capacity()),
            ("--buffer-capacity-bytes", self.buffer_capacity_bytes),
            ("--max-event-bytes", self.max_event_bytes),
            ("--breaker-threshold", self.breaker_threshold as usize),
        ];
        for (name, v) in positive {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.flush_workers > 64 {
            return bad(format!("--flush-workers {} is more than 64", self.flush_workers));
        }
        if !(1..=99).contains(&self.buffer_resume_percent) {
            return bad(format!("--buffer-resume-percent must be 1..99, got {}", self.buffer_resume_percent));
        }
        if self.batch_size > self.buffer_capacity() {
            return bad(format!(
                "--batch-size {} exceeds --buffer-capacity {}: a batch could never fill",
                self.batch_size,
                self.buffer_capacity()
            ));
        }
        if self.max_event_bytes > self.buffer_capacity_bytes {
            return bad(format!(
                "--max-event-bytes {} exceeds --buffer-capacity-bytes {}",
                self.max_event_bytes, self.buffer_capacity_bytes
            ));
        }
        if self.group_liveness_timeout < Duration::from_secs(10) {
            return bad(format!("--group-liveness-timeout must be at least 10s, got {:?}", self.group_liveness_timeout));
        }
        if self.group_protocol == GroupProtocol::Classic {
            // A rebalance rightly waits that long for a member that vanished without leaving:
            // recreating the consumer sooner interrupts the rebalance that would let it in.
            let session_ms = match self.kafka_config.iter().rev().find(|s| s.key == "session.timeout.ms") {
                None => DEFAULT_SESSION_TIMEOUT_MS,
                Some(KafkaSetting { value: v, .. }) => v.parse::<u64>().map_err(|_| {
                    ConfigError(format!("--kafka-config session.timeout.ms must be a number of milliseconds, got {v:?}"))
                })?,
            };
            if self.group_liveness_timeout <= Duration::from_millis(session_ms) {
                return bad(format!(
                    "--group-liveness-timeout {:?} must be longer than the session timeout (session.timeout.ms {session_ms}): \
                     raise it, or lower session.timeout.ms with --kafka-config",
                    self.group_liveness_timeout
                ));
            }
        }
        if self.linger.is_zero() || self.shutdown_timeout.is_zero() {
            return bad("--linger and --shutdown-timeout must be positive".into());
        }
        if self.retry_backoff.is_zero() || self.retry_backoff > self.retry_backoff_max {
            return bad("--retry-backoff must be positive and at most --retry-backoff-max".into());
        }
        Ok(())
    }

    /// Events the buffer holds at most: `--buffer-capacity`, or three batches a flush worker.
    pub fn buffer_capacity(&self) -> usize {
        self.buffer_capacity_events.unwrap_or_else(|| self.batch_size.saturating_mul(self.flush_workers).saturating_mul(3))
    }

    /// Flush workers, the ticker, the poll thread's queries, the two kinds of partition
    /// maintenance pass (a retention drop may hold its connection a while).
    pub fn pool_size(&self) -> usize {
        self.db.db_pool_size.unwrap_or(self.flush_workers + 4)
    }
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Every duration option's parser. At most [`MAX_AGE`], so that adding one to a clock reading
/// cannot overflow (`--shutdown-timeout 18446744073709551615s` was accepted, then panicked on
/// SIGTERM).
fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 250ms, 10s, 2m)"))?;
    if d > MAX_AGE {
        return Err(format!("{s} is longer than any option takes (at most 36500d, 100 years)"));
    }
    Ok(d)
}

/// One `--kafka-config key=value`: a librdkafka setting. Its value may be a password
/// (`sasl.password`, `ssl.key.password`, …), so neither its `Debug` nor a parse error shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSetting {
    pub key: String,
    pub value: String,
}

impl fmt::Debug for KafkaSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=<{} bytes>", self.key, self.value.len())
    }
}

/// The text of an error from creating a Kafka client whose settings include `settings`, with
/// every occurrence of a setting's value, as a word of its own, replaced by `<redacted>`.
/// librdkafka's text of a setting it refuses ends with the value
/// (`Client config error: No such configuration property: "sasl.pasword" sasl.pasword <value>`,
/// or `Invalid value "<value>" for configuration property …`), and the value of a mistyped key
/// or of a refused setting may be a password. Longer values are taken out first, so that one
/// value within another leaves no part of it.
pub fn redact_kafka_error(settings: &[KafkaSetting], error: &dyn fmt::Display) -> String {
    let mut text = error.to_string();
    let mut values: Vec<&str> = settings.iter().map(|s| s.value.as_str()).filter(|v| !v.is_empty()).collect();
    values.sort_unstable_by_key(|v| std::cmp::Reverse(v.len()));
    for value in values {
        text = redact_word(&text, value);
    }
    text
}

/// `text` with each occurrence of `word` not inside a longer word (no letter, digit or `_` on
/// either side) replaced by `<redacted>`.
fn redact_word(text: &str, word: &str) -> String {
    let inside = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    // A value that begins (ends) with punctuation is whole whatever precedes (follows) it.
    let (open_start, open_end) = (inside(word.chars().next()), inside(word.chars().next_back()));
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let (before, after) = (rest[..at].chars().next_back(), rest[at + word.len()..].chars().next());
        let whole = !(open_start && inside(before) || open_end && inside(after));
        out.push_str(&rest[..at]);
        out.push_str(if whole { "<redacted>" } else { word });
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Parses `--kafka-config` without clap's usual error, which repeats the value.
#[derive(Clone)]
struct KafkaSettingParser;

impl clap::builder::TypedValueParser for KafkaSettingParser {
    type Value = KafkaSetting;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<KafkaSetting, clap::Error> {
        let refuse = |why: &str| {
            let msg = format!(
                "invalid value for --kafka-config (AURORE_KAFKA_CONFIG): {why} (the value is not shown: it may hold a password)\n"
            );
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, msg).with_cmd(cmd)
        };
        let s = value.to_str().ok_or_else(|| refuse("not UTF-8"))?;
        let (k, v) = s.split_once('=').ok_or_else(|| refuse("not key=value"))?;
        let key = k.trim();
        if key.is_empty() {
            return Err(refuse("an empty key"));
        }
        Ok(KafkaSetting { key: key.to_owned(), value: v.trim().to_owned() })
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
