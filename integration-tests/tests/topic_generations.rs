//! The edges of a topic's life, against the real broker: messages deleted before aurore stored
//! them (a retention gap) are counted and named, and reading goes on from the log start; a
//! topic deleted and created again is refused, never skipped silently (`/health` down,
//! `kafka_partitions_refused`), while running and across a restart, and when its new log has
//! already grown past the stored position (Kafka's topic id tells), until `aurore
//! archive-topic` moves the old rows aside; then the new topic's messages are stored.

use std::process::Command;
use std::time::Duration;

use integration_tests::{Aurore, Env, Metrics, aurore_bin, events, wait_until};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn admin(env: &Env) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", &env.stack.brokers).create().expect("admin client")
}

async fn count(env: &Env, table: &str, topic: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table} WHERE topic = $1");
    env.db().await.query_one(&sql, &[&topic]).await.unwrap().get(0)
}

async fn stored_position(env: &Env) -> Vec<(i32, i64)> {
    let db = env.db().await;
    let rows = db.query("SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1 ORDER BY 1", &[&env.topic]).await;
    rows.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Deletes the test's topic and creates it again, empty, with the same partitions.
async fn recreate(env: &Env) {
    let admin = admin(env);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin.delete_topics(&[&env.topic], &opts).await.expect("delete topic") {
        r.unwrap_or_else(|(t, e)| panic!("deleting {t}: {e}"));
    }
    // The deletion completes in the background: creating fails until it has.
    wait_until("the topic created again", Duration::from_secs(60), || async {
        let topic = NewTopic::new(&env.topic, env.partitions, TopicReplication::Fixed(1));
        let created = admin.create_topics([&topic], &opts).await.ok()?;
        created.into_iter().all(|r| r.is_ok()).then_some(())
    })
    .await;
}

async fn wait_refused(aurore: &Aurore) {
    let health = wait_until("the partition refused, /health down", Duration::from_secs(60), || async {
        let (code, body) = aurore.get("/health")?;
        let h: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 503 && h["kafka"]["state"] == "refused").then_some(h)
    })
    .await;
    assert_eq!(health["status"], "down");
    assert_eq!(Metrics::scrape(aurore).unwrap().get("kafka_partitions_refused", &[]), Some(1.0));
    let log = aurore.log_text();
    // Told by Kafka's topic id (the broker has them since 2.8), else by the offsets.
    let told = log.contains("Kafka's topic id changed") || log.contains("lies beyond the partition's log end");
    assert!(told && log.contains("aurore archive-topic --topic"), "{log}");
}

