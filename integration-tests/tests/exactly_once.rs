//! The core guarantee: every message becomes exactly one row (or dead letter), and both
//! consumer_offsets and Kafka's committed offsets end at the high watermarks.

use std::time::Duration;

use integration_tests::{Env, events};

#[tokio::test]
async fn one_hundred_thousand_events_give_exactly_one_hundred_thousand_rows() {
    let env = Env::new("exactly_once", 6, &[]).await;
    let producer = env.producer(&[]);
    env.produce(&producer, events(100_000, 6)).await;
    let aurore = env.spawn_aurore(&[]);
    env.wait_persisted(100_000, Duration::from_secs(300)).await;
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!((rows, dead), (100_000, 0));
    let db = env.db().await;
    let per_service: Vec<(String, i64)> = db
        .query("SELECT service, sum(events)::int8 FROM event_counts GROUP BY service ORDER BY service", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(per_service, vec![("svc0".into(), 33_334), ("svc1".into(), 33_333), ("svc2".into(), 33_333)]);
    let payload: serde_json::Value =
        db.query_one("SELECT payload FROM events WHERE partition = 0 AND \"offset\" = 0", &[]).await.unwrap().get(0);
    assert_eq!(payload, serde_json::json!({"i": 0, "tags": ["a", "b"], "nested": {"ok": true}}));
    // Every partition's messages came through the burst queue (src/kafka/queue.rs).
    let log = aurore.log_text();
    assert!(log.contains("partitions assigned") && !log.contains("not forwarded to the burst queue"), "{log}");
    drop(aurore);
}

#[tokio::test]
async fn a_zstd_compressed_topic_is_read() {
    let env = Env::new("zstd", 3, &[("compression.type", "zstd")]).await;
    let producer = env.producer(&[("compression.type", "zstd")]);
    env.produce(&producer, events(3_000, 3)).await;
    let _aurore = env.spawn_aurore(&[]);
    env.wait_persisted(3_000, Duration::from_secs(120)).await;
    assert_eq!(env.assert_exactly_once().await, (3_000, 0));
}
