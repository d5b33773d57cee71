//! Several instances share one group, joining and leaving mid-stream: still exactly once, under
//! both consumer group protocols. The stream is uneven over the partitions, the even ones (which
//! start at the same flush worker) taking five events in eight, so partitions also move between
//! an instance's workers while the group churns (`Batcher::route`).

use std::time::Duration;

use integration_tests::{Env, event, fast_group, wait_until};

#[tokio::test]
async fn two_then_three_instances_joining_and_leaving_stay_exactly_once() {
    churn("classic").await;
}

#[tokio::test]
async fn two_then_three_instances_joining_and_leaving_stay_exactly_once_kip848() {
    churn("consumer").await;
}

async fn churn(protocol: &str) {
    const TOTAL: u64 = 120_000;
    let env = Env::new(&format!("group_{protocol}"), 6, &[]).await;
    let producer = env.producer(&[]);
    const PARTITIONS: [i32; 8] = [0, 0, 2, 2, 4, 1, 3, 5];
    let stream = (0..TOTAL).map(|i| (PARTITIONS[(i % 8) as usize], event("svc", "t", i))).collect();
    let produce = env.produce_stream(&producer, stream, 10_000, Duration::from_millis(400));
    let args: Vec<&str> = ["--batch-size", "1000"].into_iter().chain(fast_group(protocol)).collect();
    let a = env.spawn_aurore(&args);
    let b = env.spawn_aurore(&args);
    let reached = |n: i64| {
        let env = &env;
        async move {
            wait_until(&format!("{n} persisted"), Duration::from_secs(180), || async {
                (env.persisted().await >= n).then_some(())
            })
            .await
        }
    };
    reached(20_000).await;
    // Both share the work.
    for x in [&a, &b] {
        wait_until("each instance to own partitions", Duration::from_secs(60), || async {
            let m = x.get("/metrics/prometheus")?.1;
            m.lines().any(|l| l.starts_with("kafka_assigned_partitions ") && !l.ends_with(" 0")).then_some(())
        })
        .await;
    }
    let c = env.spawn_aurore(&args);
    reached(50_000).await;
    // A graceful leave and a crash, mid-stream.
    a.signal("TERM");
    reached(70_000).await;
    let mut b = b;
    b.kill9();
    reached(90_000).await;
    let d = env.spawn_aurore(&args);
    produce.await.unwrap();
    env.wait_persisted(TOTAL as i64, Duration::from_secs(300)).await;
    let (rows, dead) = env.assert_exactly_once().await;
    assert_eq!((rows, dead), (TOTAL as i64, 0));
    drop((c, d));
}