/// `aurore archive-topic`, then the refused partition is read again from the new log's start.
async fn archive_and_resume(env: &Env, aurore: &Aurore, old_rows: i64, new_rows: i64) {
    let archive_as = format!("{}.old", env.topic);
    let out = Command::new(aurore_bin())
        .args(["archive-topic", "--topic", &env.topic, "--as", &archive_as])
        .env("DATABASE_URL", &env.database_url)
        .env("AURORE_LOG_FORMAT", "text")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("archived topic {} as {archive_as}: {old_rows} events", env.topic)), "{stdout}");
    env.wait_persisted(old_rows + new_rows, Duration::from_secs(60)).await;
    assert_eq!(count(env, "events", &archive_as).await, old_rows, "the old topic's rows, kept aside");
    assert_eq!(count(env, "events", &env.topic).await, new_rows, "the new topic's rows, all of them");
    assert_eq!(stored_position(env).await, [(0, new_rows)]);
    wait_until("/health healthy again", Duration::from_secs(30), || async { (aurore.get("/health")?.0 == 200).then_some(()) })
        .await;
    assert_eq!(Metrics::scrape(aurore).unwrap().get("kafka_partitions_refused", &[]), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_deleted_before_they_were_stored_are_counted_and_named() {
    let env = Env::new("retention_gap", 1, &[]).await;
    let producer = env.producer(&[]);
    env.produce(&producer, events(1_000, 1)).await;
    let mut aurore = env.spawn_aurore(&[]);
    env.wait_persisted(1_000, Duration::from_secs(60)).await;
    aurore.signal("TERM");
    assert_eq!(aurore.wait_exit(Duration::from_secs(30)).await, Some(0));
    // While aurore is away, 2,000 more arrive and Kafka deletes everything below 2,500.
    env.produce(&producer, events(2_000, 1)).await;
    let mut upto = TopicPartitionList::new();
    upto.add_partition_offset(&env.topic, 0, Offset::Offset(2_500)).unwrap();
    admin(&env).delete_records(&upto, &AdminOptions::new()).await.expect("delete records");

    let aurore = env.spawn_aurore(&[]);
    env.wait_persisted(1_500, Duration::from_secs(60)).await;
    let lost = wait_until("the lost offsets counted", Duration::from_secs(30), || async {
        Metrics::scrape(&aurore)?.get("kafka_offsets_lost_total", &[("topic", &env.topic), ("partition", "0")])
    })
    .await;
    assert_eq!(lost, 1_500.0);
    assert_eq!(stored_position(&env).await, [(0, 3_000)]);
    let log = aurore.log_text();
    let warn = log.lines().find(|l| l.contains("deleted by Kafka (retention)")).unwrap_or_else(|| panic!("{log}"));
    assert!(warn.contains("\"from\":1000") && warn.contains("\"to\":2499") && warn.contains("\"lost\":1500"), "{warn}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_across_a_restart_is_refused_until_archived() {
    let env = Env::new("recreated_restart", 1, &[]).await;
    env.produce(&env.producer(&[]), events(1_000, 1)).await;
    let mut aurore = env.spawn_aurore(&[]);
    env.wait_persisted(1_000, Duration::from_secs(60)).await;
    aurore.signal("TERM");
    assert_eq!(aurore.wait_exit(Duration::from_secs(30)).await, Some(0));
    recreate(&env).await;
    env.produce(&env.producer(&[]), events(10, 1)).await;

    let aurore = env.spawn_aurore(&[]);
    wait_refused(&aurore).await;
    assert_eq!(count(&env, "events", &env.topic).await, 1_000, "none of the new topic's messages skipped or stored");
    assert_eq!(stored_position(&env).await, [(0, 1_000)]);
    archive_and_resume(&env, &aurore, 1_000, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_while_running_is_refused_until_archived() {
    let env = Env::new("recreated_live", 1, &[]).await;
    env.produce(&env.producer(&[]), events(1_000, 1)).await;
    let aurore = env.spawn_aurore(&["--kafka-config", "topic.metadata.refresh.interval.ms=2000"]);
    env.wait_persisted(1_000, Duration::from_secs(60)).await;
    recreate(&env).await;
    env.produce(&env.producer(&[]), events(10, 1)).await;
    wait_refused(&aurore).await;
    assert_eq!(count(&env, "events", &env.topic).await, 1_000);
    archive_and_resume(&env, &aurore, 1_000, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_and_grown_past_the_stored_position_is_refused_by_its_id() {
    let env = Env::new("recreated_grown", 1, &[]).await;
    env.produce(&env.producer(&[]), events(100, 1)).await;
    let mut aurore = env.spawn_aurore(&[]);
    env.wait_persisted(100, Duration::from_secs(60)).await;
    aurore.signal("TERM");
    assert_eq!(aurore.wait_exit(Duration::from_secs(30)).await, Some(0));
    recreate(&env).await;
    // The new log grows past the stored 100: its offsets alone look like a continuation.
    env.produce(&env.producer(&[]), events(1_000, 1)).await;

    let aurore = env.spawn_aurore(&[]);
    wait_refused(&aurore).await;
    assert!(aurore.log_text().contains("Kafka's topic id changed"));
    assert_eq!(count(&env, "events", &env.topic).await, 100, "none of the new topic's messages skipped or stored");
    archive_and_resume(&env, &aurore, 100, 1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_again_without_a_rebalance_is_refused_by_its_id() {
    let env = Env::new("recreated_frozen", 1, &[]).await;
    env.produce(&env.producer(&[]), events(100, 1)).await;
    let aurore = env.spawn_aurore(&[]);
    env.wait_persisted(100, Duration::from_secs(60)).await;
    aurore.wait_ready(Duration::from_secs(30)).await;
    // Frozen (SIGSTOP) while the topic is created again and grows past the stored position: on
    // waking, librdkafka goes on fetching at 100 with no rebalance, no gap and no replay.
    aurore.signal("STOP");
    recreate(&env).await;
    env.produce(&env.producer(&[]), events(1_000, 1)).await;
    aurore.signal("CONT");
    wait_refused(&aurore).await;
    assert!(aurore.log_text().contains("Kafka's topic id changed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_a_topic_with_nothing_stored_is_refused() {
    let env = Env::new("archive_nothing", 1, &[]).await;
    let run = |args: &[&str]| {
        Command::new(aurore_bin())
            .args(args)
            .env("DATABASE_URL", &env.database_url)
            .env("AURORE_LOG_FORMAT", "text")
            .output()
            .unwrap()
    };
    let out = run(&["archive-topic", "--topic", "no-such-topic"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no aurore tables"), "an empty database: {err}");
    assert!(run(&["migrate"]).status.success());
    let out = run(&["archive-topic", "--topic", "no-such-topic"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nothing is stored for topic \"no-such-topic\": check --topic"), "{err}");
}
