//! The stack, proven from Rust: a message through the real broker, a row through PostgreSQL.

use std::time::Duration;

use integration_tests::{Env, wait_until};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

#[tokio::test]
async fn a_message_round_trips_through_kafka() {
    let env = Env::new("kafka_roundtrip", 1, &[]).await;
    let producer = env.producer(&[]);
    let sent = env.produce(&producer, vec![(0, Some(b"hello aurore".to_vec()))]).await;
    assert_eq!(sent, vec![(0, 0)]);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.stack.brokers)
        .set("group.id", &env.group)
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&env.topic]).unwrap();
    let got = wait_until("the message back", Duration::from_secs(30), || async {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => Some(m.payload().map(<[u8]>::to_vec)),
            _ => None,
        }
    })
    .await;
    assert_eq!(got.as_deref(), Some(&b"hello aurore"[..]));
}

#[tokio::test]
async fn a_row_round_trips_through_postgres() {
    let env = Env::new("pg_roundtrip", 1, &[]).await;
    let db = env.db().await;
    db.batch_execute("CREATE TABLE t (id int PRIMARY KEY, doc jsonb NOT NULL)").await.unwrap();
    let doc = serde_json::json!({"a": [1, 2, 3]});
    db.execute("INSERT INTO t VALUES ($1, $2)", &[&7i32, &doc]).await.unwrap();
    let row = db.query_one("SELECT id, doc FROM t", &[]).await.unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, serde_json::Value>(1)), (7, doc));
    let ext: i64 =
        db.query_one("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'", &[]).await.unwrap().get(0);
    assert_eq!(ext, 1, "pg_stat_statements is installed in new databases");
}
