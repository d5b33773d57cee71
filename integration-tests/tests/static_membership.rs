//! Static membership (`--instance-id`): after `kill -9` and an immediate restart under the same
//! id, the new process stores rows within seconds: at once under the classic protocol (no wait
//! for the dead member's session timeout); under KIP-848 the broker holds the id until that
//! session times out (6 s on the test broker), and aurore joins again until it is released.
//! A second live process under an id in use stops (exit 3, one clear line), and nothing is
//! duplicated.

use std::time::{Duration, Instant};

use integration_tests::{Env, event, wait_until};

/// The classic protocol's session timeout stays at librdkafka's 45 s here: a restart that waited
/// for it would fail the takeover bound.
fn protocol_args(protocol: &str) -> Vec<&'static str> {
    match protocol {
        "consumer" => vec!["--group-protocol", "consumer"],
        _ => vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_the_same_instance_id_takes_over_at_once() {
    takeover("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_the_same_instance_id_takes_over_at_once_kip848() {
    takeover("consumer").await;
}

async fn takeover(protocol: &str) {
    const TOTAL: u64 = 60_000;
    let env = Env::new(&format!("static_{protocol}"), 4, &[]).await;
    let id = format!("{}-0", env.group);
    let mut args = vec!["--instance-id", id.as_str(), "--linger", "50ms"];
    args.extend(protocol_args(protocol));
    let producer = env.producer(&[]);
    let stream = (0..TOTAL).map(|i| ((i % 4) as i32, event("svc", "t", i))).collect();
    let produce = env.produce_stream(&producer, stream, 1_000, Duration::from_millis(100));
    let mut first = env.spawn_aurore(&args);
    env.wait_persisted(10_000, Duration::from_secs(120)).await;
    first.kill9();
    // Whatever the killed process had in flight is rolled back by PostgreSQL once its
    // connections close: count from a settled figure.
    let settled = wait_until("the count to settle after the kill", Duration::from_secs(30), || async {
        let a = env.persisted().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        (env.persisted().await == a).then_some(a)
    })
    .await;
    let restarted = Instant::now();
    let second = env.spawn_aurore(&args);
    wait_until("new rows after the restart", Duration::from_secs(20), || async {
        (env.persisted().await > settled).then_some(())
    })
    .await;
    let took = restarted.elapsed();
    eprintln!(
        "[static_{protocol}] kill -9, restart with --instance-id {id}: new rows stored {} ms after the restart",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(15), "took {took:?}: the session timeout was waited out");
    produce.await.unwrap();
    env.wait_persisted(TOTAL as i64, Duration::from_secs(180)).await;
    assert_eq!(env.assert_exactly_once().await, (TOTAL as i64, 0));
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_process_under_an_instance_id_in_use_stops() {
    fenced("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_process_under_an_instance_id_in_use_stops_kip848() {
    fenced("consumer").await;
}

async fn fenced(protocol: &str) {
    const TOTAL: u64 = 30_000;
    let env = Env::new(&format!("fenced_{protocol}"), 3, &[]).await;
    let id = format!("{}-0", env.group);
    // Not the default 60 s of trying again here.
    let mut args = vec!["--instance-id", id.as_str(), "--instance-id-wait", "5s"];
    args.extend(protocol_args(protocol));
    let producer = env.producer(&[]);
    let stream = (0..TOTAL).map(|i| ((i % 3) as i32, event("svc", "t", i))).collect();
    let produce = env.produce_stream(&producer, stream, 1_000, Duration::from_millis(100));
    let mut first = env.spawn_aurore(&args);
    env.wait_persisted(5_000, Duration::from_secs(120)).await;
    // The first holds the id's lease in PostgreSQL: the second, started while it lives, stops
    // (Kafka cannot tell a live member from one killed a moment ago; PostgreSQL's lease can).
    let mut second = env.spawn_aurore(&args);
    let code = second.wait_exit(Duration::from_secs(60)).await;
    let log = second.log_text();
    assert_eq!(code, Some(3), "{log}");
    let line = log.lines().rfind(|l| l.contains("\"ERROR\"")).unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(line.contains(&format!("--instance-id {id} is in use by another live process")), "{line}");
    assert!(line.contains("\"exit_code\":3"), "{line}");
    assert!(first.child.try_wait().unwrap().is_none(), "the first keeps running");
    produce.await.unwrap();
    env.wait_persisted(TOTAL as i64, Duration::from_secs(180)).await;
    assert_eq!(env.assert_exactly_once().await, (TOTAL as i64, 0));
    first.wait_ready(Duration::from_secs(10)).await;
}
