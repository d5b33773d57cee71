//! The Kafka broker restarts five times mid-stream: each time aurore reconnects and rejoins by
//! itself (or, if it stays out of its group while the broker answers, recreates its consumer),
//! consumption resumes, and delivery stays exactly once. (Its own test binary: it restarts the
//! shared broker.)

use std::time::{Duration, Instant};

use integration_tests::{Env, Metrics, event, stack_command, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_broker_restarts_mid_stream_keep_exactly_once() {
    const TOTAL: u64 = 150_000;
    let env = Env::new("broker_restart", 6, &[]).await;
    // The shortest liveness bound: a rejoin slower than 10 s with the broker answering would
    // recreate the consumer (counted below), which must keep every guarantee too.
    let mut aurore = env.spawn_aurore(&["--group-liveness-timeout", "10s"]);
    let producer = env.producer(&[("message.timeout.ms", "300000")]);
    // The idempotent producer retries across the restarts.
    let stream = (0..TOTAL).map(|i| ((i % 6) as i32, event("svc", "t", i))).collect();
    let produce = env.produce_stream(&producer, stream, 2_000, Duration::from_millis(200));
    let mut mark = 10_000;
    for round in 1..=5 {
        wait_until(&format!("{mark} persisted"), Duration::from_secs(180), || async {
            (env.persisted().await >= mark).then_some(())
        })
        .await;
        tokio::task::block_in_place(|| stack_command(&env, &["restart", "kafka"]));
        let back = Instant::now();
        let before = env.persisted().await;
        let now = wait_until(&format!("round {round}: new rows after the restart"), Duration::from_secs(120), || async {
            let n = env.persisted().await;
            (n > before).then_some(n)
        })
        .await;
        eprintln!("[broker_restart] round {round}: broker back, new rows {} ms later", back.elapsed().as_millis());
        mark = now + 10_000;
    }
    produce.await.unwrap();
    env.wait_persisted(TOTAL as i64, Duration::from_secs(300)).await;
    assert_eq!(env.assert_exactly_once().await, (TOTAL as i64, 0));
    assert!(aurore.child.try_wait().unwrap().is_none(), "aurore kept running through the restarts");
    let m = Metrics::scrape(&aurore).unwrap();
    eprintln!("[broker_restart] consumers recreated: {:?}", m.get("kafka_consumer_recreated_total", &[]));
    let (code, body) = aurore.get("/health").unwrap();
    assert_eq!(code, 200, "{body}");
    aurore.signal("TERM");
    assert_eq!(aurore.wait_exit(Duration::from_secs(40)).await, Some(0));
}
