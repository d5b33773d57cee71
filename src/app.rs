//! Wiring: the pool and migrations, the HTTP server, the flush workers, the poll thread and
//! the 5-second ticker; and the shutdown order (stop fetching, flush, commit, exit).

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::BaseConsumer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::{ArchiveArgs, Cli, Command, ConfigError, DatabaseUrl, LogFormat, MigrateArgs, RunArgs, redact_kafka_error};
use crate::db;
use crate::health::{Health, KafkaState};
use crate::kafka::client::{Quiet, client_config};
use crate::kafka::liveness::PollWatch;
use crate::kafka::poller::{ConsumerError, LONGEST_WAIT, Parts, Poller};
use crate::metrics::Metrics;
use crate::partitions::{self, Lock, Maintenance, Pass};
use crate::pipeline::breaker::{Breaker, State as BreakerState};
use crate::pipeline::buffer::{Budget, Buffer};
use crate::pipeline::{handoff, progress};
use crate::shutdown::{self, Shutdown};
use crate::sink::dead_letter_topic::DeadLetterTopic;
use crate::sink::durability;
use crate::sink::worker::{self, Shared};

/// Runs a parsed command line to its exit code: 0 done, 1 failed, 2 invalid configuration, 3
/// fenced by another process under the same `--instance-id`.
/// Keeps glibc's malloc from holding on to freed large blocks, before any thread starts.
///
/// glibc serves blocks from 128 KiB up with their own mappings, returned to the kernel when
/// freed, but each free of such a block raises that threshold to its size, up to 32 MiB
/// (`mallopt(3)`, `M_MMAP_THRESHOLD`): after a few large messages, row buffers and librdkafka's
/// fetch buffers come from arenas that keep freed memory, and untouched capacity is resident
/// once reused. Fixing the threshold at its default keeps peak RSS within the buffer's budget
/// (README, "Memory"; issue 19's note has the figures). `MALLOC_MMAP_THRESHOLD_` set in the
/// environment wins.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

pub fn main(cli: Cli) -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    if env("MALLOC_MMAP_THRESHOLD_").is_none() {
        fix_mmap_threshold();
    }
    let log = match cli.log.resolve(env("RUST_LOG").as_deref(), env("NO_COLOR").as_deref(), std::io::stderr().is_terminal()) {
        Ok(log) => log,
        Err(e) => {
            // Nothing is set up to log yet (the format may be what is wrong): one plain line.
            eprintln!("aurore: {e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(&log);
    let json = log.format == LogFormat::Json;
    // The client that validated the Kafka settings, being destroyed: joined before exit.
    let mut validator = None;
    let valid = match &cli.command {
        Command::Run(args) | Command::Check(args) => {
            args.validate().and_then(|()| kafka_settings(args)).map(|handle| validator = handle)
        }
        Command::Produce(args) => args.validate(),
        Command::Migrate(args) => args.partitions.validate(),
        Command::ArchiveTopic(args) => args.validate(),
        Command::DeadLetters(command) => command.validate(),
    };
    if let Err(e) = valid {
        return exit(json, 2, &e);
    }
    if let Command::Produce(args) = cli.command {
        // Blocking by nature (librdkafka's own threads do the work): no async runtime.
        return match crate::produce::run(args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e @ crate::produce::ProduceError::Config(_)) => exit(json, 2, &e),
            Err(e) => exit(json, 1, &e),
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).thread_name("aurore").build() {
        Ok(rt) => rt,
        Err(e) => return exit(json, 1, &format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run_until_admitted(args).await,
            Command::Check(args) => crate::check::run(args).await.map_err(anyhow::Error::from),
            Command::Migrate(args) => migrate(args).await,
            Command::ArchiveTopic(args) => archive_topic(args).await,
            Command::DeadLetters(command) => crate::dead_letters::run(command).await.map_err(anyhow::Error::from),
            Command::Produce(_) => unreachable!("handled above"),
        }
    });
    // A blocking task still running (the login check, bounded at 10 s) is not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Some(handle) = validator {
        let _ = handle.join();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<ConfigError>() => exit(json, 2, &e),
        Err(e)
            if e.is::<InstanceInUse>()
                || matches!(
                    e.downcast_ref(),
                    Some(ConsumerError::InstanceFenced { .. } | ConsumerError::InstanceUnreleased { .. })
                ) =>
        {
            exit(json, 3, &e)
        }
        Err(e) => exit(json, 1, &format!("{e:#}")),
    }
}

