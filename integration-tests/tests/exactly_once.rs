//! The core guarantee: every message becomes exactly one row (or dead letter), and both
//! consumer_offsets and Kafka's committed offsets end at the high watermarks.

use std::time::Duration;

use integration_tests::{Env, Metrics, events};

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

/// A backlog on the partitions of one flush worker only (0 and 2 start at the same worker,
/// `Batcher::route`): partitions move to the idle worker while batches of them are still at
/// the first, and every message is still stored exactly once, with no batch fenced on the way
/// (a moved partition's batch that began before its last batch at the first worker ended
/// would find `consumer_offsets` short of its fence).
#[tokio::test]
async fn a_backlog_on_one_workers_partitions_moves_some_to_the_other_exactly_once() {
    let env = Env::new("moves", 4, &[]).await;
    let producer = env.producer(&[]);
    let backlog: Vec<_> = events(60_000, 2).into_iter().map(|(p, v)| (p * 2, v)).collect();
    env.produce(&producer, backlog).await;
    let aurore = env.spawn_aurore(&["--batch-size", "500"]);
    env.wait_persisted(60_000, Duration::from_secs(300)).await;
    assert_eq!(env.assert_exactly_once().await, (60_000, 0));
    let m = Metrics::scrape(&aurore).expect("metrics");
    let moves = m.get("worker_partition_moves_total", &[]).unwrap_or(0.0);
    let fenced = m.get("offset_fence_conflicts_total", &[]).unwrap_or(0.0);
    assert!(moves >= 1.0, "a partition moved to the idle worker: worker_partition_moves_total {moves}");
    assert_eq!(fenced, 0.0, "no batch fenced: offset_fence_conflicts_total {fenced}\n{}", aurore.log_text());
    drop(aurore);
}
