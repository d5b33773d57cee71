//! Transactional topics: each transaction ends with a commit or abort marker, an offset no
//! consumer ever sees, and aborted messages are never handed out (`isolation.level`
//! read_committed). Once everything before a marker is stored, the committed offsets (Kafka's and
//! `consumer_offsets`) move past it and the lag reads 0; also after a restart, and when only
//! an aborted transaction came since.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::{Aurore, Env, Metrics, event, wait_until};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn transactional_producer(env: &Env) -> BaseProducer {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.stack.brokers)
        .set("transactional.id", format!("{}-tx", env.topic))
        .create()
        .expect("transactional producer");
    p.init_transactions(Duration::from_secs(30)).expect("init_transactions");
    p
}

/// One transaction of `messages` (partition, i), committed or aborted.
fn transaction(p: &BaseProducer, env: &Env, messages: &[(i32, u64)], commit: bool) {
    p.begin_transaction().unwrap();
    for &(partition, i) in messages {
        let value = event("tx", if commit { "committed" } else { "aborted" }, i);
        p.send(BaseRecord::<(), [u8]>::to(&env.topic).partition(partition).payload(&value)).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    if commit { p.commit_transaction(Duration::from_secs(30)) } else { p.abort_transaction(Duration::from_secs(30)) }.unwrap();
}

/// Kafka's committed offsets and consumer_offsets both at the high watermarks, and the lag 0.
async fn caught_up(env: &Env, aurore: &Aurore) -> BTreeMap<i32, i64> {
    let hw = env.high_watermarks();
    wait_until("committed offsets at the high watermarks (past the markers), lag 0", Duration::from_secs(60), || async {
        let stored: BTreeMap<i32, i64> = env
            .db()
            .await
            .query("SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1", &[&env.topic])
            .await
            .ok()?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let lag = Metrics::scrape(aurore)?.get("kafka_consumer_lag_messages", &[])?;
        (stored == hw && env.kafka_committed() == hw && lag == 0.0).then_some(())
    })
    .await;
    hw
}

async fn stored(env: &Env) -> Vec<(i32, String)> {
    let db = env.db().await;
    let rows = db.query("SELECT partition, event_type FROM events ORDER BY partition, \"offset\"", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_move_past_transaction_markers() {
    let env = Env::new("transactions", 2, &[]).await;
    let p = transactional_producer(&env);
    let aurore = env.spawn_aurore(&["--linger", "20ms"]);
    transaction(&p, &env, &[(0, 0)], true);
    transaction(&p, &env, &[(1, 1), (1, 2), (1, 3)], true);
    transaction(&p, &env, &[(0, 4), (0, 5)], false);
    transaction(&p, &env, &[(0, 6)], true);
    let hw = caught_up(&env, &aurore).await;
    // Partition 0: message, commit marker, two aborted messages, abort marker, message, marker.
    assert_eq!(hw, BTreeMap::from([(0, 7), (1, 4)]));
    let committed = |p: i32| (p, "committed".to_owned());
    assert_eq!(stored(&env).await, [committed(0), committed(0), committed(1), committed(1), committed(1)]);

    // After a restart, where only an aborted transaction came since: still past it.
    let mut aurore = aurore;
    aurore.signal("TERM");
    assert_eq!(aurore.wait_exit(Duration::from_secs(30)).await, Some(0));
    let aurore = env.spawn_aurore(&["--linger", "20ms"]);
    transaction(&p, &env, &[(1, 7), (1, 8)], false);
    let hw = caught_up(&env, &aurore).await;
    assert_eq!(hw, BTreeMap::from([(0, 7), (1, 7)]));
    assert_eq!(stored(&env).await.len(), 5, "aborted messages are never stored");
    let m = Metrics::scrape(&aurore).unwrap();
    assert_eq!(m.get("events_dead_lettered_total", &[("reason", "postgres_rejected")]), Some(0.0));
}
