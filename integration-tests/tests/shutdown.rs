//! SIGTERM mid-stream: aurore flushes, commits and exits 0; a restart continues with no gap
//! and no duplicate.

use std::time::Duration;

use integration_tests::{Env, events, wait_until};

#[tokio::test]
async fn sigterm_flushes_and_exits_zero_and_a_restart_continues() {
    let env = Env::new("sigterm", 6, &[]).await;
    let producer = env.producer(&[]);
    env.produce(&producer, events(60_000, 6)).await;
    // Small batches and a long linger: plenty is buffered, not yet persisted, at SIGTERM.
    let mut first = env.spawn_aurore(&["--batch-size", "500", "--linger", "5s"]);
    wait_until("some rows persisted", Duration::from_secs(120), || async { (env.persisted().await >= 10_000).then_some(()) })
        .await;
    first.signal("TERM");
    let code = first.wait_exit(Duration::from_secs(40)).await;
    assert_eq!(code, Some(0), "exit code after SIGTERM; log:\n{}", first.log_text());
    let log = first.log_text();
    assert!(log.contains("stopped cleanly"), "{log}");
    // Kafka confirmed the final commit of every partition (rust-rdkafka's own async commit
    // reported no result, and every stop waited 5 s for one).
    assert!(log.lines().any(|l| l.contains("consumer closed") && l.contains("\"unconfirmed\":0")), "{log}");
    // What it persisted before leaving is committed in Kafka too.
    let stored: i64 =
        env.db().await.query_one("SELECT coalesce(sum(next_offset), 0)::int8 FROM consumer_offsets", &[]).await.unwrap().get(0);
    let committed: i64 = env.kafka_committed().values().filter(|o| **o > 0).sum();
    assert_eq!(committed, stored, "Kafka's committed offsets equal consumer_offsets after a clean stop");
    assert_eq!(env.persisted().await, stored, "nothing persisted past the stored offsets");
    let _second = env.spawn_aurore(&[]);
    env.wait_persisted(60_000, Duration::from_secs(180)).await;
    assert_eq!(env.assert_exactly_once().await, (60_000, 0));
}

/// What is buffered at SIGTERM is flushed, not dropped or left for a replay: with a 60 s
/// linger nothing is persisted until the signal, and everything is after it.
#[tokio::test]
async fn sigterm_flushes_the_buffer() {
    let env = Env::new("sigterm_flush", 2, &[]).await;
    env.produce(&env.producer(&[]), events(3_000, 2)).await;
    let mut aurore = env.spawn_aurore(&["--batch-size", "5000", "--linger", "60s"]);
    wait_until("3,000 events buffered", Duration::from_secs(60), || async {
        let m = integration_tests::Metrics::scrape(&aurore)?;
        (m.get("buffer_size", &[]) == Some(3_000.0)).then_some(())
    })
    .await;
    assert_eq!(env.persisted().await, 0, "nothing persisted before the linger or the signal");
    aurore.signal("TERM");
    assert_eq!(aurore.wait_exit(Duration::from_secs(40)).await, Some(0), "{}", aurore.log_text());
    assert_eq!(env.assert_exactly_once().await, (3_000, 0));
}