/// Says why aurore stops with `code`. In JSON, one error line like every other line on stderr.
/// In text, the plain `aurore: ...` line a person reads last, after the logged error (an invalid
/// configuration, code 2, is that one line alone). Plain too if errors are filtered out.
fn exit(json: bool, code: u8, e: &dyn std::fmt::Display) -> ExitCode {
    let logged = tracing::enabled!(tracing::Level::ERROR);
    if json && logged {
        tracing::error!(exit_code = code, "{e}");
    } else {
        if code != 2 {
            tracing::error!(exit_code = code, "{e}");
        }
        eprintln!("aurore: {e}");
    }
    ExitCode::from(code)
}

/// `aurore archive-topic`: see [`db::archive_topic`].
pub async fn archive_topic(args: ArchiveArgs) -> anyhow::Result<()> {
    let archive_as = args
        .archive_as
        .clone()
        .unwrap_or_else(|| format!("{}.archived-{}", args.topic, chrono::Utc::now().format("%Y%m%dT%H%MZ")));
    let pool = db::pool(&args.db.database_url, 1, args.db.db_connect_timeout)?;
    let done = db::archive_topic(&pool, &args.topic, &archive_as)
        .await
        .with_context(|| format!("archiving topic {} in {}", args.topic, args.db.database_url))?;
    println!(
        "archived topic {} as {archive_as}: {} events, {} dead letters, {} stored partition positions. \
         A running aurore reads its refused partitions again within 10 s, from the log start.",
        args.topic, done.events, done.dead_letters, done.partitions
    );
    Ok(())
}

/// `aurore migrate`: the migrations, then one pass of partition maintenance.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let database = &args.db.database_url;
    let pool = db::pool(database, 1, args.db.db_connect_timeout)?;
    let applied = db::migrate(&pool).await.with_context(|| database.to_string())?;
    tracing::info!(applied, %database, "database schema is up to date");
    let maintenance = Maintenance::new(pool, &args.partitions, Arc::new(Metrics::new()));
    // Creation waits for a running instance's pass (the partitions must exist when migrate
    // returns); a drop pass it leaves to the instance holding that lock (it may run for long).
    for (kind, lock) in [(Pass::Create, Lock::Wait), (Pass::Drop, Lock::Try)] {
        let done = maintenance.pass(kind, lock).await.with_context(|| format!("maintaining the partitions of {database}"))?;
        if done.is_none() {
            tracing::info!("another aurore is dropping partitions now; this drop pass was left to it");
        }
    }
    Ok(())
}

/// librdkafka validates its settings when a client is created: done before anything runs.
/// The client is destroyed on a thread of its own, returned to be joined before the process
/// exits: librdkafka's destroy waits about 100 ms for its threads (measured with strace),
/// which would delay the start for nothing.
fn kafka_settings(args: &RunArgs) -> Result<Option<std::thread::JoinHandle<()>>, ConfigError> {
    let client = client_config(args)
        .create_with_context::<_, BaseConsumer<Quiet>>(Quiet)
        .map_err(|e| ConfigError(format!("Kafka settings: {}", redact_kafka_error(&args.kafka_config, &e))))?;
    // Without a thread to be had, the client is destroyed here, which only takes longer.
    Ok(std::thread::Builder::new().name("kafka-validate".into()).spawn(move || drop(client)).ok())
}

/// The poll thread stopped answering ([`PollWatch`]): the process stops with exit code 1, its
/// consumer left as it is (the group sees the member's session time out, or, with
/// `--instance-id`, the restarted process take over).
#[derive(Debug, thiserror::Error)]
#[error(
    "the Kafka poll thread has not come back for {silent_s} s (last seen {phase}): stopping so that a supervisor restarts aurore; PostgreSQL holds every committed offset, nothing is lost"
)]
pub struct PollStalled {
    silent_s: u64,
    phase: &'static str,
}

/// Another live process holds this `--instance-id`'s lease ([`db::instance_lease`]). Exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("--instance-id {instance_id} is in use by another live process of group {group} (it holds the id's lease in PostgreSQL)")]
pub struct InstanceInUse {
    instance_id: String,
    group: String,
}

