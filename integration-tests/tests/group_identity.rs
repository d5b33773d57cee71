//! Where a partition resumes is the partition's, not the group's: a group renamed between
//! restarts resumes where the data stands (no message stored twice, none dead-lettered as a
//! duplicate, no crash on an earlier dead letter), and two groups running at once on one
//! database end exactly once.

use std::time::Duration;

use integration_tests::{Env, Metrics, events};

/// `n` valid events over the partitions, then one message that is not JSON on partition 0.
fn with_a_dead_letter(n: u64, partitions: i32) -> Vec<(i32, Option<Vec<u8>>)> {
    let mut all = events(n, partitions);
    all.push((0, Some(b"not json".to_vec())));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_renamed_between_restarts_resumes_where_the_data_stands() {
    let env = Env::new("group_rename", 3, &[]).await;
    let producer = env.producer(&[]);
    env.produce(&producer, with_a_dead_letter(10_000, 3)).await;
    let mut first = env.spawn_aurore(&[]);
    env.wait_persisted(10_001, Duration::from_secs(120)).await;
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(60)).await, Some(0), "{}", first.log_text());

    env.produce(&producer, events(5_000, 3)).await;
    let renamed = env.other_group("renamed");
    let second = renamed.spawn_aurore(&[]);
    renamed.wait_persisted(15_001, Duration::from_secs(120)).await;
    second.wait_ready(Duration::from_secs(30)).await;
    // The renamed group commits to Kafka, and consumer_offsets says it moved the partitions last.
    assert_eq!(renamed.assert_exactly_once().await, (15_000, 1));
    let m = Metrics::scrape(&second).unwrap();
    assert_eq!(m.get("events_processed_total", &[]), Some(5_000.0), "only the new messages were stored");
    assert_eq!(m.get("events_dead_lettered_total", &[("reason", "postgres_rejected")]), Some(0.0));
    let writers: Vec<String> = env
        .db()
        .await
        .query("SELECT DISTINCT group_id FROM consumer_offsets WHERE topic = $1", &[&env.topic])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(writers, std::slice::from_ref(&renamed.group));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_at_once_on_one_database_store_each_message_once() {
    const TOTAL: u64 = 40_000;
    let env = Env::new("two_groups", 4, &[]).await;
    let other = env.other_group("second");
    let a = env.spawn_aurore(&["--batch-size", "500", "--linger", "20ms"]);
    let b = other.spawn_aurore(&["--batch-size", "500", "--linger", "20ms"]);
    a.wait_ready(Duration::from_secs(60)).await;
    b.wait_ready(Duration::from_secs(60)).await;
    let producer = env.producer(&[]);
    let all: Vec<(i32, Vec<u8>)> = with_a_dead_letter(TOTAL, 4).into_iter().map(|(p, v)| (p, v.unwrap())).collect();
    env.produce_stream(&producer, all, 2_000, Duration::from_millis(100)).await.unwrap();
    env.wait_persisted(TOTAL as i64 + 1, Duration::from_secs(180)).await;
    // Both stored some, both stayed up, and both groups' Kafka offsets end at the high
    // watermarks (the one that lost the last fence follows what PostgreSQL holds).
    assert_eq!(env.assert_exactly_once().await, (TOTAL as i64, 1));
    assert_eq!(other.assert_exactly_once().await, (TOTAL as i64, 1));
    let (ma, mb) = (Metrics::scrape(&a).unwrap(), Metrics::scrape(&b).unwrap());
    let stored = |m: &Metrics| m.get("events_processed_total", &[]).unwrap();
    assert_eq!(stored(&ma) + stored(&mb), TOTAL as f64, "each event stored by exactly one of them");
    for m in [&ma, &mb] {
        assert_eq!(m.get("events_dead_lettered_total", &[("reason", "postgres_rejected")]), Some(0.0));
    }
    eprintln!(
        "[two_groups] stored {} and {}; fence conflicts {:?} and {:?}",
        stored(&ma),
        stored(&mb),
        ma.get("offset_fence_conflicts_total", &[]),
        mb.get("offset_fence_conflicts_total", &[])
    );
}

/// Migration V5 on a database where two groups each kept their own rows: one row per partition
/// is left, the furthest, and the key is the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_v5_keeps_the_furthest_row_of_each_partition() {
    let env = Env::new("offsets_v5", 1, &[]).await;
    let db = env.db().await;
    db.batch_execute(include_str!("../../migrations/V2__consumer_offsets.sql")).await.unwrap();
    db.batch_execute(
        "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES
           ('old', 't', 0, 100), ('new', 't', 0, 40),
           ('old', 't', 1, 7),   ('new', 't', 1, 90),
           ('b', 't', 2, 5),     ('a', 't', 2, 5),
           ('old', 'u', 0, 3)",
    )
    .await
    .unwrap();
    db.batch_execute(include_str!("../../migrations/V5__consumer_offsets_per_partition.sql")).await.unwrap();
    let rows: Vec<(String, String, i32, i64)> = db
        .query("SELECT group_id, topic, partition, next_offset FROM consumer_offsets ORDER BY topic, partition", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let want = [("old", "t", 0, 100), ("new", "t", 1, 90), ("a", "t", 2, 5), ("old", "u", 0, 3)];
    assert_eq!(rows, want.map(|(g, t, p, n)| (g.to_owned(), t.to_owned(), p, n)));
    let again =
        db.execute("INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('x', 't', 0, 1)", &[]).await;
    assert!(again.is_err(), "one row per partition, whatever the group");
}
