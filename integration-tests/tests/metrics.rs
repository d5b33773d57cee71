//! /metrics/prometheus carries exact values, and the stack's Prometheus scrapes them.

use std::time::Duration;

use integration_tests::{Aurore, Env, Metrics, prometheus_query, wait_until};

/// Messages to produce: (partition, value; `None` a tombstone).
type Messages = Vec<(i32, Option<Vec<u8>>)>;

/// 300 + 200 + 100 valid events of three services (Kafka timestamps: now) and 12 invalid ones.
fn known_mix() -> (Messages, usize) {
    let mut out = Vec::new();
    for (service, n) in [("alpha", 300), ("beta", 200), ("gamma", 100)] {
        for i in 0..n {
            out.push((
                i % 3,
                Some(format!(r#"{{"service":"{service}","event_type":"ping","payload":{{"n":{i}}}}}"#).into_bytes()),
            ));
        }
    }
    for i in 0..6 {
        out.insert(i * 90, (i as i32 % 3, Some(b"{not json".to_vec())));
        out.insert(i * 90 + 45, (i as i32 % 3, Some(br#"{"event_type":"ping"}"#.to_vec())));
    }
    let n = out.len();
    (out, n)
}

const DOCUMENTED: &[&str] = &[
    "buffer_size",
    "buffer_capacity",
    "buffer_utilization_percent",
    "buffer_events_enqueued_total",
    "buffer_events_dropped_total",
    "events_throughput_per_second",
    "events_processed_total",
    "events_dead_lettered_total",
    "worker_batches_processed_total",
    "worker_batch_processing_seconds",
    "worker_batch_size",
    "worker_flush_errors_total",
    "app_health_status",
    "circuit_breaker_state",
    "database_connection_up",
    "business_events_total",
    "business_events_by_service",
    "business_events_last_24h",
    "business_events_last_24h_by_service",
    "kafka_consumer_lag",
    "kafka_consumer_lag_messages",
    "kafka_assigned_partitions",
    "kafka_rebalances_total",
    "event_end_to_end_latency_seconds",
    "event_ingest_latency_seconds",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_exact_values() {
    let env = Env::new("metrics", 3, &[]).await;
    let (mix, n) = known_mix();
    env.produce(&env.producer(&[]), mix).await;
    let aurore = env.spawn_aurore(&["--buffer-capacity", "7777"]);
    env.wait_persisted(n as i64, Duration::from_secs(120)).await;
    // Business gauges refresh every 5 s, lag with the 5 s librdkafka statistics.
    let m = wait_until("business metrics and lag to settle", Duration::from_secs(30), || async {
        let m = Metrics::scrape(&aurore)?;
        // The sum skips partitions whose committed offset librdkafka has not learnt yet: wait
        // for each partition's own lag too.
        let lag_zero = |p: &str| m.get("kafka_consumer_lag", &[("topic", &env.topic), ("partition", p)]) == Some(0.0);
        let settled = m.get("business_events_total", &[]) == Some(600.0)
            && m.get("kafka_consumer_lag_messages", &[]) == Some(0.0)
            && ["0", "1", "2"].into_iter().all(lag_zero);
        settled.then_some(m)
    })
    .await;
    let v = |name: &str, labels: &[(&str, &str)]| m.get(name, labels).unwrap_or_else(|| panic!("{name}{labels:?} missing"));
    assert_eq!(v("events_processed_total", &[]), 600.0);
    assert_eq!(v("events_dead_lettered_total", &[("reason", "invalid_json")]), 6.0);
    assert_eq!(v("events_dead_lettered_total", &[("reason", "missing_field")]), 6.0);
    assert_eq!(v("events_dead_lettered_total", &[("reason", "tombstone")]), 0.0);
    assert_eq!(v("business_events_by_service", &[("service", "alpha")]), 300.0);
    assert_eq!(v("business_events_by_service", &[("service", "beta")]), 200.0);
    assert_eq!(v("business_events_by_service", &[("service", "gamma")]), 100.0);
    assert_eq!(v("business_events_last_24h", &[]), 600.0);
    assert_eq!(v("business_events_last_24h_by_service", &[("service", "alpha")]), 300.0);
    assert_eq!(v("buffer_capacity", &[]), 7777.0);
    assert_eq!(v("buffer_size", &[]), 0.0);
    assert_eq!(v("buffer_events_enqueued_total", &[]), n as f64);
    assert_eq!(v("buffer_events_dropped_total", &[]), 0.0);
    assert_eq!(v("kafka_assigned_partitions", &[]), 3.0);
    assert_eq!(v("kafka_consumer_lag_messages", &[]), 0.0);
    for p in ["0", "1", "2"] {
        assert_eq!(v("kafka_consumer_lag", &[("topic", &env.topic), ("partition", p)]), 0.0);
    }
    assert_eq!(v("app_health_status", &[]), 1.0);
    assert_eq!(v("circuit_breaker_state", &[]), 0.0);
    assert_eq!(v("database_connection_up", &[]), 1.0);
    assert_eq!(v("event_ingest_latency_seconds_count", &[]), 600.0);
    assert_eq!(v("event_end_to_end_latency_seconds_count", &[]), 600.0);
    assert!(v("worker_batches_processed_total", &[]) >= 1.0);
    assert_eq!(v("worker_batch_size_sum", &[]), n as f64, "every event in exactly one committed batch");
    for name in DOCUMENTED {
        let help = m.help(name).unwrap_or_else(|| panic!("{name} has no HELP"));
        assert!(help.len() > 20, "{name}: {help}");
    }
    let (status, body) = aurore.get("/health").unwrap();
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "healthy");
    for key in ["kafka", "database", "circuit_breaker", "buffer", "uptime"] {
        assert!(health.get(key).is_some(), "/health lacks {key}: {body}");
    }
    assert_eq!(aurore.get("/health/ready").unwrap().0, 200);
    assert_eq!(aurore.get("/health/live").unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_labels_beyond_the_limit_collapse_into_other() {
    let env = Env::new("labels", 1, &[]).await;
    let msgs = (0..50).map(|i| (0, Some(format!(r#"{{"service":"s{:02}","event_type":"t"}}"#, i % 10).into_bytes()))).collect();
    env.produce(&env.producer(&[]), msgs).await;
    let aurore = env.spawn_aurore(&["--max-service-labels", "4"]);
    env.wait_persisted(50, Duration::from_secs(60)).await;
    let m = wait_until("business metrics", Duration::from_secs(30), || async {
        let m = Metrics::scrape(&aurore)?;
        (m.get("business_events_total", &[]) == Some(50.0)).then_some(m)
    })
    .await;
    let services: Vec<&str> =
        m.0.samples.iter().filter(|s| s.metric == "business_events_by_service").filter_map(|s| s.labels.get("service")).collect();
    assert_eq!(services.len(), 5, "4 services and other: {services:?}");
    assert_eq!(m.get("business_events_by_service", &[("service", "other")]), Some(30.0));
}

/// The stack's Prometheus scrapes aurore at 127.0.0.1:3000 (prometheus/prometheus-local.yml).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_aurore() {
    let env = Env::new("prometheus", 2, &[]).await;
    let msgs = (0..250)
        .map(|i| (i % 2, Some(format!(r#"{{"service":"p","event_type":"t","payload":{{"i":{i}}}}}"#).into_bytes())))
        .collect();
    env.produce(&env.producer(&[]), msgs).await;
    assert!(std::net::TcpListener::bind("127.0.0.1:3000").is_ok(), "port 3000 is taken: stop what runs there (scripts/run?)");
    let aurore = Aurore::spawn_with(&env, &[], 3000, &env.database_url);
    env.wait_persisted(250, Duration::from_secs(60)).await;
    // One scrape every 15 s: allow a few.
    wait_until("Prometheus to scrape events_processed_total = 250 from aurore", Duration::from_secs(75), || async {
        let up = prometheus_query(r#"up{job="aurore"}"#);
        let processed = prometheus_query(r#"events_processed_total{job="aurore"}"#);
        (up.first().map(|r| r.1) == Some(1.0) && processed.first().map(|r| r.1) == Some(250.0)).then_some(())
    })
    .await;
    drop(aurore);
}
