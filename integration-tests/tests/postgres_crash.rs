//! PostgreSQL crashes with committed batches not yet on its disk, and nothing is lost or stored
//! twice. A flush worker's COMMIT returns before its WAL is flushed (asynchronous commit); aurore
//! acknowledges a batch (frees its buffer space, commits its offset to Kafka) only once a flush
//! past it is confirmed (`sink::durability`). PostgreSQL's WAL writer, background writer and
//! checkpointer are stopped (SIGSTOP), so that nothing but aurore's own commits flushes the WAL,
//! then killed, which PostgreSQL answers with a crash restart that loses every commit whose WAL
//! was still in memory. The whole backlog is produced before: after the crash the partitions
//! are idle, so nothing but aurore's own bookkeeping can bring a lost batch back.
//!
//! Alone in its binary (the crash restarts the whole local PostgreSQL), and one test at a time.

use std::time::Duration;

use integration_tests::{Env, Metrics, events, postgres_processes, signal_postgres, wait_until};

/// The two tests crash the same PostgreSQL: one at a time.
static CRASH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The confirming backend is stopped too: nothing is confirmed, so nothing reaches Kafka. The
/// partitions' first batches commit synchronously (lost, a partition would start from Kafka's
/// committed offset, past them) and survive the crash; every batch after them commits
/// asynchronously and is lost with it; aurore finds out and reads it all again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_batches_a_crash_loses_are_read_again() {
    const FIRST: u64 = 60;
    const TOTAL: u64 = 20_000;
    let _one = CRASH.lock().await;
    let env = Env::new("pg_crash", 6, &[]).await;
    let producer = env.producer(&[]);
    let all = events(TOTAL, 6);
    // Batches of 500 and a buffer of 3,000: what waits for confirmation is a few MB of WAL, far
    // below wal_buffers (16 MB on the stack), so no backend has to write it out meanwhile.
    let aurore = env.spawn_aurore(&["--batch-size", "500"]);
    aurore.wait_ready(Duration::from_secs(60)).await;
    let db = env.db().await;
    // The connection that confirms is opened at start, when aurore tries the statement once.
    let confirming: Vec<i32> = db
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
               AND query LIKE 'SELECT pg_logical_emit_message(true, ''aurore.durable''%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(confirming.len(), 1, "one backend confirms aurore's commits");
    let mut held = hold_writers(&env, &db).await;
    held.stop(&env, &confirming);

    // Ten events a partition: each partition's first batch.
    env.produce(&producer, all[..FIRST as usize].to_vec()).await;
    env.wait_persisted(FIRST as i64, Duration::from_secs(60)).await;
    env.produce(&producer, all[FIRST as usize..].to_vec()).await;
    // The workers commit what the buffer holds, then wait for space that only confirmation frees.
    let visible = wait_until("committed rows, unconfirmed", Duration::from_secs(60), || async {
        let n = env.persisted().await;
        (n >= 2_000).then_some(n)
    })
    .await;
    let acknowledged: i64 = env.kafka_committed().values().filter(|o| **o > 0).sum();
    assert_eq!(acknowledged, 0, "nothing unconfirmed is committed to Kafka");
    let after = held.crash(&env).await;
    drop(db);
    eprintln!("visible before the crash: {visible}; after it: {after}");
    assert_eq!(after, FIRST as i64, "the first batches survive the crash, and nothing after them ({visible} rows were visible)");

    env.wait_persisted(TOTAL as i64, Duration::from_secs(120)).await;
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!((rows, dead), (TOTAL as i64, 0));
    let m = Metrics::scrape(&aurore).expect("aurore still answers");
    let lost = m.get("worker_batches_not_durable_total", &[]).unwrap_or(0.0);
    assert!(lost >= 1.0, "the lost batches were found and counted: worker_batches_not_durable_total {lost}");
    assert!(aurore.log_text().contains("was not confirmed durable"), "the loss is logged");
}

/// Only PostgreSQL's own writers are stopped: the confirmation flushes the WAL itself, so what
/// aurore acknowledges is on disk all the same, and the crash loses none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_acknowledged_survives_a_crash_without_the_wal_writer() {
    const TOTAL: u64 = 1_800;
    let _one = CRASH.lock().await;
    let env = Env::new("pg_crash_acked", 6, &[]).await;
    let producer = env.producer(&[]);
    // The backlog fits in the buffer: all of it is committed, and acknowledged, before the crash.
    let aurore = env.spawn_aurore(&["--batch-size", "500"]);
    aurore.wait_ready(Duration::from_secs(60)).await;
    let db = env.db().await;
    let all = events(TOTAL, 6);
    // The partitions' first batches first: they commit synchronously, every batch after them
    // asynchronously (its flush left to the confirmation).
    env.produce(&producer, all[..60].to_vec()).await;
    env.wait_persisted(60, Duration::from_secs(60)).await;
    let held = hold_writers(&env, &db).await;
    env.produce(&producer, all[60..].to_vec()).await;
    wait_until("the backlog acknowledged (committed to Kafka)", Duration::from_secs(60), || async {
        (env.kafka_committed().values().filter(|o| **o > 0).sum::<i64>() == TOTAL as i64).then_some(())
    })
    .await;
    let after = held.crash(&env).await;
    drop(db);
    assert_eq!(after, TOTAL as i64, "every acknowledged event survives the crash");
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!((rows, dead), (TOTAL as i64, 0));
    drop(aurore);
}