/// [`run`], started again while this `--instance-id` is taken: its lease held by another process
/// (or by a crashed one whose connection PostgreSQL has not seen close yet), or refused by the
/// broker (KIP-848 holds it for a crashed predecessor until its session times out); for at most
/// `--instance-id-wait`.
async fn run_until_admitted(args: RunArgs) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + args.instance_id_wait;
    loop {
        match run(args.clone()).await {
            Err(e) if matches!(e.downcast_ref(), Some(ConsumerError::InstanceUnreleased { .. })) || e.is::<InstanceInUse>() => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(e);
                }
                tracing::warn!(error = %e, "trying again in 2 s, until --instance-id-wait has passed; then this process stops (exit 3)");
                tokio::select! {
                    _ = shutdown::signal() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            other => return other,
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    metrics.buffer_capacity.set(args.buffer_capacity() as i64);
    let budget = Budget::of(args.buffer_capacity_bytes);
    metrics.buffer_capacity_bytes.set(budget.buffer_bytes as i64);
    let breaker = Arc::new(Breaker::new(args.breaker_threshold, args.retry_backoff, args.retry_backoff_max));
    let buffer = Arc::new(Buffer::new(args.buffer_capacity(), budget.buffer_bytes, args.buffer_resume_percent));
    let health = Arc::new(Health::new(metrics.clone(), breaker.clone(), buffer.clone()));
    let shutdown = Shutdown::new();
    let abort = Shutdown::new();
    let stop_by = Arc::new(std::sync::OnceLock::new());
    let stop_http = Shutdown::new();
    tokio::spawn({
        let s = shutdown.clone();
        async move {
            shutdown::signal().await;
            s.cancel();
        }
    });

    // HTTP first: liveness answers while migrations wait for the database.
    let listener = TcpListener::bind(args.http_addr).await.with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let addr = listener.local_addr()?;
    tracing::info!("metrics at http://{addr}/metrics/prometheus, health at http://{addr}/health");
    let mut http =
        tokio::spawn(crate::http::serve(listener, health.clone(), metrics.clone(), stop_http.clone().cancelled_owned()));

    let pool = db::pool(&args.db.database_url, args.pool_size(), args.db.db_connect_timeout)?;
    tracing::info!(database = %args.db.database_url, brokers = %args.kafka_brokers, "starting");
    // Kafka's answer to a login beside the migrations (each takes tens of milliseconds at
    // least); a refusal ends the start at once, even while migrations wait for the database
    // (an interrupted migration is rolled back with its connection).
    let mut login = {
        let args = args.clone();
        tokio::task::spawn_blocking(move || crate::kafka::client::login_refused(&args, Duration::from_secs(10)))
    };
    let (refused, migrated) = {
        let migrate = async {
            if args.no_migrate {
                return anyhow::Ok(true);
            }
            migrate_with_retry(&pool, &args.db.database_url, &shutdown, &metrics).await
        };
        tokio::pin!(migrate);
        tokio::select! {
            refused = &mut login => match refused? {
                Some(reason) => (Some(reason), false),
                None => (None, migrate.await?),
            },
            migrated = &mut migrate => match migrated? {
                // Shut down meanwhile: the login check is not waited for.
                false => (None, false),
                true => (login.await?, true),
            }
        }
    };
    if let Some(reason) = refused {
        stop_http.cancel();
        let _ = http.await;
        return Err(crate::kafka::poller::ConsumerError::RefusedLogin(reason).into());
    }
    if !migrated {
        tracing::info!("stopped before consuming: shut down while starting");
        stop_http.cancel();
        return Ok(());
    }
    // Held until run returns: the process's claim on its instance id.
    let _lease = match &args.instance_id {
        None => None,
        Some(id) => {
            let lease = db::instance_lease(&args.db.database_url, args.db.db_connect_timeout, &args.group_id, id).await?;
            if lease.is_none() {
                stop_http.cancel();
                let _ = http.await;
                return Err(InstanceInUse { instance_id: id.clone(), group: args.group_id.clone() }.into());
            }
            lease
        }
    };
    let confirming = db::pool_as(&args.db.database_url, 1, args.db.db_connect_timeout, durability::APPLICATION_NAME)?;
    match durability::probe(&confirming).await {
        Ok(()) => {}
        // Unreachable again since the migrations: the confirming task waits it out.
        Err(e) if e.class() == db::Class::Transient => {}
        Err(e) => {
            stop_http.cancel();
            let _ = http.await;
            // The statement reads consumer_offsets: missing, the schema was never made (a first
            // start with --no-migrate), which the EXECUTE hint would not tell.
            let hint = if e.sqlstate() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
                "aurore's tables are not there: run `aurore migrate` (or start without --no-migrate)"
            } else {
                "the role needs EXECUTE on pg_logical_emit_message(boolean, text, text), PostgreSQL's default"
            };
            return Err(ConfigError(format!(
                "PostgreSQL at {} refuses the statement that confirms commits are durable ({e}); {hint}",
                args.db.database_url
            ))
            .into());
        }
    }
    health.migrated.store(true, std::sync::atomic::Ordering::Relaxed);
    metrics.database_connection_up.set(1);

    // A first pass before anything is consumed, so that the partitions of now exist; the task
    // goes on with the rest (a failed pass is logged there, and retried).
    let maintenance = Maintenance::new(pool.clone(), &args.partitions, metrics.clone());
    if args.partitions.partition_interval < Duration::from_secs(3600) {
        tracing::warn!(
            partition_interval = %humantime::format_duration(args.partitions.partition_interval),
            "partitions shorter than an hour make many tables (a day of 1-minute partitions is 1,440 per table): meant for tests"
        );
    }
    maintenance.pass_or_warn(Pass::Create).await;
    let partitions_missing = maintenance.wake.clone();
    let partitions =
        [Pass::Create, Pass::Drop].map(|kind| tokio::spawn(partitions::run(maintenance.clone(), kind, stop_http.clone())));

    let (reporter, reports) = handoff::channel();
    let (doing, done) = progress::channels(args.flush_workers);
    let shared = Shared {
        progress: done.clone(),
        pool: pool.clone(),
        database: Arc::from(args.db.database_url.to_string()),
        group: Arc::from(args.group_id.as_str()),
        metrics: metrics.clone(),
        breaker: breaker.clone(),
        reports: reporter,
        abort: abort.clone(),
        partitions_missing,
        dead_letter_topic: match &args.dead_letter_topic {
            None => None,
            Some(topic) => Some(Arc::new(
                DeadLetterTopic::new(&args, topic)
                    .map_err(|e| ConfigError(format!("--dead-letter-topic: {}", redact_kafka_error(&args.kafka_config, &e))))?,
            )),
        },
    };
    let mut workers = JoinSet::new();
    let mut senders = Vec::with_capacity(args.flush_workers);
    // Ends once every worker has, and what they committed is confirmed.
    let (confirmations, committed) = tokio::sync::mpsc::unbounded_channel();
    workers.spawn(durability::run(shared.clone(), confirming, committed));
    for (id, doing) in doing.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        senders.push(tx);
        workers.spawn(worker::run(id, shared.clone(), rx, confirmations.clone(), doing));
    }
    drop((shared, confirmations));

    // SIGHUP: the operator asks for a new Kafka consumer (the path a stuck one takes).
    let recreate = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn({
        let (recreate, stop) = (recreate.clone(), shutdown.clone());
        async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(()) = hup.recv() => {
                        tracing::info!("SIGHUP received: recreating the Kafka consumer");
                        recreate.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    });
    let watch = Arc::new(PollWatch::default());
    let poller = Poller::new(Parts {
        args: args.clone(),
        pool: pool.clone(),
        runtime: tokio::runtime::Handle::current(),
        metrics: metrics.clone(),
        health: health.clone(),
        buffer,
        breaker,
        workers: senders,
        progress: done,
        reports,
        shutdown: shutdown.clone(),
        abort: abort.clone(),
        stop_by: stop_by.clone(),
        recreate: recreate.clone(),
        watch: watch.clone(),
    })
    .map_err(|e| ConfigError(e.to_string()))?;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kafka-poll".into())
        .spawn(move || {
            let _ = done_tx.send(poller.run());
        })
        .context("cannot start the poll thread")?;

    let mut ticker = tokio::spawn(ticker(pool, metrics.clone(), health.clone(), args.max_service_labels, stop_http.clone()));

    let mut failure: Option<anyhow::Error> = None;
    let mut abort_armed = false;
    let stall_bound = args.group_liveness_timeout + LONGEST_WAIT;
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
    let polled = loop {
        tokio::select! {
            biased;
            r = &mut done_rx => break Some(r),
            _ = watchdog.tick() => {
                if let Some((silent, phase)) = watch.stalled(Instant::now(), stall_bound) {
                    // Nothing takes a thread back from inside librdkafka: stop, and let the
                    // supervisor restart aurore. PostgreSQL holds every committed offset.
                    health.set_kafka(KafkaState::PollStalled);
                    failure = Some(PollStalled { silent_s: silent.as_secs(), phase: phase.as_str() }.into());
                    abort.cancel();
                    shutdown.cancel();
                    break None;
                }
            }
            Some(joined) = workers.join_next() => {
                if let Ok(Err(e)) = joined {
                    // Nothing more can be persisted: stop at once, commit nothing further.
                    failure.get_or_insert(e.into());
                    abort.cancel();
                    shutdown.cancel();
                }
            }
            _ = shutdown.cancelled(), if !abort_armed => {
                abort_armed = true;
                let _ = stop_by.set(std::time::Instant::now() + args.shutdown_timeout);
                let (abort, timeout) = (abort.clone(), args.shutdown_timeout);
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    abort.cancel();
                });
            }
        }
    };
    match polled {
        Some(Ok(Ok(()))) | None => {}
        Some(Ok(Err(e))) => {
            failure.get_or_insert(e.into());
        }
        Some(Err(_)) => {
            failure.get_or_insert(anyhow::anyhow!("the poll thread panicked"));
        }
    }
    // The workers end by the shutdown's deadline (abort), the rest at once; whatever still
    // waits a moment past it (a query to a PostgreSQL that stopped answering, an HTTP request
    // held open) is not waited for: a newcomer's trial had the process outlive a 5 s timeout by
    // ten minutes, stuck in the metrics ticker's query to a hung server.
    let tail_by =
        (*stop_by.get_or_init(|| std::time::Instant::now() + args.shutdown_timeout)).max(std::time::Instant::now()) + TAIL_GRACE;
    let mut workers_done = false;
    let tail = async {
        while let Some(joined) = workers.join_next().await {
            if let Ok(Err(e)) = joined {
                failure.get_or_insert(e.into());
            }
        }
        workers_done = true;
        stop_http.cancel();
        let _ = (&mut ticker).await;
        let _ = (&mut http).await;
    };
    if tokio::time::timeout_at(tail_by.into(), tail).await.is_err() {
        tracing::warn!(
            grace_ms = TAIL_GRACE.as_millis() as u64,
            "stopping: tasks still waiting past the shutdown timeout are left"
        );
        stop_http.cancel();
        ticker.abort();
        http.abort();
        if !workers_done {
            workers.abort_all();
            failure.get_or_insert(anyhow::anyhow!("gave up at shutdown: flush workers still waiting past the shutdown timeout"));
        }
    }
    // A retention drop may be waiting for a long query to end: nothing is lost by leaving it
    // (the next start finishes it).
    for task in partitions {
        task.abort();
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
    }
}

