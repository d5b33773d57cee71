//! SIGKILL at any moment loses and duplicates nothing: aurore is killed several times while
//! 200,000 events flow, and restarted each time; under both consumer group protocols.

use std::time::Duration;

use integration_tests::{Env, event, fast_group, wait_until};

#[tokio::test]
async fn sigkill_at_several_points_loses_and_duplicates_nothing() {
    crashes("classic").await;
}

#[tokio::test]
async fn sigkill_at_several_points_loses_and_duplicates_nothing_kip848() {
    crashes("consumer").await;
}

async fn crashes(protocol: &str) {
    const TOTAL: u64 = 200_000;
    let env = Env::new(&format!("crash_{protocol}"), 6, &[]).await;
    let producer = env.producer(&[]);
    // Produce while aurore runs: the stream keeps flowing across the kills.
    let stream = (0..TOTAL).map(|i| ((i % 6) as i32, event(&format!("svc{}", i % 5), "payment.settled", i))).collect();
    let produce = env.produce_stream(&producer, stream, 10_000, Duration::from_millis(150));
    // Kill at several points: early, mid-stream, while batches are in flight.
    for (round, kill_at) in [5_000i64, 40_000, 90_000, 140_000].into_iter().enumerate() {
        let args: Vec<&str> = ["--batch-size", "2000"].into_iter().chain(fast_group(protocol)).collect();
        let mut aurore = env.spawn_aurore(&args);
        wait_until(&format!("round {round}: {kill_at} persisted"), Duration::from_secs(180), || async {
            (env.persisted().await >= kill_at).then_some(())
        })
        .await;
        aurore.kill9();
        eprintln!("round {round}: killed at {} persisted", env.persisted().await);
    }
    produce.await.unwrap();
    let _aurore = env.spawn_aurore(&fast_group(protocol));
    env.wait_persisted(TOTAL as i64, Duration::from_secs(300)).await;
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!((rows, dead), (TOTAL as i64, 0));
    // The producer's own payload index: every one of them exactly once.
    let db = env.db().await;
    let r = db
        .query_one(
            "SELECT count(DISTINCT (payload->>'i')::int8), min((payload->>'i')::int8), max((payload->>'i')::int8) FROM events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)), (TOTAL as i64, 0, TOTAL as i64 - 1));
}
