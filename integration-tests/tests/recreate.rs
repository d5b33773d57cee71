//! Recreating the Kafka consumer mid-stream, the path a consumer stuck out of its group takes
//! (`--group-liveness-timeout`), triggered here by SIGHUP: the new consumer takes over the
//! pipeline, consumption goes on, and delivery stays exactly once. Under both group protocols.

use std::time::Duration;

use integration_tests::{Env, Metrics, event, fast_group, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_consumer_goes_on_exactly_once() {
    recreated("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_consumer_goes_on_exactly_once_kip848() {
    recreated("consumer").await;
}

async fn recreated(protocol: &str) {
    const TOTAL: u64 = 60_000;
    let env = Env::new(&format!("recreate_{protocol}"), 4, &[]).await;
    let aurore = env.spawn_aurore(&fast_group(protocol));
    let producer = env.producer(&[]);
    let stream = (0..TOTAL).map(|i| ((i % 4) as i32, event("svc", "t", i))).collect();
    let produce = env.produce_stream(&producer, stream, 2_000, Duration::from_millis(100));
    for round in 1..=2 {
        env.wait_persisted(round * 15_000, Duration::from_secs(120)).await;
        aurore.signal("HUP");
        wait_until(&format!("consumer recreated ({round})"), Duration::from_secs(30), || async {
            (Metrics::scrape(&aurore)?.get("kafka_consumer_recreated_total", &[])? == round as f64).then_some(())
        })
        .await;
        let before = env.persisted().await;
        wait_until("new rows from the new consumer", Duration::from_secs(60), || async {
            (env.persisted().await > before).then_some(())
        })
        .await;
    }
    produce.await.unwrap();
    env.wait_persisted(TOTAL as i64, Duration::from_secs(180)).await;
    assert_eq!(env.assert_exactly_once().await, (TOTAL as i64, 0));
    let (code, body) = aurore.get("/health").unwrap();
    assert_eq!(code, 200, "{body}");
}