/// How long past the shutdown's deadline the last tasks (workers, metrics ticker, HTTP server)
/// are waited for before they are left.
const TAIL_GRACE: Duration = Duration::from_secs(1);

/// Applies migrations, waiting out an unreachable database. `false` if shut down meanwhile.
async fn migrate_with_retry(
    pool: &deadpool_postgres::Pool,
    database: &DatabaseUrl,
    shutdown: &Shutdown,
    metrics: &Metrics,
) -> anyhow::Result<bool> {
    loop {
        // An attempt waits up to --db-connect-timeout on a server that does not answer: a
        // shutdown does not wait for it (an interrupted migration rolls back with its connection).
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            attempt = db::migrate(pool) => attempt,
        };
        match attempt {
            Ok(_) => return Ok(true),
            Err(e) if e.class() == db::Class::Transient => {
                metrics.database_connection_up.set(0);
                tracing::warn!(%database, error = %e, "PostgreSQL not reachable yet; migrations are retried in 2 s");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            Err(e) => return Err(e).with_context(|| format!("applying migrations to {database}; not retried")),
        }
    }
}

/// Every 5 s: throughput, and the business metrics from event_counts (never from events).
async fn ticker(pool: deadpool_postgres::Pool, metrics: Arc<Metrics>, health: Arc<Health>, max_labels: usize, stop: Shutdown) {
    const PERIOD: Duration = Duration::from_secs(5);
    let mut interval = tokio::time::interval(PERIOD);
    let persisted = |m: &Metrics| m.events_processed_total.get() + dead_lettered_total(m);
    let mut last = persisted(&metrics);
    let mut last_at = tokio::time::Instant::now();
    let mut labelled: Vec<String> = Vec::new();
    let mut letters = LetterCounts::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now = tokio::time::Instant::now();
        let total = persisted(&metrics);
        metrics.events_throughput_per_second.set((total - last) as f64 / now.duration_since(last_at).as_secs_f64().max(0.001));
        (last, last_at) = (total, now);
        health.report();
        // A server that stopped answering must not hold the shutdown.
        let counts = tokio::select! {
            _ = stop.cancelled() => return,
            counts = async { (db::business_counts(&pool).await, db::dead_letter_counts(&pool).await) } => counts,
        };
        match counts.0 {
            Ok(rows) => {
                set_business(&metrics, &rows, max_labels, &mut labelled);
                if health.breaker.state() == BreakerState::Closed {
                    metrics.database_connection_up.set(1);
                }
            }
            Err(e) => {
                metrics.database_connection_up.set(0);
                tracing::debug!(error = %e, "business metrics not refreshed");
            }
        }
        match counts.1 {
            Ok(rows) => letters.update(&metrics, &rows),
            Err(e) => tracing::debug!(error = %e, "dead-letter metrics not refreshed"),
        }
    }
}

