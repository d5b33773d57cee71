//! Faults that are the operator's to fix: aurore says so clearly, and neither crash-loops nor
//! loops silently.

use std::time::Duration;

use integration_tests::{Env, aurore_bin, event, wait_until};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_reported_then_consumed_once_created() {
    let env = Env::new("missing_topic", 1, &[]).await;
    let missing = format!("{}-late", env.topic);
    let aurore = env.spawn_aurore(&["--topics", &missing]);
    let health = wait_until("/health to report the missing topic", Duration::from_secs(60), || async {
        let (code, body) = aurore.get("/health")?;
        let h: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 503 && h["kafka"]["state"] == "topic_missing").then_some(h)
    })
    .await;
    assert_eq!(health["status"], "down");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut aurore = aurore;
    assert!(aurore.child.try_wait().unwrap().is_none(), "a missing topic must not stop aurore");
    assert!(aurore.log_text().contains("topic does not exist"), "{}", aurore.log_text());

    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &env.stack.brokers).create().unwrap();
    admin.create_topics([&NewTopic::new(&missing, 1, TopicReplication::Fixed(1))], &AdminOptions::new()).await.unwrap();
    let producer = env.producer(&[]);
    for i in 0..100 {
        let v = event("late", "t", i);
        producer
            .send(rdkafka::producer::FutureRecord::<(), [u8]>::to(&missing).partition(0).payload(&v), Duration::from_secs(30))
            .await
            .unwrap();
    }
    env.wait_persisted(100, Duration::from_secs(90)).await;
    wait_until("/health healthy again", Duration::from_secs(30), || async {
        let (code, body) = aurore.get("/health")?;
        (code == 200 && body.contains("\"healthy\"")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_insert_is_fatal_with_a_clear_error() {
    let env = Env::new("no_insert", 1, &[]).await;
    assert!(
        std::process::Command::new(aurore_bin())
            .arg("migrate")
            .env("DATABASE_URL", &env.database_url)
            .status()
            .unwrap()
            .success()
    );
    let (role, url) =
        env.restricted_role("it_ro", "ro", &["consumer_offsets", "dead_letters", "event_counts", "dead_letter_counts"]).await;
    let db = env.db().await;
    env.produce(&env.producer(&[]), (0..10).map(|i| (0, Some(event("s", "t", i)))).collect()).await;
    let mut aurore = integration_tests::Aurore::spawn_with(&env, &["--no-migrate"], integration_tests::free_port(), &url);
    let code = aurore.wait_exit(Duration::from_secs(60)).await;
    let log = aurore.log_text();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("permission denied for table events"), "{log}");
    assert!(!log.contains(":ro@"), "the password must not be logged: {log}");
    let rows: i64 =
        db.query_one("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM consumer_offsets)", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0, "nothing committed past the error");
    assert!(env.kafka_committed().values().all(|o| *o < 0), "no Kafka offset committed");
    env.drop_role(&role).await;
}

/// `--no-migrate` on a database aurore never migrated: one line that says to migrate (not the
/// EXECUTE hint of the durability probe, which is what it used to say), exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_migrate_on_an_empty_database_says_to_migrate() {
    let env = Env::new("no_schema", 1, &[]).await;
    let mut aurore =
        integration_tests::Aurore::spawn_with(&env, &["--no-migrate"], integration_tests::free_port(), &env.database_url);
    let code = aurore.wait_exit(Duration::from_secs(60)).await;
    let log = aurore.log_text();
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("run `aurore migrate` (or start without --no-migrate)"), "{log}");
    assert!(!log.contains("EXECUTE"), "{log}");
}
