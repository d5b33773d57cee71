//! The Kafka broker restarts mid-stream: aurore reconnects by itself, and delivery stays
//! exactly once. (Its own test binary: it restarts the shared broker.)

use std::time::Duration;

use integration_tests::{Env, event, stack_command, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_keeps_exactly_once() {
    const TOTAL: u64 = 60_000;
    let env = Env::new("broker_restart", 6, &[]).await;
    let mut aurore = env.spawn_aurore(&[]);
    let producer = env.producer(&[("message.timeout.ms", "180000")]);
    // The idempotent producer retries across the restart.
    let stream = (0..TOTAL).map(|i| ((i % 6) as i32, event("svc", "t", i))).collect();
    let produce = env.produce_stream(&producer, stream, 5_000, Duration::from_millis(500));
    wait_until("15,000 persisted", Duration::from_secs(120), || async { (env.persisted().await >= 15_000).then_some(()) }).await;
    tokio::task::block_in_place(|| stack_command(&env, &["restart", "kafka"]));
    produce.await.unwrap();
    env.wait_persisted(TOTAL as i64, Duration::from_secs(240)).await;
    assert_eq!(env.assert_exactly_once().await, (TOTAL as i64, 0));
    assert!(aurore.child.try_wait().unwrap().is_none(), "aurore kept running through the restart");
    let (code, body) = aurore.get("/health").unwrap();
    assert_eq!(code, 200, "{body}");
    aurore.signal("TERM");
    assert_eq!(aurore.wait_exit(Duration::from_secs(40)).await, Some(0));
}