/// The dead-letter metrics from dead_letter_counts. Replays and purges are counted from the
/// first reading on: the counters start at 0 with the process, as counters do.
#[derive(Default)]
struct LetterCounts {
    /// (topic, reason) → (replayed, purged) at the last reading.
    seen: std::collections::HashMap<(String, String), (i64, i64)>,
    read: bool,
}

impl LetterCounts {
    fn update(&mut self, m: &Metrics, rows: &[(String, String, i64, i64, i64)]) {
        let first = !std::mem::replace(&mut self.read, true);
        for (topic, reason, stored, replayed, purged) in rows {
            m.dead_letters_stored.with_label_values(&[topic, reason]).set(*stored);
            let labels = [topic.as_str(), reason.as_str()];
            let (r0, p0) = self.seen.get(&(topic.clone(), reason.clone())).copied().unwrap_or(if first {
                (*replayed, *purged)
            } else {
                (0, 0)
            });
            m.dead_letters_replayed_total.with_label_values(&labels).inc_by((replayed - r0).max(0) as u64);
            m.dead_letters_purged_total.with_label_values(&labels).inc_by((purged - p0).max(0) as u64);
            self.seen.insert((topic.clone(), reason.clone()), (*replayed, *purged));
        }
    }
}

fn dead_lettered_total(m: &Metrics) -> u64 {
    crate::event::Reject::ALL.iter().map(|r| m.events_dead_lettered_total.with_label_values(&[r.label()]).get()).sum()
}

