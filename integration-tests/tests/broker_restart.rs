//! The Kafka broker restarts five times while aurore drains a backlog: each time aurore
//! reconnects and rejoins by itself (or, if it stays out of its group while the broker answers,
//! recreates its consumer), consumption resumes, and delivery stays exactly once. (Its own test
//! binary: it restarts the shared broker.)

use std::time::{Duration, Instant};

use integration_tests::{Env, Metrics, events, fast_group, stack_command};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_broker_restarts_mid_stream_keep_exactly_once() {
    const BACKLOG: i64 = 20_000;
    const AFTER: i64 = 5_000;
    let env = Env::new("broker_restart", 6, &[]).await;
    // A short liveness bound (it must outlast the 6 s session timeout): a rejoin slower than
    // 10 s with the broker answering recreates the consumer (counted below), which must keep
    // every guarantee too, and must not keep the group from settling.
    let mut args = vec!["--group-liveness-timeout", "10s"];
    args.extend(fast_group("classic"));
    let mut aurore = env.spawn_aurore(&args);
    let mut total = 0;
    for round in 1..=5 {
        // A backlog, then the restart while aurore drains it. Each producer is made afresh and
        // delivers everything before the restart (a producer kept across restarts was seen to
        // stall here, which is the test's problem, not aurore's).
        env.produce(&env.producer(&[]), events(BACKLOG as u64, 6)).await;
        total += BACKLOG;
        tokio::task::block_in_place(|| stack_command(&env, &["restart", "kafka"]));
        let back = Instant::now();
        env.produce(&env.producer(&[("message.timeout.ms", "120000")]), events(AFTER as u64, 6)).await;
        total += AFTER;
        env.wait_persisted(total, Duration::from_secs(180)).await;
        eprintln!(
            "[broker_restart] round {round}: all {total} stored {} ms after the broker was back",
            back.elapsed().as_millis()
        );
    }
    assert_eq!(env.assert_exactly_once().await, (total, 0));
    assert!(aurore.child.try_wait().unwrap().is_none(), "aurore kept running through the restarts");
    let m = Metrics::scrape(&aurore).unwrap();
    eprintln!("[broker_restart] consumers recreated: {:?}", m.get("kafka_consumer_recreated_total", &[]));
    let (code, body) = aurore.get("/health").unwrap();
    assert_eq!(code, 200, "{body}");
    aurore.signal("TERM");
    assert_eq!(aurore.wait_exit(Duration::from_secs(40)).await, Some(0));
}