/// A PostgreSQL restart while aurore is idle: the connection that confirms commits is opened
/// again while idle, before the next batch commits, so that batch is confirmed, not reported
/// "not confirmed durable" (the newcomer trial's finding: after every restart, the first batch
/// was, minutes later, because the connection was opened only when that batch needed it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_restart_leaves_the_next_batch_confirmed() {
    let _one = CRASH.lock().await;
    let env = Env::new("pg_crash_idle", 6, &[]).await;
    let producer = env.producer(&[]);
    let all = events(120, 6);
    let aurore = env.spawn_aurore(&[]);
    aurore.wait_ready(Duration::from_secs(60)).await;
    // The partitions' first batches (synchronous commits), then idle.
    env.produce(&producer, all[..60].to_vec()).await;
    env.wait_persisted(60, Duration::from_secs(60)).await;
    let db = env.db().await;
    let victim: i32 = db.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let crashed_at = std::time::SystemTime::now();
    // One backend killed: PostgreSQL ends every connection and restarts from its WAL.
    signal_postgres(&env, "KILL", &[victim]);
    drop(db);
    let reopened =
        wait_until("aurore's confirming connection open again after the restart", Duration::from_secs(120), || async {
            let client = tokio::time::timeout(Duration::from_secs(5), env_db(&env)).await.ok()??;
            let started: std::time::SystemTime = client
                .query_one(
                    "SELECT backend_start FROM pg_stat_activity WHERE datname = current_database()
                   AND application_name = 'aurore durability'",
                    &[],
                )
                .await
                .ok()?
                .get(0);
            (started > crashed_at).then_some(started)
        })
        .await;
    eprintln!("confirming connection reopened {:?} after the kill", reopened.duration_since(crashed_at).unwrap_or_default());
    env.produce(&producer, all[60..].to_vec()).await;
    wait_until("the second batches acknowledged (committed to Kafka)", Duration::from_secs(60), || async {
        (env.kafka_committed().values().sum::<i64>() == 120).then_some(())
    })
    .await;
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!((rows, dead), (120, 0));
    let m = Metrics::scrape(&aurore).expect("aurore still answers");
    assert_eq!(
        m.get("worker_batches_not_durable_total", &[]).unwrap_or(0.0),
        0.0,
        "a batch committed after the restart is confirmed, not reported not durable"
    );
    assert!(!aurore.log_text().contains("was not confirmed durable"));
}

/// PostgreSQL processes stopped by the test: killed by [`Held::crash`], resumed if the test
/// fails before (PostgreSQL goes on, for the tests after this one).
struct Held(Vec<i32>);

/// Stops the WAL writer, background writer and checkpointer of the PostgreSQL behind `db`.
async fn hold_writers(env: &Env, db: &tokio_postgres::Client) -> Held {
    let backend: i32 = db.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let writers = postgres_processes(backend, &["walwriter", "background writer", "checkpointer"]);
    assert_eq!(writers.len(), 3, "PostgreSQL's WAL writer, background writer and checkpointer");
    let mut held = Held(Vec::new());
    held.stop(env, &writers);
    held
}

impl Held {
    fn stop(&mut self, env: &Env, pids: &[i32]) {
        signal_postgres(env, "STOP", pids);
        self.0.extend_from_slice(pids);
    }

    /// Kills the processes held, which PostgreSQL answers with a crash restart; returns the
    /// rows of `events` once it takes connections again.
    async fn crash(mut self, env: &Env) -> i64 {
        signal_postgres(env, "KILL", &self.0);
        self.0.clear();
        wait_until("PostgreSQL back from its crash restart", Duration::from_secs(120), || async {
            let client = tokio::time::timeout(Duration::from_secs(5), env_db(env)).await.ok()??;
            client.query_one("SELECT count(*) FROM events", &[]).await.ok().map(|r| r.get::<_, i64>(0))
        })
        .await
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = std::process::Command::new("kill").arg("-CONT").args(self.0.iter().map(|p| p.to_string())).status();
        }
    }
}

/// A connection to the test's database, or `None` while PostgreSQL refuses them.
async fn env_db(env: &Env) -> Option<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(&env.database_url, tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(conn);
    Some(client)
}