/// The busiest `max_labels` services keep their own label; the rest add up under "other".
fn set_business(m: &Metrics, rows: &[(String, i64, i64)], max_labels: usize, labelled: &mut Vec<String>) {
    let (mut total, mut day) = (0, 0);
    let (mut other, mut other_day) = (0, 0);
    let mut now_labelled = Vec::with_capacity(rows.len().min(max_labels) + 1);
    for (i, (service, all, last24)) in rows.iter().enumerate() {
        total += all;
        day += last24;
        if i < max_labels {
            m.business_events_by_service.with_label_values(&[service]).set(*all);
            m.business_events_last_24h_by_service.with_label_values(&[service]).set(*last24);
            now_labelled.push(service.clone());
        } else {
            other += all;
            other_day += last24;
        }
    }
    if rows.len() > max_labels {
        m.business_events_by_service.with_label_values(&["other"]).set(other);
        m.business_events_last_24h_by_service.with_label_values(&["other"]).set(other_day);
        now_labelled.push("other".into());
    }
    for gone in labelled.iter().filter(|s| !now_labelled.contains(s)) {
        let _ = m.business_events_by_service.remove_label_values(&[gone]);
        let _ = m.business_events_last_24h_by_service.remove_label_values(&[gone]);
    }
    *labelled = now_labelled;
    m.business_events_total.set(total);
    m.business_events_last_24h.set(day);
}
