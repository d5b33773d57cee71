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

/// The probe behind the liveness judgement (`aurore::kafka::client::cluster_answers`): a client
/// of its own, bootstrapped afresh, says whether the cluster answers, since the consumer's own
/// client may have removed every broker it knew. The running broker answers, under both group
/// protocols' settings, for topics of which one exists; not for topics none of which exists (a
/// member subscribed to them is rightly out of its group); a port where nothing listens, and a
/// listener that never speaks Kafka, do not answer, and the probe returns (false) rather than hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_probe_tells_a_live_cluster_from_a_dead_one() {
    use aurore::config::{Cli, Command, RunArgs};
    use aurore::kafka::client::cluster_answers;
    use clap::Parser;

    let env = Env::new("cluster_probe", 1, &[]).await;
    let args = |brokers: &str, extra: &[&str]| -> RunArgs {
        let mut argv =
            vec!["aurore", "run", "--database-url", &env.database_url, "--kafka-brokers", brokers, "--topics", &env.topic];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("run's arguments").command {
            Command::Run(r) => r,
            _ => unreachable!(),
        }
    };
    let probe = |args: &RunArgs, topics: &[&str], within: Duration| {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        tokio::task::block_in_place(|| cluster_answers(args, &topics, within))
    };
    let (within, missing) = (Duration::from_secs(3), format!("{}-missing", env.topic));
    for protocol in ["classic", "consumer"] {
        let live = args(&env.stack.brokers, &fast_group(protocol));
        let long = Duration::from_secs(20);
        assert!(probe(&live, &[&env.topic], long), "the running broker answers the probe ({protocol})");
        assert!(probe(&live, &[&missing, &env.topic], long), "one of the topics exists ({protocol})");
        assert!(!probe(&live, &[&missing], long), "no topic exists: no answer ({protocol})");
    }
    let closed = format!("127.0.0.1:{}", integration_tests::free_port());
    assert!(!probe(&args(&closed, &[]), &[&env.topic], within), "nothing listens at {closed}");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let silent_at = silent.local_addr().unwrap().to_string();
    assert!(!probe(&args(&silent_at, &[]), &[&env.topic], within), "a listener that never speaks Kafka ({silent_at})");
}
